"""Tensor and geometry helpers with no state of their own: box arithmetic (inclusive pixel boxes, IoU, scaling
between an image and a model input), shared by models, engine, pictures and the model service."""
