"""Public attention layers (`keras_attention.layers.<Name>`)."""

from keras_attention.layers.channel import SqueezeExcite

__all__ = [
    "SqueezeExcite",
]
