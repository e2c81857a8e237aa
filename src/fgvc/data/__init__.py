"""Datasets on disk to tensors: format readers (``formats``), the class table, the image index and the
validation split, decoding, transforms (the preprocessing recipes), ``fgvc data check`` and the synthetic set."""
