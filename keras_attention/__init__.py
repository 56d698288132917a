"""keras_attention: visual attention mechanisms as Keras 3 layers (keras.ops only)."""

from keras_attention import layers
from keras_attention.factory import create_attention, list_attention
from keras_attention.maps import attention_map

__version__ = "0.1.0"

__all__ = ["layers", "create_attention", "list_attention", "attention_map", "__version__"]
