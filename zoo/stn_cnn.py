"""ST-CNN (Jaderberg et al., NIPS 2015) for rotated, translated and scaled MNIST, and the
plain CNN of about the same size it is compared with.

`stn_cnn`: an affine `keras_attention.layers.SpatialTransformer` whose localisation network
follows the paper's MNIST one (two 5x5 convolutions of 20 filters with max pooling, a
50-unit layer, then the 6 affine parameters, initialised to the identity), resampling the
42x42 input to 28x28, followed by the classifier CNN shared with the baseline.
`mnist_cnn`: the same classifier CNN straight on the input (not registered; the baseline
of tools/train_mnist_models.py).
"""

import keras
from keras import layers

from keras_attention.layers import SpatialTransformer


def classifier_cnn_layers(num_classes, prefix=""):
    """The classifier CNN's layers by name, in order: three 3x3 ReLU convolutions (32, 64,
    64 filters), 2x2 max pooling after the first two, global max pooling and two dense
    layers (64 ReLU units, then `num_classes` float32 logits)."""
    stack = {}
    for i, filters in enumerate((32, 64, 64)):
        stack[f"conv{i + 1}"] = layers.Conv2D(
            filters, 3, padding="same", activation="relu", name=f"{prefix}conv{i + 1}"
        )
        if i < 2:
            stack[f"pool{i + 1}"] = layers.MaxPooling2D(2, name=f"{prefix}pool{i + 1}")
    stack["global_pool"] = layers.GlobalMaxPooling2D(name=f"{prefix}global_pool")
    stack["fc1"] = layers.Dense(64, activation="relu", name=f"{prefix}fc1")
    stack["fc2"] = layers.Dense(num_classes, name=f"{prefix}fc2", dtype="float32")
    return stack


def _classifier_cnn(x, num_classes, prefix=""):
    for layer in classifier_cnn_layers(num_classes, prefix).values():
        x = layer(x)
    return x


def _head(logits, classifier_activation):
    if classifier_activation is None:
        return logits
    return layers.Activation(classifier_activation, name="predictions", dtype="float32")(logits)


def localization_network(input_shape):
    """The paper's MNIST localisation network, ending in the identity affine transform."""
    inputs = keras.Input(input_shape)
    x = layers.MaxPooling2D(2)(inputs)
    x = layers.Conv2D(20, 5, activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(20, 5, activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(50, activation="relu")(x)
    theta = layers.Dense(
        6,
        kernel_initializer="zeros",
        bias_initializer=keras.initializers.Constant([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
    )(x)
    return keras.Model(inputs, theta, name="localization")


def build_stn_cnn(
    input_shape=(42, 42, 1), num_classes=10, output_size=(28, 28), classifier_activation="softmax"
):
    """ST-CNN: affine spatial transformer to `output_size`, then the classifier CNN.

    Args:
        input_shape: `(height, width, channels)`, fixed (the localisation network
            flattens its last feature map).
        num_classes: classifier width.
        output_size: `(height, width)` the transformer resamples to.
        classifier_activation: `"softmax"` or `None` (logits).
    """
    inputs = keras.Input(input_shape, name="image")
    transformer = SpatialTransformer(
        localization=localization_network(input_shape),
        output_size=output_size,
        transform="affine",
        name="spatial_transformer",
    )
    x = transformer(inputs)
    return keras.Model(
        inputs, _head(_classifier_cnn(x, num_classes), classifier_activation), name="stn_cnn"
    )


def build_mnist_cnn(input_shape=(42, 42, 1), num_classes=10, classifier_activation="softmax"):
    """The baseline: the ST-CNN's classifier CNN without the transformer."""
    inputs = keras.Input(input_shape, name="image")
    return keras.Model(
        inputs, _head(_classifier_cnn(inputs, num_classes), classifier_activation), name="mnist_cnn"
    )


def stn_cnn(input_shape, num_classes, **kwargs):
    return build_stn_cnn(input_shape, num_classes, **kwargs)
