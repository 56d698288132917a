"""Callbacks for training attention models: TensorBoard attention-map images, and the
fault-tolerance / divergence callbacks `zoo.train.fit` uses.

`AttentionMapTensorBoard` is meant for users' own `model.fit` calls as much as for the zoo's:

    callback = AttentionMapTensorBoard("runs/exp1", images=x_val[:4], layers=["cbam2"])
    model.fit(x, y, epochs=5, callbacks=[callback])
    # tensorboard --logdir runs/exp1
"""

import io
import json
import math
import os
import shutil
import warnings

import keras
import numpy as np

import keras_attention


def _is_attention_layer(layer):
    return (type(layer).__module__.startswith("keras_attention.")
            and hasattr(layer, "compute_attention_shape"))


def attention_layers(model, limit=4):
    """Up to `limit` attention layers of `model`, evenly spaced from first to last."""
    found = [layer.name for layer in model.layers if _is_attention_layer(layer)]
    if len(found) <= limit:
        return found
    picks = np.linspace(0, len(found) - 1, limit).round().astype(int)
    return [found[i] for i in sorted(set(picks.tolist()))]


def _spatial_size(layer):
    shapes = []
    for attr in ("input", "output"):
        try:
            tensor = getattr(layer, attr)
        except (AttributeError, ValueError):
            continue
        tensor = tensor[0] if isinstance(tensor, (list, tuple)) else tensor
        if len(tensor.shape) == 4 and None not in tensor.shape[1:3]:
            shapes.append(tuple(tensor.shape[1:3]))
    return shapes


def spatial_map(attention, layer):
    """Reduce a layer's attention map to `(B, h, w)` (where it has a spatial layout), or
    return `(B, C)` for a channel-only map, or None if it has neither.

    - `(B, H, W, ...)` with (H, W) a feature-map size of the layer: mean over the rest
      (spatial gates, masks, local-window weights, per-position keys);
    - `(B, heads, L, L')` self-attention over positions: the attention each position
      receives, averaged over heads and queries, laid out on the map of size L';
    - `(B, 1, 1, C)` channel gates: `(B, C)`.
    """
    attention = np.asarray(attention, "float32")
    sizes = _spatial_size(layer)
    if attention.ndim >= 3 and tuple(attention.shape[1:3]) in sizes and attention.shape[1] * attention.shape[2] > 1:
        return attention.reshape(attention.shape[:3] + (-1,)).mean(-1)
    if attention.ndim == 4 and attention.shape[1:3] == (1, 1):
        return attention[:, 0, 0, :]
    if attention.ndim == 4:
        keys = attention.mean(axis=(1, 2))  # (B, L')
        for h, w in sizes + [(s // 2, s2 // 2) for s, s2 in sizes]:
            if h * w == keys.shape[-1]:
                return keys.reshape(-1, h, w)
        side = int(round(math.sqrt(keys.shape[-1])))
        if side * side == keys.shape[-1]:
            return keys.reshape(-1, side, side)
    return None


def _normalise(maps):
    lo = maps.min(axis=tuple(range(1, maps.ndim)), keepdims=True)
    hi = maps.max(axis=tuple(range(1, maps.ndim)), keepdims=True)
    return (maps - lo) / np.maximum(hi - lo, 1e-12)


def _heat(m):
    """A blue-green-red colour ramp of values in [0, 1]: `(..., 3)` in [0, 1]."""
    m = m[..., None]
    return np.clip(1.5 - np.abs(4.0 * m - np.array([3.0, 2.0, 1.0])), 0.0, 1.0)


def overlay(display, maps, alpha=0.45):
    """uint8 `(B, H, W, 3)`: each `(h, w)` map upsampled (bilinear) to the image size,
    coloured, and blended over its image (`display`: `(B, H, W, 1 or 3)` in [0, 1])."""
    from PIL import Image

    height, width = display.shape[1:3]
    maps = _normalise(maps)
    up = np.stack([
        np.asarray(Image.fromarray(m.astype("float32"), mode="F").resize((width, height),
                                                                          Image.BILINEAR))
        for m in maps
    ])
    base = display if display.shape[-1] == 3 else np.repeat(display, 3, axis=-1)
    blended = (1 - alpha) * base + alpha * _heat(np.clip(up, 0, 1))
    return (np.clip(blended, 0, 1) * 255 + 0.5).astype(np.uint8)


def channel_strip(weights, row_height=8):
    """uint8 `(B * row_height, C, 3)`: one coloured row of channel weights per image."""
    rows = _heat(_normalise(weights))  # (B, C, 3)
    strip = np.repeat(rows[:, None], row_height, axis=1).reshape(-1, weights.shape[1], 3)
    return (strip * 255 + 0.5).astype(np.uint8)[None]


def _png(image):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


class _TFWriter:
    def __init__(self, log_dir):
        import tensorflow as tf

        self._tf = tf
        self._writer = tf.summary.create_file_writer(log_dir)

    def scalar(self, tag, value, step):
        with self._writer.as_default():
            self._tf.summary.scalar(tag, value, step=step)

    def images(self, tag, images, step):
        with self._writer.as_default():
            self._tf.summary.image(tag, images, step=step, max_outputs=len(images))

    def close(self):
        self._writer.flush()
        self._writer.close()


class _EventWriter:
    """tensorboard's own event writer (no TensorFlow needed); the same summary layout as
    `tf.summary.image` / `tf.summary.scalar` write."""

    def __init__(self, log_dir):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._writer = EventFileWriter(log_dir)

    def _add(self, value, step):
        import time

        from tensorboard.compat.proto import event_pb2, summary_pb2

        summary = summary_pb2.Summary(value=[value])
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                               summary=summary))

    def scalar(self, tag, value, step):
        from tensorboard.compat.proto import summary_pb2, tensor_pb2, types_pb2

        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[float(value)])
        self._add(summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=tensor), step)

    def images(self, tag, images, step):
        from tensorboard.compat.proto import (summary_pb2, tensor_pb2, tensor_shape_pb2,
                                              types_pb2)

        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images"))
        strings = [str(images.shape[2]).encode(), str(images.shape[1]).encode()]
        strings += [_png(image) for image in images]
        shape = tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(strings))])
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape,
                                        string_val=strings)
        self._add(summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=tensor), step)

    def close(self):
        self._writer.flush()
        self._writer.close()


def summary_writer(log_dir):
    """tf.summary on the TensorFlow backend, else tensorboard's event writer, else None
    (with a warning)."""
    if keras.backend.backend() == "tensorflow":
        return _TFWriter(log_dir)
    try:
        return _EventWriter(log_dir)
    except ImportError as error:
        warnings.warn(f"TensorBoard summaries are skipped: tensorboard is not importable "
                      f"({error}); `pip install tensorboard` to get them", stacklevel=2)
        return None


class AttentionMapTensorBoard(keras.callbacks.Callback):
    """TensorBoard logging of scalars and, each epoch, attention maps over input images.

    At the end of every `every_n_epochs`-th epoch it writes, under `log_dir`:
    the epoch's logs (`epoch_loss`, `epoch_accuracy`, `epoch_val_...`) and the learning
    rate as scalars, and for each chosen attention layer an image summary
    `attention/<layer name>`: the layer's map (`keras_attention.attention_map`) reduced
    to its spatial layout, upsampled, coloured and overlaid on `images` (`(n, H, W, 3)`
    uint8); channel-only maps (SE, ECA, ...) become `attention/<layer name>/channels`, one
    coloured row of channel weights per image. TensorFlow backend: `tf.summary`; other
    backends: tensorboard's own writer, or nothing with a warning if it is missing.

    Args:
        log_dir: folder of the event files (e.g. the run folder; `tensorboard --logdir`).
        images: a small batch of model inputs (as the model receives them).
        layers: names of attention layers; default: up to 4 of the model's
            keras_attention layers, evenly spaced.
        display_images: what to draw the maps on, `(n, H, W, 1 or 3)` in [0, 1] or
            uint8; default: `images` rescaled to [0, 1] per image.
        every_n_epochs: log images every this many epochs (scalars every epoch).
        scalars: also write the epoch logs as scalars (False if you use
            `keras.callbacks.TensorBoard` for them).
    """

    def __init__(self, log_dir, images, layers=None, display_images=None, every_n_epochs=1,
                 scalars=True):
        super().__init__()
        self.log_dir = str(log_dir)
        self.images = np.asarray(images)
        self.layer_names = list(layers) if layers is not None else None
        if display_images is None:
            display = _normalise(self.images.astype("float32"))
        else:
            display = np.asarray(display_images, "float32")
            display = display / 255.0 if display.max() > 1.0 else display
        self.display_images = display
        self.every_n_epochs = int(every_n_epochs)
        self.scalars = scalars
        self._writer = None
        self._warned = set()

    def on_train_begin(self, logs=None):
        if self._writer is None:
            self._writer = summary_writer(self.log_dir)
        if self.layer_names is None:
            self.layer_names = attention_layers(self.model)

    def _learning_rate(self):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            return None
        try:
            return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        except Exception:  # a schedule object outside the optimizer's step, etc.
            return None

    def log_attention(self, step):
        """Write the attention images of every chosen layer at `step` now."""
        for name in self.layer_names:
            layer = self.model.get_layer(name)
            attention = keras_attention.attention_map(self.model, layer, self.images)
            reduced = spatial_map(attention, layer)
            if reduced is None:
                if name not in self._warned:
                    self._warned.add(name)
                    warnings.warn(f"AttentionMapTensorBoard: the map of {name!r} "
                                  f"(shape {attention.shape}) has no spatial or channel layout; "
                                  "not drawn", stacklevel=2)
                continue
            if reduced.ndim == 2:
                self._writer.images(f"attention/{name}/channels", channel_strip(reduced), step)
            else:
                self._writer.images(f"attention/{name}", overlay(self.display_images, reduced),
                                    step)

    def on_epoch_end(self, epoch, logs=None):
        if self._writer is None:
            return
        if self.scalars:
            for key, value in (logs or {}).items():
                try:
                    self._writer.scalar(f"epoch_{key}", float(value), epoch)
                except (TypeError, ValueError):
                    pass
            lr = self._learning_rate()
            if lr is not None:
                self._writer.scalar("epoch_learning_rate", lr, epoch)
        if self.layer_names and (epoch + 1) % self.every_n_epochs == 0:
            self.log_attention(epoch)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


FLOAT16_ADVICE = (
    "Under mixed_float16 this almost always means float16 overflowed: an activation or "
    "logit went past float16's largest value (65,504) and became inf, and inf - inf or "
    "0 * inf made the loss NaN. Loss scaling (LossScaleOptimizer, on) only protects the "
    "gradients, not the forward pass. Use --mixed-precision bfloat16 (float32's range; "
    "needs a GPU/CPU with bf16 support), or lower the learning rate / add gradient "
    "clipping, or train in float32 (--mixed-precision off)."
)


class NonFiniteLossError(FloatingPointError):
    """Training stopped because the loss became NaN or infinite."""


class TerminateOnNaNWithAdvice(keras.callbacks.TerminateOnNaN):
    """`keras.callbacks.TerminateOnNaN` that remembers where it stopped and why, so `fit`
    can raise `NonFiniteLossError` with advice (float16 overflow) instead of returning a
    model full of NaNs."""

    def __init__(self, float16=False):
        super().__init__()
        self.float16 = float16
        self.stopped_at = None
        # reads logs and sets a flag only: Keras may dispatch it off the training thread
        self.async_safe = True

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.stopped_at = (batch, float(loss))
            self.model.stop_training = True

    def message(self):
        batch, loss = self.stopped_at
        text = f"training stopped: the loss became {loss} at batch {batch} of the epoch. "
        if self.float16:
            return text + FLOAT16_ADVICE
        return text + ("Lower the learning rate, add gradient clipping, or check the data "
                       "for NaNs / infs.")


class StepBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` that `zoo.train.fit` can resume mid-epoch.

    Keras' callback saves every `save_freq` batches, but on restart it only restores the
    epoch number and replays that epoch from its first batch on top of mid-epoch weights.
    This one (a) also saves at every epoch end, (b) records the global step (batches
    consumed since the start of training: not the optimizer's `iterations`, which a
    float16 loss-scaling optimizer does not advance on skipped steps) next to the weights,
    with the weights file's size and modification time so a kill between the two writes is
    detected, and (c) leaves the epoch to the caller: `zoo.train.fit` restarts the data
    stream at exactly the saved step, finishing the interrupted epoch first. Checkpoints
    are kept twice (`double_checkpoint`): a torn or inconsistent latest pair falls back to
    the previous one.
    """

    def __init__(self, backup_dir, save_freq="epoch"):
        super().__init__(backup_dir, save_freq=save_freq, double_checkpoint=True,
                         delete_checkpoint=False)
        self._segment = (0, 0)  # (global step, epoch) where the current fit call starts
        self.global_step = 0

    def begin_segment(self, start_step, first_epoch):
        """Called by `zoo.train.fit` before each `model.fit` call."""
        self._segment = (int(start_step), int(first_epoch))
        self.global_step = int(start_step)

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        start, first = self._segment
        steps = self.params.get("steps") or 0
        self.global_step = start + (self._current_epoch - first) * steps + batch + 1
        super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        start, first = self._segment
        self.global_step = start + (epoch - first + 1) * (self.params.get("steps") or 0)
        super().on_epoch_end(epoch, logs)
        if self.save_freq != "epoch":
            self._save_model()

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        if os.path.exists(self._weights_path) and os.path.exists(self._training_metadata_path):
            # keep the previous pair, modification times included (the metadata names them)
            shutil.copy2(self._weights_path, self._prev_weights_path)
            shutil.copy2(self._training_metadata_path, self._prev_training_metadata_path)
        self.model.save_weights(self._weights_path, overwrite=True)
        info = os.stat(self._weights_path)
        metadata = {"epoch": self._current_epoch, "global_step": self.global_step,
                    "weights_size": info.st_size, "weights_mtime_ns": info.st_mtime_ns}
        temporary = self._training_metadata_path + ".tmp"
        with open(temporary, "w") as f:
            json.dump(metadata, f)
        os.replace(temporary, self._training_metadata_path)

    def _load_model(self):
        super()._load_model()
        self.model._initial_epoch = None

    def _consistent_step(self, weights_path, metadata_path):
        try:
            with open(metadata_path) as f:
                metadata = json.load(f)
            info = os.stat(weights_path)
        except (OSError, ValueError):
            return None
        if (metadata.get("weights_size"), metadata.get("weights_mtime_ns")) != (
                info.st_size, info.st_mtime_ns) or "global_step" not in metadata:
            return None
        return int(metadata["global_step"])

    def restore(self, model):
        """Load the backup into `model` (built and compiled) if there is one; return the
        global step it was taken at (0 without a backup)."""
        self.set_model(model)
        if not self.has_backup():
            return 0
        step = self._consistent_step(self._weights_path, self._training_metadata_path)
        if step is None and os.path.exists(self._prev_weights_path):
            # killed between writing the weights and their metadata: the previous pair
            step = self._consistent_step(self._prev_weights_path,
                                         self._prev_training_metadata_path)
            if step is not None:
                shutil.copy2(self._prev_weights_path, self._weights_path)
                shutil.copy2(self._prev_training_metadata_path, self._training_metadata_path)
                step = self._consistent_step(self._weights_path, self._training_metadata_path)
        self.on_train_begin()
        if step is None:  # no usable metadata: the optimizer's count is the best guess
            step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        self.global_step = step
        return step

    def has_backup(self):
        return os.path.exists(self._weights_path)
