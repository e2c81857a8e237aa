"""Fixtures shared by the data-layer tests."""

import pytest
from PIL import Image


@pytest.fixture
def no_decoding(monkeypatch):
    """Readers only list files; opening an image while reading a layout is a bug."""
    def refuse(*args, **kwargs):
        raise AssertionError("the reader opened an image")
    monkeypatch.setattr(Image, "open", refuse)
