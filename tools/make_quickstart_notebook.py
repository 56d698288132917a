"""Write notebooks/00_quickstart.ipynb (outputs stripped). Edit the cells here, then rerun."""

import pathlib

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    new_markdown_cell(
        "# Quickstart: CBAM in a small CNN\n\n"
        "A `keras_attention.layers.CBAM` block inside a small convolutional network, trained with "
        "`model.fit` for one epoch on the 5,000-digit MNIST subset that ships with the package "
        "(no download), then the spatial attention map of the block plotted over test digits."
    ),
    new_code_cell(
        "import keras\n"
        "import matplotlib\n"
        "matplotlib.use('Agg')  # headless when executed by the test suite\n"
        "import matplotlib.pyplot as plt\n"
        "\n"
        "import keras_attention\n"
        "from keras_attention.layers import CBAM\n"
        "from zoo.datasets import mnist_subset\n"
        "\n"
        "keras.utils.set_random_seed(0)\n"
        "print('Keras', keras.__version__, 'on', keras.backend.backend())"
    ),
    new_markdown_cell("The fixed split: 4,000 training digits, 1,000 held-out test digits."),
    new_code_cell(
        "x_train, y_train = mnist_subset('train')\n"
        "x_test, y_test = mnist_subset('test')\n"
        "x_train.shape, x_test.shape"
    ),
    new_markdown_cell(
        "CBAM re-weights channels (shared MLP over average- and max-pooled features), then "
        "positions (a 7x7 convolution over the channel-mean and channel-max maps)."
    ),
    new_code_cell(
        "inputs = keras.Input((28, 28, 1))\n"
        "x = keras.layers.Conv2D(32, 3, padding='same', activation='relu')(inputs)\n"
        "x = keras.layers.MaxPooling2D()(x)\n"
        "x = keras.layers.Conv2D(64, 3, padding='same', activation='relu')(x)\n"
        "x = CBAM(reduction_ratio=1 / 8, name='cbam')(x)\n"
        "x = keras.layers.MaxPooling2D()(x)\n"
        "x = keras.layers.Flatten()(x)\n"
        "x = keras.layers.Dropout(0.25)(x)\n"
        "outputs = keras.layers.Dense(10, activation='softmax')(x)\n"
        "model = keras.Model(inputs, outputs)\n"
        "model.compile(optimizer=keras.optimizers.Adam(1e-3),\n"
        "              loss='sparse_categorical_crossentropy', metrics=['accuracy'])\n"
        "model.summary()"
    ),
    new_code_cell(
        "history = model.fit(x_train, y_train, epochs=1, batch_size=32, verbose=2)\n"
        "loss, accuracy = model.evaluate(x_test, y_test, verbose=0)\n"
        "print(f'test accuracy after one epoch: {accuracy:.3f}')\n"
        "assert accuracy > 0.5, 'one epoch should already be far above chance (0.1)'"
    ),
    new_markdown_cell(
        "Every layer of the library returns its attention map with `return_attention=True`; "
        "`keras_attention.attention_map` does that for a layer inside a trained model."
    ),
    new_code_cell(
        "maps = keras_attention.attention_map(model, 'cbam', x_test[:8])\n"
        "fig, axes = plt.subplots(2, 8, figsize=(12, 3.2))\n"
        "for i in range(8):\n"
        "    axes[0, i].imshow(x_test[i, ..., 0], cmap='gray')\n"
        "    axes[1, i].imshow(x_test[i, ..., 0], cmap='gray')\n"
        "    axes[1, i].imshow(maps[i, ..., 0], cmap='magma', alpha=0.6,\n"
        "                      extent=(-0.5, 27.5, 27.5, -0.5))\n"
        "    axes[0, i].set_title(f'label {y_test[i]}')\n"
        "for ax in axes.flat:\n"
        "    ax.axis('off')\n"
        "plt.tight_layout()\n"
        "maps.shape"
    ),
]


def main():
    notebook = new_notebook(cells=CELLS)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "00_quickstart.ipynb"
    nbformat.write(notebook, path)
    print("wrote", path)


if __name__ == "__main__":
    main()
