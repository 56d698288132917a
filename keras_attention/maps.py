"""Read any layer's attention map out of a model."""

import keras
import numpy as np


def attention_map(model, layer, inputs, batch_size=32):
    """Run `model` on `inputs` up to `layer` and return that layer's attention map.

    Every layer of this library takes a `return_attention` call argument that makes it return
    `(outputs, attention)`. This helper feeds the layer the tensor that reaches it inside
    `model`, calling it that way, so the map comes from the trained weights and the model is
    left unchanged.

    Args:
        model: a functional or Sequential Keras model in which `layer` is called once.
        layer: the layer object or its name.
        inputs: a batch of model inputs (numpy arrays or tensors).
        batch_size: how many samples go through at a time.

    Returns:
        The attention map as a float32 numpy array (its shape is documented by each layer's
        `compute_attention_shape`).
    """
    if isinstance(layer, str):
        layer = model.get_layer(layer)
    try:
        layer_input = layer.input
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"`layer` {layer.name!r} must be called exactly once inside a built functional or "
            f"Sequential model: {error}"
        ) from error
    # The layer is called eagerly rather than wired into a second functional model: Keras'
    # graph check (keras.src.ops.function) assumes every call of a layer returns the
    # structure of its first call, which `return_attention=True` changes.
    features = keras.Model(model.input, layer_input)
    maps = []
    for start in range(0, len(inputs), batch_size):
        batch = features(inputs[start : start + batch_size], training=False)
        _, attention = layer(batch, training=False, return_attention=True)
        maps.append(keras.ops.convert_to_numpy(keras.ops.cast(attention, "float32")))
    return np.concatenate(maps, axis=0)
