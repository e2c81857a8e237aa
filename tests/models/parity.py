"""What every parity test against the authors' code does: read the golden tensors their code produced, carry their
state dict into fgvc's names through the method's documented key mapping, rebuild the inputs, compare."""

from __future__ import annotations

from pathlib import Path

import torch

from fgvc.models import model_spec

GOLDEN = Path(__file__).parent / "golden"
# float64 end to end: what is left is the order of summation (a few ulps of the largest value)
RTOL, ATOL = 1e-10, 1e-12


def load_golden(name: str) -> dict:
    """``tests/models/golden/<name>.pt``: tensors and plain data only (``weights_only``)."""
    return torch.load(GOLDEN / f"{name}.pt", map_location="cpu", weights_only=True)


def renamed(method: str, state: dict[str, torch.Tensor], *, dropped_ok: bool = False) -> dict[str, torch.Tensor]:
    """The authors' ``state`` in fgvc's names (``ModelSpec.authors_layout.rename``): no two keys onto one, and a
    key the mapping drops only where the method documents one (``dropped_ok``)."""
    layout = model_spec(method).authors_layout
    assert layout is not None
    out = {}
    for key, value in state.items():
        new = layout.rename(key)
        if new is None:
            assert dropped_ok, f"{method} drops the authors' {key}"
            continue
        assert new not in out, f"two of the authors' keys map to {new}"
        out[new] = value
    return out


def golden_inputs(golden: dict) -> torch.Tensor:
    """The uint8 images normalised with the statistics stored beside them, in float64."""
    mean, std = golden["mean"].view(1, 3, 1, 1), golden["std"].view(1, 3, 1, 1)
    return (golden["images"].double() / 255 - mean) / std


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str, *, rtol: float = RTOL,
                 atol: float = ATOL) -> None:
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")
