"""The main job until serving lands: train a small CBAM CNN on the offline MNIST subset.

One epoch of `model.fit` on the 4,000 training digits, accuracy on the 1,000 held-out ones,
and a PNG of the spatial attention map of the last CBAM block over test digits.
"""

import os
import pathlib
import time

import keras
import numpy as np
from PIL import Image

from keras_attention import attention_map
from keras_attention.layers import CBAM
from zoo.datasets import mnist_subset


def build_cbam_cnn(num_classes=10, input_shape=(28, 28, 1)):
    """A small CNN with a CBAM block after each convolution stage."""
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = CBAM(reduction_ratio=1 / 8, name="cbam1")(x)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2")(x)
    x = CBAM(reduction_ratio=1 / 8, name="cbam2")(x)
    x = keras.layers.MaxPooling2D(name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(0.25, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="cbam_cnn")


def colorize(values):
    """Map values in [0, 1] to RGB with a small blue-to-red palette (no matplotlib needed)."""
    values = np.clip(values, 0.0, 1.0)[..., None]
    low, mid, high = np.array([48, 18, 59]), np.array([40, 188, 156]), np.array([250, 60, 20])
    rgb = np.where(
        values < 0.5, low + (mid - low) * values * 2, mid + (high - mid) * (values - 0.5) * 2
    )
    return rgb.astype(np.uint8)


def attention_png(images, maps, path, scale=4):
    """Two rows of tiles: the digits, then their attention maps blended over the digits."""
    tiles = []
    for image, amap in zip(images, maps):
        size = image.shape[0] * scale
        gray = Image.fromarray((image[..., 0] * 255).astype(np.uint8)).resize((size, size))
        amap = (amap[..., 0] - amap.min()) / max(float(np.ptp(amap)), 1e-8)
        heat = Image.fromarray(colorize(amap)).resize((size, size), Image.BILINEAR)
        blend = Image.blend(gray.convert("RGB"), heat, alpha=0.55)
        tiles.append((gray.convert("RGB"), blend))
    size = tiles[0][0].size[0]
    sheet = Image.new("RGB", (size * len(tiles), size * 2), "white")
    for i, (digit, blend) in enumerate(tiles):
        sheet.paste(digit, (i * size, 0))
        sheet.paste(blend, (i * size, size))
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    sheet.save(tmp, format="PNG")
    os.replace(tmp, path)  # never leave a half-written PNG behind
    return path


def run(output_dir="outputs", epochs=1, batch_size=32, seed=0, num_examples=8, verbose=2):
    """Train, evaluate, plot. Returns a dict with accuracy, PNG path and timings."""
    keras.utils.set_random_seed(seed)
    x_train, y_train = mnist_subset("train")
    x_test, y_test = mnist_subset("test")
    model = build_cbam_cnn()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=verbose)
    train_seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    maps = attention_map(model, "cbam2", x_test[:num_examples])
    png = attention_png(
        x_test[:num_examples], maps, pathlib.Path(output_dir) / "cbam_attention.png"
    )
    return {
        "accuracy": float(accuracy),
        "png": png,
        "train_seconds": train_seconds,
        "train_size": len(y_train),
        "test_size": len(y_test),
        "backend": keras.backend.backend(),
        "model": model,
    }
