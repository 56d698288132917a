"""The base class of every attention layer: one way to get attention maps, symbolic too."""

import keras


class AttentionLayer(keras.layers.Layer):
    """A Keras layer whose `call(inputs, training=None, return_attention=False)` can also
    return its attention map.

    With `return_attention=True` the layer returns `(outputs, attention)`, eagerly and in
    functional models alike: `compute_output_spec` describes both tensors from
    `compute_output_shape` and `compute_attention_shape`, which each layer documents.
    Subclasses keep the input's shape by default; they override `compute_output_shape`
    otherwise, and always implement `compute_attention_shape`.
    """

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_attention_shape(self, input_shape):
        raise NotImplementedError(f"{type(self).__name__} must define compute_attention_shape")

    def compute_output_spec(self, inputs, training=None, return_attention=False):
        outputs = keras.KerasTensor(
            self.compute_output_shape(inputs.shape), dtype=self.compute_dtype
        )
        if not return_attention:
            return outputs
        attention = keras.KerasTensor(
            self.compute_attention_shape(inputs.shape), dtype=self.compute_dtype
        )
        return outputs, attention
