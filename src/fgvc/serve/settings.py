"""How the service batches and what it accepts (``fgvc serve`` flags); importable without FastAPI."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ServeSettings"]


@dataclass(frozen=True)
class ServeSettings:
    max_batch: int = 16  # images per forward pass; 1 turns dynamic batching off
    batch_window_ms: float = 5.0  # how long the first image of a batch waits for others
    max_upload_bytes: int = 10 * 2**20  # request body limit (413 beyond)
    max_images: int = 32  # per request
    top_k: int = 5
    calibrate: bool = True  # probabilities at the run's temperature (False: --no-calibration, T = 1)
