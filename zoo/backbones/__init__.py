"""Backbone families; importing this package registers every zoo model."""

from zoo import ram, stn_cnn  # noqa: F401  (complete models, kind="model")
from zoo.backbones import byob, residual_attention, resnet, san  # noqa: F401
