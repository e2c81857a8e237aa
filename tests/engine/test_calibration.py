"""Temperature scaling and the expected calibration error, checked against values computed by hand."""

import math

import pytest
import torch

from fgvc.engine.calibration import (
    TEMPERATURE_RANGE,
    Calibration,
    calibrate,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability,
    scaled_probabilities,
)


def _two_class(confidences: list[float], predicted: list[int]) -> torch.Tensor:
    """Probabilities of two classes whose top class is ``predicted`` with ``confidences``."""
    rows = [[c, 1 - c] if k == 0 else [1 - c, c] for c, k in zip(confidences, predicted, strict=True)]
    return torch.tensor(rows, dtype=torch.float64)


def test_ece_of_a_hand_made_set_uses_fifteen_right_closed_bins():
    # top probabilities 0.90 (right), 0.91 (wrong), 0.95 (wrong), 0.62 (right), 0.70 (right); bins of width 1/15:
    # (13/15, 14/15] = (0.8667, 0.9333] holds 0.90 and 0.91: accuracy 1/2, confidence 0.905 -> 2/5 * 0.405 = 0.162
    # (14/15, 1] holds 0.95: accuracy 0 -> 1/5 * 0.95 = 0.19
    # (9/15, 10/15] = (0.6, 0.6667] holds 0.62: 1/5 * 0.38 = 0.076; (10/15, 11/15] holds 0.70: 1/5 * 0.30 = 0.06
    probabilities = _two_class([0.90, 0.91, 0.95, 0.62, 0.70], [0, 0, 1, 1, 0])
    labels = torch.tensor([0, 1, 0, 1, 0])
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.162 + 0.19 + 0.076 + 0.06, abs=1e-12)
    bins = reliability(probabilities, labels)
    assert len(bins.counts) == 15 and sum(bins.counts) == 5 == bins.images
    assert [bins.counts[i] for i in (9, 10, 13, 14)] == [1, 1, 2, 1]
    assert bins.confidence[13] == pytest.approx(0.905) and bins.accuracy[13] == 0.5
    assert bins.accuracy[0] is None and bins.confidence[0] is None  # an empty bin
    assert bins.edges[0] == 0.0 and bins.edges[-1] == 1.0 and bins.edges[1] == pytest.approx(1 / 15)


def test_a_perfectly_calibrated_set_has_zero_ece():
    # 0.75 confident four times, right three times: |0.75 - 0.75| = 0
    probabilities = _two_class([0.75] * 4, [0, 0, 0, 0])
    assert expected_calibration_error(probabilities, torch.tensor([0, 0, 0, 1])) == pytest.approx(0.0, abs=1e-15)


def test_fitted_temperature_matches_the_analytic_optimum():
    # Two classes, logits (a, 0) for every image, k of n right: NLL(T) = -(k/n) log s(a/T) - (1 - k/n) log(1 - s(a/T))
    # with s the logistic function, minimal where s(a/T) = k/n, i.e. T = a / log(k / (n - k)).
    a, k, n = 4.0, 3, 4
    logits = torch.tensor([[a, 0.0]] * n)
    labels = torch.tensor([0] * k + [1] * (n - k))
    assert fit_temperature(logits, labels) == pytest.approx(a / math.log(k / (n - k)), rel=1e-6)  # 3.6410...


def test_fitted_temperature_matches_a_fine_grid_search_and_lowers_the_nll():
    generator = torch.Generator().manual_seed(0)
    logits = 3.0 * torch.randn(400, 10, generator=generator, dtype=torch.float64)
    labels = torch.multinomial((logits / 2.5).softmax(dim=1), 1, generator=generator).squeeze(1)  # over-confident x2.5
    fitted = fit_temperature(logits, labels)
    grid = torch.exp(torch.linspace(math.log(0.5), math.log(10.0), 30001, dtype=torch.float64))  # steps of 1e-4 in log

    def argmin(ts: torch.Tensor) -> int:
        return int(torch.tensor([negative_log_likelihood(logits, labels, float(t)) for t in ts],
                                dtype=torch.float64).argmin())

    coarse = argmin(grid[::100]) * 100  # the NLL has one minimum in log T: a coarse pass, then every point near it
    fine = grid[max(coarse - 100, 0):coarse + 101]
    best = float(fine[argmin(fine)])
    assert fitted == pytest.approx(best, rel=1.1e-4)  # within one grid step
    assert 1.5 < fitted < 4.0
    assert negative_log_likelihood(logits, labels, fitted) <= negative_log_likelihood(logits, labels)


def test_calibrate_lowers_nll_and_keeps_every_top1():
    generator = torch.Generator().manual_seed(1)
    logits = 6.0 * torch.randn(300, 5, generator=generator)
    labels = torch.multinomial((logits / 4).softmax(dim=1), 1, generator=generator).squeeze(1)
    result = calibrate(logits, labels)
    assert result.temperature > 1 and result.note == ""
    assert result.nll_after <= result.nll_before
    assert result.ece_after < result.ece_before
    assert result.ece_before == pytest.approx(expected_calibration_error(logits.softmax(dim=1), labels))
    assert result.ece_after == pytest.approx(
        expected_calibration_error(scaled_probabilities(logits, result.temperature), labels), abs=1e-6)
    for t in (result.temperature, 0.5, 30.0):  # any positive T: the same argmax, the same order
        scaled = scaled_probabilities(logits, t)
        assert torch.equal(scaled.argmax(dim=1), logits.argmax(dim=1))
        assert torch.equal(scaled.topk(3, dim=1).indices, logits.topk(3, dim=1).indices)
    assert torch.equal(scaled_probabilities(logits), logits.softmax(dim=1))  # T = 1 is the plain softmax, bit for bit
    assert Calibration.from_dict(result.to_dict()) == result


def test_without_mistakes_or_labels_the_temperature_stays_one():
    logits = torch.tensor([[3.0, 0.0], [0.0, 2.0]])
    right = calibrate(logits, torch.tensor([0, 1]))
    assert right.temperature == 1.0 and "all 2 validation images are right" in right.note
    none = calibrate(logits, torch.tensor([-1, -1]))
    assert none.temperature == 1.0 and none.images == 0 and "no labelled" in none.note
    assert TEMPERATURE_RANGE[0] <= fit_temperature(logits, torch.tensor([0, 1])) < 0.1  # the fit alone runs to T -> 0
