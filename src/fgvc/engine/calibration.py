"""Honest confidences: temperature scaling (Guo et al. 2017) and the expected calibration error.

A network trained with cross-entropy is usually over-confident: its softmax says 0.999 where it is right
nine times in ten. Temperature scaling divides every logit by one positive scalar ``T``, fitted after
training on the validation split by minimising the negative log-likelihood of ``softmax(z / T)``
(LBFGS on ``log T`` in float64, so ``T > 0``). Dividing all logits by the same positive number keeps
their order, so top-1 and top-k do not change; only the probabilities do.

The fitted ``T`` is stored in the run's checkpoints (``best.pt`` and ``last.pt``) under
:data:`CALIBRATION_KEY`, with the figures of the fit; a checkpoint without it (an older run, a periodic
``epoch_N.pt``) has ``T = 1``. The expected calibration error (ECE) is Guo et al.'s: confidences (the top
probability) in 15 equal-width bins ``((m-1)/15, m/15]``, and the image-weighted mean of each bin's
``|accuracy - mean confidence|``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["CALIBRATION_KEY", "ECE_BINS", "TEMPERATURE_RANGE", "Calibration", "Reliability", "fit_temperature",
           "calibrate", "scaled_probabilities", "reliability", "expected_calibration_error", "negative_log_likelihood",
           "calibration_metrics", "calibration_of"]

CALIBRATION_KEY = "calibration"  # checkpoint key holding Calibration.to_dict()
ECE_BINS = 15  # Guo et al. 2017
# T is kept within this range: beyond it the validation split says nothing a person could use
# (a few images right by a wide margin pull T towards 0; a model at chance pulls it towards infinity).
TEMPERATURE_RANGE = (0.01, 100.0)


@dataclass(frozen=True)
class Calibration:
    """A fitted temperature and what it did on the images it was fitted on."""

    temperature: float
    images: int
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    note: str = ""  # why T is 1 or at a bound of TEMPERATURE_RANGE; empty for a plain fit

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def describe(self) -> str:
        """One line for the console: T and the NLL and ECE before and after it."""
        line = (f"temperature {self.temperature:.4g} fitted on {self.images} validation images: NLL "
                f"{self.nll_before:.4f} -> {self.nll_after:.4f}, ECE {100 * self.ece_before:.2f}% -> "
                f"{100 * self.ece_after:.2f}% ({ECE_BINS} bins)")
        return f"{line}; {self.note}" if self.note else line


def scaled_probabilities(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``softmax(logits / T)`` in float32 (``T = 1`` gives exactly the plain softmax)."""
    return (logits.float() / temperature).softmax(dim=1)


def negative_log_likelihood(logits: Tensor, labels: Tensor, temperature: float = 1.0) -> float:
    """Mean ``-log softmax(z / T)[y]`` in float64."""
    if not len(labels):
        return float("nan")
    return float(F.cross_entropy(logits.detach().double().cpu() / temperature, labels.cpu()))


def fit_temperature(logits: Tensor, labels: Tensor, max_iter: int = 100) -> float:
    """The ``T > 0`` minimising the NLL of ``softmax(logits / T)`` on ``labels``: LBFGS on ``log T``
    from ``T = 1``, in float64, clipped to :data:`TEMPERATURE_RANGE`.

    The NLL is convex in ``1/T``, so it has one minimum in ``log T`` and the line search finds it. When
    every prediction is right the NLL keeps falling as ``T -> 0`` and the fit stops wherever its gradient
    vanishes; :func:`calibrate` keeps ``T = 1`` then."""
    z = logits.detach().double().cpu()
    y = labels.cpu()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, tolerance_grad=1e-12,
                                  tolerance_change=1e-15, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimiser.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    optimiser.step(closure)
    value = float(log_t.detach())
    low, high = TEMPERATURE_RANGE
    if not math.isfinite(value):  # ran off to -inf: only right answers with growing margins
        return low
    return min(max(math.exp(value), low), high)


@dataclass(frozen=True)
class Reliability:
    """A reliability diagram's data: per confidence bin its image count, mean confidence and accuracy
    (None for an empty bin), and the ECE they give."""

    edges: tuple[float, ...]  # bins + 1 boundaries, 0 to 1; bin m is (edges[m], edges[m + 1]]
    counts: tuple[int, ...]
    confidence: tuple[float | None, ...]
    accuracy: tuple[float | None, ...]
    ece: float
    images: int


def reliability(probabilities: Tensor, labels: Tensor, bins: int = ECE_BINS) -> Reliability:
    """Guo et al.'s bins of the top probability, equal width, right-closed ``((m-1)/M, m/M]``."""
    p = probabilities.detach().double().cpu()
    y = labels.cpu()
    confidence, predicted = p.max(dim=1)
    correct = (predicted == y).double()
    edges = torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64)
    index = torch.bucketize(confidence, edges[1:-1], right=False)  # (e[m], e[m+1]] -> m
    counts = torch.bincount(index, minlength=bins)
    conf_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, confidence)
    right_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, correct)
    n = len(y)
    gaps = (right_sum - conf_sum).abs()  # |B| * |acc(B) - conf(B)|
    ece = float(gaps.sum() / n) if n else float("nan")
    mean = [(float(c / k), float(r / k)) if k else (None, None)
            for c, r, k in zip(conf_sum, right_sum, counts.tolist(), strict=True)]
    return Reliability(tuple(edges.tolist()), tuple(counts.tolist()), tuple(m[0] for m in mean),
                       tuple(m[1] for m in mean), ece, n)


def expected_calibration_error(probabilities: Tensor, labels: Tensor, bins: int = ECE_BINS) -> float:
    """ECE (Guo et al. 2017): ``sum_m |B_m| / n * |acc(B_m) - conf(B_m)|`` over equal-width bins."""
    return reliability(probabilities, labels, bins).ece


def calibrate(logits: Tensor, labels: Tensor) -> Calibration:
    """Fit ``T`` on labelled ``logits`` and measure NLL and ECE before (``T = 1``) and after."""
    keep = labels >= 0
    z, y = logits[keep].detach().double().cpu(), labels[keep].cpu()
    n = len(y)
    note = ""
    if n == 0:
        temperature, note = 1.0, "no labelled validation images: the temperature stays 1"
    elif bool((z.argmax(dim=1) == y).all()):
        # the likelihood then keeps growing as T -> 0: the split cannot tell how sure the model should be
        temperature, note = 1.0, (f"all {n} validation images are right, so the fit would only sharpen "
                                  "the probabilities without evidence; the temperature stays 1")
    else:
        temperature = fit_temperature(z, y)
        if temperature in TEMPERATURE_RANGE:
            note = f"at the end of the allowed range {TEMPERATURE_RANGE}"
    return Calibration(
        temperature=temperature, images=n,
        nll_before=negative_log_likelihood(z, y), nll_after=negative_log_likelihood(z, y, temperature),
        ece_before=expected_calibration_error(scaled_probabilities(z), y) if n else float("nan"),
        ece_after=expected_calibration_error(scaled_probabilities(z, temperature), y) if n else float("nan"),
        note=note)


def calibration_metrics(probabilities: Tensor, uncalibrated: Tensor, labels: Tensor) -> dict[str, float]:
    """ECE and NLL of the probabilities shown and of the model's own (``T = 1``), over labelled rows."""
    keep = labels >= 0
    y = labels[keep].cpu()
    if not len(y):
        return {}

    def nll(p: Tensor) -> float:  # probabilities, not logits: an ensemble's are averages
        return float(-p[keep].double().cpu().gather(1, y[:, None]).clamp_min(1e-300).log().mean())

    return {"ece": expected_calibration_error(probabilities[keep], y),
            "ece_uncalibrated": expected_calibration_error(uncalibrated[keep], y),
            "nll": nll(probabilities), "nll_uncalibrated": nll(uncalibrated)}


def calibration_of(checkpoint: dict[str, Any] | None) -> Calibration | None:
    """The calibration a checkpoint carries; None for one written before it was fitted (then T = 1)."""
    data = (checkpoint or {}).get(CALIBRATION_KEY)
    return Calibration.from_dict(data) if data else None
