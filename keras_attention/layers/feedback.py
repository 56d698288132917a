"""dasNet's feedback channel gate (Stollenga et al., NIPS 2014): per-filter multipliers for
the next pass of a network, computed from what the filters did in the previous pass."""

import math

import keras
from keras import layers, ops

from keras_attention.layers import _utils as U
from keras_attention.layers.base import AttentionLayer
from keras_attention.layers.spatial_transformer import (
    check_vector_input,
    multi_input_spec,
    split_inputs,
)

register = keras.saving.register_keras_serializable(package="keras_attention")


@register
class FeedbackChannelGate(AttentionLayer):
    """dasNet's feedback gate (Stollenga et al., NIPS 2014): scales each filter of a feature
    map by a multiplier that a policy computes from an observation of the previous pass.

    In dasNet a trained CNN runs `T` times on the same image; after pass `t` an observation
    `o_t` (here: any `(batch, D)` vector, typically the spatial means of the gated layers'
    feature maps) goes through the policy, and the resulting gates multiply the filters'
    outputs in pass `t + 1`. The policy here is linear followed by a bounded positive
    squashing:

        gate = max_gate * sigmoid(o @ kernel + bias)

    with the kernel initialised to zeros and the bias to `-log(max_gate - 1)`, so a fresh
    layer gives `gate = 1` for every observation: the identity, which leaves the trained
    CNN's predictions unchanged until the policy learns. dasNet trains the policy alone with
    separable natural evolution strategies (`zoo.dasnet.snes_maximize`); the layer is also
    differentiable, so gradient training works as well.

    Args:
        max_gate: upper bound of the multipliers (> 1; default 2, so gates lie in (0, 2) and
            the neutral bias is 0).
        kernel_initializer: initializer of the policy's kernel (`"zeros"`: identity gates).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `[features, observation]`: a `(batch, height, width, channels)` feature map
            and a `(batch, D)` observation of the previous pass.
        training: unused; accepted like every layer here.
        return_attention: if `True`, also return the gates.

    Returns:
        The gated feature map (same shape and compute dtype as `features`); with
        `return_attention=True`, a tuple `(outputs, gates)` with gates of shape
        `(batch, 1, 1, channels)`.
    """

    def __init__(self, max_gate=2.0, kernel_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        U.check_positive_number("max_gate", max_gate)
        if not max_gate > 1:
            raise ValueError(
                f"`max_gate` must be greater than 1 (the gates start at 1), got "
                f"max_gate={max_gate!r}."
            )
        self.max_gate = max_gate
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    @property
    def neutral_bias(self):
        """The policy bias that makes every gate 1 when the kernel is zero."""
        return -math.log(self.max_gate - 1.0)

    def build(self, input_shape):
        features, observation = split_inputs(self, input_shape, ("features", "observation"))
        channels = U.feature_map_channels(self, features)
        check_vector_input(self, "observation", observation)
        if observation[-1] is None:
            raise ValueError(
                f"FeedbackChannelGate needs a known observation size; got "
                f"input_shape={observation}."
            )
        self.policy = layers.Dense(
            channels,
            kernel_initializer=self.kernel_initializer,
            bias_initializer=keras.initializers.Constant(self.neutral_bias),
            name="policy",
            **U.sublayer_kwargs(self),
        )
        self.policy.build(observation)

    def gates(self, observation):
        """The `(batch, 1, 1, channels)` multipliers for an observation, in float32."""
        logits = ops.cast(self.policy(observation), "float32")
        return self.max_gate * ops.sigmoid(logits)[:, None, None, :]

    def call(self, inputs, training=None, return_attention=False):
        features, observation = inputs
        gates = ops.cast(self.gates(observation), self.compute_dtype)
        outputs = features * gates
        return (outputs, gates) if return_attention else outputs

    def compute_output_shape(self, input_shape):
        features, _ = split_inputs(self, input_shape, ("features", "observation"))
        return features

    def compute_attention_shape(self, input_shape):
        features, _ = split_inputs(self, input_shape, ("features", "observation"))
        return (features[0], 1, 1, features[-1])

    def compute_output_spec(self, inputs, training=None, return_attention=False):
        return multi_input_spec(self, inputs, return_attention)

    def get_config(self):
        config = super().get_config()
        config.update(
            max_gate=self.max_gate,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config
