"""A grouped convolution that a SavedModel can carry without XLA."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_attention")
class GroupedConv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` whose grouped form exports without an XLA-compiled function.

    Same arguments, weights and results as `keras.layers.Conv2D`. With `groups > 1` on the
    TensorFlow backend it convolves each group's channels separately and concatenates the
    results. Keras' TensorFlow backend would otherwise run the grouped convolution inside a
    function compiled with XLA (`jit_compile=True`), because TensorFlow's CPU kernel has no
    grouped convolution, and an exported SavedModel keeps that function:
    `tensorflow_model_server` refuses it unless started with
    `--xla_cpu_compilation_enabled=true` (experimental, off by default), and tf2onnx cannot
    convert it. With `groups=1`, or on JAX and PyTorch, this is Conv2D's own computation.
    """

    def convolution_op(self, inputs, kernel):
        if self.groups == 1 or keras.backend.backend() != "tensorflow":
            return super().convolution_op(inputs, kernel)
        channel_axis = -1 if self.data_format == "channels_last" else 1
        group_outputs = [
            ops.conv(
                group_input,
                group_kernel,
                strides=list(self.strides),
                padding=self.padding,
                dilation_rate=self.dilation_rate,
                data_format=self.data_format,
            )
            for group_input, group_kernel in zip(
                ops.split(inputs, self.groups, axis=channel_axis),
                ops.split(kernel, self.groups, axis=-1),
            )
        ]
        return ops.concatenate(group_outputs, axis=channel_axis)
