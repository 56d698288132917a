"""zoo: applications built from keras_attention: data sets, demos, converters (models to come)."""

from zoo import datasets

__all__ = ["datasets"]
