"""Read any layer's attention map out of a model."""

import keras


def attention_map(model, layer, inputs, batch_size=None):
    """Run `model` on `inputs` up to `layer` and return that layer's attention map.

    Every layer of this library takes a `return_attention` call argument that makes it return
    `(outputs, attention)`; this helper calls the layer that way on the tensor that reaches it
    inside `model`, so the map comes from the trained weights without changing the model.

    Args:
        model: a functional or Sequential Keras model that calls `layer` once.
        layer: the layer object or its name.
        inputs: a batch of model inputs (numpy arrays or tensors).
        batch_size: forwarded to `predict`.

    Returns:
        The attention map as a numpy array (its shape is documented by each layer).
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
    _, attention = layer(layer_input, return_attention=True)
    probe = keras.Model(model.inputs, attention)
    return probe.predict(inputs, batch_size=batch_size, verbose=0)
