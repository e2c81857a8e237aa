"""fgvc: fine-grained visual classification, from a folder of images to a scored submission."""

__version__ = "0.1.0"
