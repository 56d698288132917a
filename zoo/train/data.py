"""Training data for `zoo.train.fit`: the offline MNIST data, the tasks derived from it, a
user's image folder, or arrays; and input pipelines that keep the accelerator busy.

Every batch is a pure function of `(seed, global step)`: the example order of epoch `e` is
`numpy.random.default_rng([seed, e]).permutation(N)` and the augmentation draws of step `s`
(crop offsets, flips) come from `default_rng([seed, 1, s])`. A run resumed at step `s`
therefore sees exactly the batches an uninterrupted run sees from step `s` on, on every
backend (the resume test relies on it).

Pipelines (`Pipeline.stream(start_step, num_steps)`):
- TensorFlow backend: `tf.data`: gather (or read and decode files) and augment in parallel
  `map`s, then `prefetch`.
- JAX backend: a background thread gathers the next batches on the host, puts them on the
  device and runs the augmentation there (one jitted function), a few batches ahead of the
  training step. Under a `keras.distribution` the host augments and Keras shards the batch.
- PyTorch backend: the same thread, numpy augmentation.
"""

import dataclasses
import functools
import os
import pathlib
import queue
import threading

import keras
import numpy as np

from zoo import datasets

OFFLINE = ("mnist", "translated_mnist", "cluttered_mnist", "rts_mnist")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


@dataclasses.dataclass
class ImageData:
    """A labelled image collection, in memory (`images`) or as files (`files`).

    Attributes:
        name: where it came from.
        labels: int64 `(N,)`.
        num_classes: number of classes.
        image_size: `(height, width)` of the images the pipeline produces.
        channels: 1 or 3.
        images: `(N, H, W, C)` array (uint8 in [0, 255] or float in [0, value_range]), or None.
        files: list of image paths (decoded and resized to `image_size` on the fly), or None.
        value_range: 255 or 1: what a white pixel is.
        flip: whether horizontal flips keep the label (not for digits).
        class_names: names of the classes, if known.
    """

    name: str
    labels: np.ndarray
    num_classes: int
    image_size: tuple
    channels: int
    images: np.ndarray = None
    files: list = None
    value_range: float = 255.0
    flip: bool = True
    class_names: list = None

    def __len__(self):
        return len(self.labels)


def _resize_array(images, image_size):
    if tuple(images.shape[1:3]) == tuple(image_size):
        return images
    out = []
    for start in range(0, len(images), 512):
        chunk = keras.ops.image.resize(
            images[start : start + 512].astype("float32"), image_size, interpolation="bilinear"
        )
        out.append(keras.ops.convert_to_numpy(chunk))
    return np.concatenate(out).astype("float32")


def _offline(name, split, seed):
    if name == "mnist":
        images, labels = datasets.mnist_subset(split)
        return images, labels
    from zoo import tasks

    images, labels, _ = tasks.TASKS[name](split=split, seed=seed)
    return images, labels


def _folder_files(directory, class_names=None):
    directory = pathlib.Path(directory)
    if class_names is None:
        class_names = sorted(p.name for p in directory.iterdir() if p.is_dir())
    if not class_names:
        raise ValueError(
            f"{directory} has no class subfolders: expected the "
            "keras.utils.image_dataset_from_directory layout (one folder per class)"
        )
    files, labels = [], []
    for index, name in enumerate(class_names):
        folder = directory / name
        found = (
            sorted(
                str(p)
                for p in folder.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if folder.is_dir()
            else []
        )
        files += found
        labels += [index] * len(found)
    return files, np.asarray(labels, np.int64), class_names


def _folder(path, split, image_size, channels, validation_fraction=0.1):
    """A folder in `image_dataset_from_directory` layout. With `train/` and `test/` (or
    `val/`, `validation/`) subfolders those are the splits; otherwise a fixed 10% of each
    class (every 10th file, sorted) is held out as the test split."""
    path = pathlib.Path(path)
    subsets = {"train": ["train"], "test": ["test", "val", "validation"]}
    named = {
        s: next((path / n for n in names if (path / n).is_dir()), None)
        for s, names in subsets.items()
    }
    if named["train"] is not None and named["test"] is not None:
        _, _, class_names = _folder_files(named["train"])
        files, labels, _ = _folder_files(
            named[split] if split != "all" else named["train"], class_names
        )
    else:
        files, labels, class_names = _folder_files(path)
        keep = np.ones(len(files), bool)
        if split != "all":
            held = np.zeros(len(files), bool)
            for c in range(len(class_names)):
                members = np.flatnonzero(labels == c)
                held[members[:: max(int(round(1 / validation_fraction)), 2)]] = True
            keep = held if split == "test" else ~held
        files = [f for f, k in zip(files, keep) if k]
        labels = labels[keep]
    if not files:
        raise ValueError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}) under {path} for split {split!r}"
        )
    return ImageData(
        name=str(path),
        labels=labels,
        num_classes=len(class_names),
        image_size=tuple(image_size),
        channels=channels,
        files=files,
        value_range=255.0,
        flip=True,
        class_names=list(class_names),
    )


def load(source, split="train", image_size=None, channels=None, seed=0):
    """Load training data.

    Args:
        source: `"mnist"` (the shipped 5,000-digit subset), `"translated_mnist"`,
            `"cluttered_mnist"`, `"rts_mnist"` (zoo.tasks), a folder of images in
            `keras.utils.image_dataset_from_directory` layout (one subfolder per class;
            optional `train/` and `test/` splits), an `(images, labels)` tuple of arrays,
            or an `ImageData`.
        split: `"train"`, `"test"` or `"all"`.
        image_size: `(height, width)` or an int; default: the data's own size (folders: 224).
        channels: 1 or 3; default: the data's own (folders: 3). Grey images are repeated to
            3 channels when 3 are asked for.
        seed: seed of the randomly generated tasks (placement of the digits).

    Returns:
        An `ImageData`.
    """
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    if isinstance(source, ImageData):
        return source
    if isinstance(source, tuple):
        images, labels = source
        images, labels = np.asarray(images), np.asarray(labels).astype(np.int64)
        value_range = 255.0 if images.dtype == np.uint8 or images.max() > 1.0 else 1.0
        name, flip = "arrays", True
        num_classes = int(labels.max()) + 1
    elif source in OFFLINE:
        images, labels = _offline(source, split, seed)
        value_range, name, flip, num_classes = 1.0, source, False, 10
    elif isinstance(source, (str, os.PathLike)) and pathlib.Path(source).is_dir():
        return _folder(source, split, image_size or (224, 224), channels or 3)
    else:
        raise ValueError(
            f"unknown data {source!r}: expected one of {', '.join(OFFLINE)}, a folder of "
            "images (one subfolder per class), or an (images, labels) tuple"
        )
    if images.ndim == 3:
        images = images[..., None]
    if image_size is not None:
        images = _resize_array(images, image_size)
    if channels is not None and channels != images.shape[-1]:
        if images.shape[-1] == 1 and channels == 3:
            images = np.repeat(images, 3, axis=-1)
        else:
            raise ValueError(f"cannot turn {images.shape[-1]}-channel images into {channels}")
    return ImageData(
        name=name,
        labels=labels,
        num_classes=num_classes,
        image_size=tuple(images.shape[1:3]),
        channels=images.shape[-1],
        images=images,
        value_range=value_range,
        flip=flip,
    )


def augment(xp, images, offsets, flips, pad, mean, std, value_range):
    """Random crop (reflect-pad by `pad`, crop back at `offsets`), horizontal flip where
    `flips`, then `(x / value_range - mean) / std`. `xp` is numpy or jax.numpy."""
    x = images.astype("float32")
    if pad:
        batch, height, width = x.shape[0], x.shape[1], x.shape[2]
        x = xp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
        rows = offsets[:, 0, None] + xp.arange(height)[None, :]
        cols = offsets[:, 1, None] + xp.arange(width)[None, :]
        x = xp.take_along_axis(x, rows[:, :, None, None], axis=1)
        x = xp.take_along_axis(x, cols[:, None, :, None], axis=2)
        del batch
    x = xp.where(flips[:, None, None, None], x[:, :, ::-1, :], x)
    return (x / value_range - mean) / std


class Pipeline:
    """Batches of `(normalised augmented images, one-hot labels)` for global steps.

    Args:
        data: an `ImageData`.
        batch_size: global batch size (clipped to the number of examples).
        seed: seed of the order and the augmentation.
        crop_padding: random-crop padding as a fraction of the image side (0: none).
        flip: random horizontal flips (only if the data allows them).
        mean, std: per-channel normalisation after scaling to [0, 1].
        augment: False for evaluation (no crops, no flips, file order, all examples).
    """

    def __init__(
        self,
        data,
        batch_size,
        seed=0,
        crop_padding=0.0,
        flip=False,
        mean=(0.0,),
        std=(1.0,),
        training=True,
    ):
        self.data = data
        self.batch_size = int(min(batch_size, len(data)))
        self.seed = int(seed)
        self.training = training
        self.pad = int(round(crop_padding * min(data.image_size))) if training else 0
        self.flip = bool(flip and data.flip and training)
        channels = data.channels
        mean, std = np.asarray(mean, "float32"), np.asarray(std, "float32")
        if mean.size != channels:
            mean, std = (
                np.full(channels, mean.mean(), "float32"),
                np.full(channels, std.mean(), "float32"),
            )
        self.mean, self.std = mean, std
        self.process_shard = None
        if keras.backend.backend() == "jax":
            import jax

            if jax.process_count() > 1:
                self.process_shard = (jax.process_index(), jax.process_count())
        if training:
            self.steps_per_epoch = max(len(data) // self.batch_size, 1)
        else:
            self.steps_per_epoch = -(-len(data) // self.batch_size)

    @functools.lru_cache(maxsize=2)  # noqa: B019  (a pipeline lives as long as its run)
    def _order(self, epoch):
        if not self.training:
            return np.arange(len(self.data))
        return np.random.default_rng([self.seed, int(epoch)]).permutation(len(self.data))

    def plan(self, step):
        """(indices, crop offsets (B, 2), flips (B,)) of global step `step`."""
        step = int(step)
        epoch, within = divmod(step, self.steps_per_epoch)
        start = within * self.batch_size
        index = self._order(epoch)[start : start + self.batch_size]
        rng = np.random.default_rng([self.seed, 1, step])
        offsets = (
            rng.integers(0, 2 * self.pad + 1, size=(len(index), 2))
            if self.pad
            else np.zeros((len(index), 2), np.int64)
        )
        flips = rng.random(len(index)) < 0.5 if self.flip else np.zeros(len(index), bool)
        if self.process_shard is not None:  # JAX multi-process: this process's rows
            rank, count = self.process_shard
            index, offsets, flips = index[rank::count], offsets[rank::count], flips[rank::count]
        return index.astype(np.int64), offsets.astype(np.int32), flips

    def _one_hot(self, labels):
        return np.eye(self.data.num_classes, dtype="float32")[labels]

    # -- numpy (host) --------------------------------------------------------------
    def numpy_batch(self, step):
        index, offsets, flips = self.plan(step)
        if self.data.images is None:
            raise ValueError("file data needs the tf.data pipeline (TensorFlow installed)")
        x = augment(
            np,
            self.data.images[index],
            offsets,
            flips,
            self.pad,
            self.mean,
            self.std,
            self.data.value_range,
        )
        return x.astype("float32"), self._one_hot(self.data.labels[index])

    # -- tf.data -------------------------------------------------------------------
    def tf_dataset(self, start_step, num_steps):
        """A `tf.data.Dataset` of exactly `num_steps` batches from `start_step`."""
        import tensorflow as tf

        data, pad = self.data, self.pad
        height, width = data.image_size
        labels = tf.constant(data.labels)
        if data.images is not None:
            images = tf.constant(data.images)
        else:
            paths = tf.constant(data.files)

        def planned(step):
            index, offsets, flips = tf.numpy_function(
                self.plan, [step], (tf.int64, tf.int32, tf.bool), stateful=False
            )
            return (
                tf.ensure_shape(index, [None]),
                tf.ensure_shape(offsets, [None, 2]),
                tf.ensure_shape(flips, [None]),
            )

        def decode(path):
            raw = tf.io.read_file(path)
            image = tf.io.decode_image(raw, channels=data.channels, expand_animations=False)
            image = tf.image.resize(tf.cast(image, tf.float32), (height, width))
            return tf.ensure_shape(image, (height, width, data.channels))

        def load(index, offsets, flips):
            if data.images is not None:
                x = tf.gather(images, index)
            else:
                x = tf.map_fn(
                    decode,
                    tf.gather(paths, index),
                    fn_output_signature=tf.TensorSpec((height, width, data.channels), tf.float32),
                )
            x = tf.cast(x, tf.float32)
            if pad:
                x = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
                rows = offsets[:, 0, None] + tf.range(height)[None, :]
                cols = offsets[:, 1, None] + tf.range(width)[None, :]
                x = tf.gather(x, rows, axis=1, batch_dims=1)
                x = tf.gather(x, cols, axis=2, batch_dims=1)
            x = tf.where(flips[:, None, None, None], tf.reverse(x, [2]), x)
            x = (x / data.value_range - self.mean) / self.std
            y = tf.one_hot(tf.gather(labels, index), data.num_classes)
            return x, y

        options = tf.data.Options()
        options.deterministic = True
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        ds = tf.data.Dataset.range(start_step, start_step + num_steps)
        ds = ds.map(planned).map(load, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE).with_options(options)

    # -- JAX / host thread ---------------------------------------------------------
    def _jax_augment(self):
        import jax
        import jax.numpy as jnp

        pad, mean, std, value_range = self.pad, self.mean, self.std, self.data.value_range

        @jax.jit
        def run(images, offsets, flips):
            return augment(jnp, images, offsets, flips, pad, mean, std, value_range)

        return run

    def host_iterator(self, start_step, num_steps, prefetch=3):
        """Batches prepared `prefetch` steps ahead by a background thread; on JAX (without
        a distribution) placed on the device and augmented there."""
        backend = keras.backend.backend()
        on_device = backend == "jax" and keras.distribution.distribution() is None
        if self.data.images is None:
            tf_iter = self.tf_dataset(start_step, num_steps).as_numpy_iterator()
            produce = lambda step: next(tf_iter)  # noqa: E731
        elif on_device:
            import jax

            run = self._jax_augment()

            def produce(step):
                index, offsets, flips = self.plan(step)
                images = jax.device_put(self.data.images[index])
                x = run(images, jax.device_put(offsets), jax.device_put(flips))
                return x, jax.device_put(self._one_hot(self.data.labels[index]))
        else:
            produce = self.numpy_batch
        return _Prefetcher(produce, range(start_step, start_step + num_steps), prefetch)

    def stream(self, start_step, num_steps):
        """What `fit` gets: a tf.data.Dataset on TensorFlow, else a prefetching iterator."""
        if keras.backend.backend() == "tensorflow":
            return self.tf_dataset(start_step, num_steps)
        prefetcher = self.host_iterator(start_step, num_steps)
        return (batch for batch in prefetcher)  # Keras takes generators, not iterators

    def arrays(self):
        """All batches of steps `0 .. steps_per_epoch - 1` as two numpy arrays."""
        if self.data.images is not None:
            batches = [self.numpy_batch(step) for step in range(self.steps_per_epoch)]
        else:
            batches = list(self.tf_dataset(0, self.steps_per_epoch).as_numpy_iterator())
        return (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))


class _Prefetcher:
    """Runs `produce(step)` for each step in a daemon thread, `depth` results ahead."""

    def __init__(self, produce, steps, depth):
        self._queue = queue.Queue(maxsize=max(depth, 1))
        self._done = object()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(produce, steps), daemon=True)
        self._thread.start()

    def _work(self, produce, steps):
        try:
            for step in steps:
                if self._stop.is_set():
                    return
                self._queue.put(produce(step))
        except BaseException as error:  # surfaced in the consumer
            self._queue.put(error)
            return
        self._queue.put(self._done)

    def __iter__(self):
        return self

    def __next__(self):
        item = self._queue.get()
        if item is self._done:
            self._queue.put(item)
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self):
        self._stop.set()
        while not self._queue.empty():
            self._queue.get_nowait()
