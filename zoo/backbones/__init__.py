"""Backbone families; importing this package registers every zoo model."""
from zoo.backbones import residual_attention  # noqa: E402,F401
from zoo.backbones import san  # noqa: E402,F401
from zoo.backbones import byob  # noqa: F401
from zoo.backbones import resnet  # noqa: F401

from zoo import ram, stn_cnn  # noqa: F401,E402  (complete models, kind="model")
