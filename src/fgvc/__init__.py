"""fgvc: fine-grained visual classification, from a folder of images to a scored submission."""

__version__ = "0.1.0"

__all__ = ["train", "resume"]


def __getattr__(name: str):
    """``fgvc.train`` and ``fgvc.resume`` (the library form of ``fgvc train``), imported on first use so that
    ``import fgvc`` stays light (no torch)."""
    if name in ("train", "resume"):
        from .engine import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'fgvc' has no attribute {name!r}")
