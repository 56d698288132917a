"""Callbacks for training attention models: TensorBoard attention-map images, and the
fault-tolerance / divergence callbacks `zoo.train.fit` uses.

`AttentionMapTensorBoard` is meant for users' own `model.fit` calls as much as for the zoo's:

    callback = AttentionMapTensorBoard("runs/exp1", images=x_val[:4], layers=["cbam2"])
    model.fit(x, y, epochs=5, callbacks=[callback])
    # tensorboard --logdir runs/exp1
"""

import json
import math
import os
import shutil
import warnings

import keras
import numpy as np

import keras_attention
from attention_zoo_common.checks import is_positive_int
from zoo.train import map_images
from zoo.train.summaries import summary_writer


def _is_attention_layer(layer):
    return type(layer).__module__.startswith("keras_attention.") and hasattr(
        layer, "compute_attention_shape"
    )


def attention_layers(model, limit=4):
    """Up to `limit` attention layers of `model`, evenly spaced from first to last."""
    found = [layer.name for layer in model.layers if _is_attention_layer(layer)]
    if len(found) <= limit:
        return found
    picks = np.linspace(0, len(found) - 1, limit).round().astype(int)
    return [found[i] for i in sorted(set(picks.tolist()))]


class AttentionMapTensorBoard(keras.callbacks.Callback):
    """TensorBoard logging of scalars and, each epoch, attention maps over input images.

    Laid out like `keras.callbacks.TensorBoard`, so `tensorboard --logdir <log_dir>` shows
    two runs, `train` and `validation`, on the same charts:

    - `<log_dir>/train/`: the epoch's training logs (`epoch_loss`, `epoch_accuracy`, ...)
      and `epoch_learning_rate` at step `epoch`; every `update_freq` batches the batch
      logs (`batch_loss`, ...) at the global step; and the attention images;
    - `<log_dir>/validation/`: the epoch's `val_` logs without the prefix (`epoch_loss`,
      `epoch_accuracy`, ...) at step `epoch`.

    Images, every `every_n_epochs`-th epoch, for each chosen layer: its map
    (`keras_attention.attention_map`) reduced to its spatial layout, coloured and
    overlaid on `images` as `attention/<layer name>`; channel-only maps (SE, ECA, ...) as
    `attention/<layer name>/channels`, a strip of channel weights per image labelled with
    the layer and channel range, with a colour bar of its value scale
    (`zoo.train.map_images`). TensorFlow backend: `tf.summary`; other backends:
    tensorboard's own writer, or nothing with a warning if it is missing.

    Args:
        log_dir: folder of the event files (e.g. the run folder; `tensorboard --logdir`).
        images: a small batch of model inputs (as the model receives them).
        layers: names of attention layers; default: up to 4 of the model's
            keras_attention layers, evenly spaced.
        display_images: what to draw the maps on, `(n, H, W, 1 or 3)` in [0, 1] or
            uint8; default: `images` rescaled to [0, 1] per image.
        every_n_epochs: log images every this many epochs (scalars every epoch).
        scalars: also write the epoch and batch logs as scalars (False if you use
            `keras.callbacks.TensorBoard` for them).
        update_freq: write the batch logs every this many batches (`None`: never).
        initial_step: global step of the first batch (a resumed run continues its count);
            default: the optimizer's `iterations` when training begins.
    """

    def __init__(
        self,
        log_dir,
        images,
        layers=None,
        display_images=None,
        every_n_epochs=1,
        scalars=True,
        update_freq=1,
        initial_step=None,
    ):
        super().__init__()
        self.log_dir = str(log_dir)
        self.images = np.asarray(images)
        self.layer_names = list(layers) if layers is not None else None
        if display_images is None:
            display = map_images.normalise(self.images.astype("float32"))
        else:
            display = np.asarray(display_images, "float32")
            display = display / 255.0 if display.max() > 1.0 else display
        self.display_images = display
        self.every_n_epochs = int(every_n_epochs)
        self.scalars = scalars
        self.update_freq = update_freq
        self.initial_step = initial_step
        self.global_step = None
        self._writers = None
        self._warned = set()

    @property
    def train_dir(self):
        return os.path.join(self.log_dir, "train")

    @property
    def validation_dir(self):
        return os.path.join(self.log_dir, "validation")

    def on_train_begin(self, logs=None):
        if self._writers is None:
            train = summary_writer(self.train_dir)
            self._writers = None if train is None else {"train": train}
        if self.layer_names is None:
            self.layer_names = attention_layers(self.model)
        if self.global_step is None:
            if self.initial_step is not None:
                self.global_step = int(self.initial_step)
            else:
                optimizer = getattr(self.model, "optimizer", None)
                self.global_step = (
                    0
                    if optimizer is None
                    else int(keras.ops.convert_to_numpy(optimizer.iterations))
                )
        self._last_batch = -1

    def _writer(self, run):
        if run not in self._writers:
            self._writers[run] = summary_writer(self.validation_dir)
        return self._writers[run]

    def _learning_rate(self):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            return None
        try:
            return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        except Exception:  # a schedule object outside the optimizer's step, etc.
            return None

    def on_train_batch_end(self, batch, logs=None):
        # with steps_per_execution > 1 Keras reports the last batch of each execution
        self.global_step += batch - self._last_batch if batch > self._last_batch else batch + 1
        self._last_batch = batch
        if (
            self._writers is None
            or not self.scalars
            or not self.update_freq
            or self.global_step % self.update_freq
        ):
            return
        for key, value in (logs or {}).items():
            try:
                self._writers["train"].scalar(f"batch_{key}", float(value), self.global_step)
            except (TypeError, ValueError):
                pass

    def on_epoch_begin(self, epoch, logs=None):
        self._last_batch = -1

    def log_attention(self, step):
        """Write the attention images of every chosen layer at `step` now."""
        writer = self._writers["train"]
        for name in self.layer_names:
            layer = self.model.get_layer(name)
            attention = keras_attention.attention_map(self.model, layer, self.images)
            reduced = map_images.spatial_map(attention, layer)
            if reduced is None:
                if name not in self._warned:
                    self._warned.add(name)
                    warnings.warn(
                        f"AttentionMapTensorBoard: the map of {name!r} "
                        f"(shape {attention.shape}) has no spatial or channel layout; "
                        "not drawn",
                        stacklevel=2,
                    )
                continue
            if reduced.ndim == 2:
                writer.images(
                    f"attention/{name}/channels", map_images.channel_image(reduced, name), step
                )
            else:
                writer.images(
                    f"attention/{name}", map_images.overlay(self.display_images, reduced), step
                )

    def on_epoch_end(self, epoch, logs=None):
        if self._writers is None:
            return
        if self.scalars:
            for key, value in (logs or {}).items():
                run, tag = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    continue
                self._writer(run).scalar(f"epoch_{tag}", value, epoch)
            lr = self._learning_rate()
            if lr is not None:
                self._writers["train"].scalar("epoch_learning_rate", lr, epoch)
        if self.layer_names and (epoch + 1) % self.every_n_epochs == 0:
            self.log_attention(epoch)

    def on_train_end(self, logs=None):
        for writer in (self._writers or {}).values():
            writer.close()
        self._writers = None


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
        return text + (
            "Lower the learning rate, add gradient clipping, or check the data for NaNs / infs."
        )


class StepBackupAndRestore(keras.callbacks.Callback):
    """Fault-tolerance backups that `zoo.train.fit` can resume mid-epoch.

    Built on public Keras APIs only (`Callback` hooks, `Model.save_weights` /
    `load_weights`, whose `.weights.h5` file holds the optimizer's variables too). Unlike
    `keras.callbacks.BackupAndRestore`, which on restart replays the interrupted epoch from
    its first batch on top of mid-epoch weights, this one:

    - saves every `save_freq` global steps (an int; at each multiple passed) and at every
      epoch end (`save_freq="epoch"`: at epoch ends only);
    - records the global step (batches consumed since the start of training: not the
      optimizer's `iterations`, which a float16 loss-scaling optimizer does not advance on
      skipped steps) next to the weights, with the weights file's size and modification
      time so a kill between the two writes is detected;
    - keeps the previous pair (`*.bkp`): a torn or inconsistent latest pair falls back to
      it;
    - leaves the epoch to the caller: `restore(model)` returns the saved step and
      `zoo.train.fit` restarts the data stream there, finishing the interrupted epoch
      first (`begin_segment` tells the callback where each `model.fit` call starts).

    Args:
        backup_dir: folder of the backup files.
        save_freq: `"epoch"` or a positive number of steps.
    """

    WEIGHTS = "latest.weights.h5"
    METADATA = "training_metadata.json"

    def __init__(self, backup_dir, save_freq="epoch"):
        super().__init__()
        if save_freq != "epoch" and not is_positive_int(save_freq):
            raise ValueError(f"save_freq must be 'epoch' or a positive integer, got {save_freq!r}")
        self.backup_dir = str(backup_dir)
        self.save_freq = save_freq
        self.weights_path = os.path.join(self.backup_dir, self.WEIGHTS)
        self.metadata_path = os.path.join(self.backup_dir, self.METADATA)
        self.previous_weights_path = self.weights_path + ".bkp"
        self.previous_metadata_path = self.metadata_path + ".bkp"
        self._segment = (0, 0)  # (global step, epoch) where the current fit call starts
        self._epoch = 0
        self.global_step = 0
        self._saved_step = None

    def begin_segment(self, start_step, first_epoch):
        """Called by `zoo.train.fit` before each `model.fit` call."""
        self._segment = (int(start_step), int(first_epoch))
        self.global_step = int(start_step)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        start, first = self._segment
        previous = self.global_step
        self.global_step = (
            start + (self._epoch - first) * (self.params.get("steps") or 0) + batch + 1
        )
        if self.save_freq != "epoch" and (
            self.global_step // self.save_freq > previous // self.save_freq
        ):
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        start, first = self._segment
        self.global_step = start + (epoch - first + 1) * (self.params.get("steps") or 0)
        if self._saved_step != self.global_step:
            self.save()

    def save(self):
        """Back up the model's weights and optimizer state with the global step now."""
        os.makedirs(self.backup_dir, exist_ok=True)
        if os.path.exists(self.weights_path) and os.path.exists(self.metadata_path):
            # keep the previous pair, modification times included (the metadata names them)
            shutil.copy2(self.weights_path, self.previous_weights_path)
            shutil.copy2(self.metadata_path, self.previous_metadata_path)
        self.model.save_weights(self.weights_path, overwrite=True)
        info = os.stat(self.weights_path)
        metadata = {
            "epoch": self._epoch,
            "global_step": self.global_step,
            "weights_size": info.st_size,
            "weights_mtime_ns": info.st_mtime_ns,
        }
        temporary = self.metadata_path + ".tmp"
        with open(temporary, "w") as f:
            json.dump(metadata, f)
        os.replace(temporary, self.metadata_path)
        self._saved_step = self.global_step

    @staticmethod
    def _consistent_step(weights_path, metadata_path):
        try:
            with open(metadata_path) as f:
                metadata = json.load(f)
            info = os.stat(weights_path)
        except (OSError, ValueError):
            return None
        if (metadata.get("weights_size"), metadata.get("weights_mtime_ns")) != (
            info.st_size,
            info.st_mtime_ns,
        ) or "global_step" not in metadata:
            return None
        return int(metadata["global_step"])

    def restore(self, model):
        """Load the backup into `model` (built and compiled, its optimizer built) if there
        is one; return the global step it was taken at (0 without a backup)."""
        self.set_model(model)
        if not self.has_backup():
            return 0
        step = self._consistent_step(self.weights_path, self.metadata_path)
        if step is None and os.path.exists(self.previous_weights_path):
            # killed between writing the weights and their metadata: the previous pair
            step = self._consistent_step(self.previous_weights_path, self.previous_metadata_path)
            if step is not None:
                shutil.copy2(self.previous_weights_path, self.weights_path)
                shutil.copy2(self.previous_metadata_path, self.metadata_path)
                step = self._consistent_step(self.weights_path, self.metadata_path)
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(self.weights_path)
        if step is None:  # no usable metadata: the optimizer's count is the best guess
            step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        self.global_step = step
        return step

    def has_backup(self):
        return os.path.exists(self.weights_path)
