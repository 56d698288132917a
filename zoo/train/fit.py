"""`zoo.train.fit`: train a zoo model with its recipe, observably and resumably.

`fit(...)` is a composition of parts that each work (and are tested) alone:

- `TrainConfig`: the frozen, validated arguments of a run;
- `prepare_data(config)`: data sets, recipe and input pipelines (`PreparedData`);
- `build_model(config, prepared)`: the model, compiled with the recipe's optimizer;
- `RunFolder`: the run folder's record (`run.json`), which refuses to mix two runs;
- `attention_logger(model, prepared, log_dir)`: the TensorBoard callback;
- `resumable_fit(...)`: `model.fit` calls that resume mid-epoch from a backup.
"""

import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from attention_zoo_common.checks import is_positive_int
from zoo import registry
from zoo.train import callbacks as callbacks_lib
from zoo.train import data as data_lib
from zoo.train import recipes

PRECISIONS = {"off": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


class TrainResult(dict):
    """What `fit` knows about a finished run (also `history.run`)."""


class RunFolderError(FileExistsError):
    """The run folder holds another run (finished, or with other settings)."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The arguments of one training run (see `fit` for each field), validated."""

    name: Any
    dataset: Any = "mnist"
    epochs: int = None
    batch_size: int = None
    mixed_precision: str = "off"
    jit_compile: Any = "auto"
    run_dir: pathlib.Path = None
    checkpoint_every: int = None
    seed: int = 0
    image_size: Any = None
    recipe: recipes.Recipe = None
    validation: bool = True
    steps_per_epoch: int = None
    steps_per_execution: int = 1
    distribution: Any = None
    attention_layers: tuple = None
    verbose: Any = "auto"
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    run_eagerly: bool = False

    def __post_init__(self):
        if self.mixed_precision not in PRECISIONS:
            raise ValueError(
                f"mixed_precision must be one of {', '.join(PRECISIONS)}, "
                f"got {self.mixed_precision!r}"
            )
        if self.checkpoint_every is not None and not is_positive_int(self.checkpoint_every):
            raise ValueError(
                f"checkpoint_every must be a positive integer, got {self.checkpoint_every!r}"
            )
        if self.checkpoint_every is not None and self.run_dir is None:
            raise ValueError("checkpoint_every needs a run_dir to write the checkpoints to")
        if self.run_dir is not None:
            object.__setattr__(self, "run_dir", pathlib.Path(self.run_dir))
        object.__setattr__(self, "model_kwargs", dict(self.model_kwargs or {}))
        if self.attention_layers is not None:
            object.__setattr__(self, "attention_layers", tuple(self.attention_layers))

    def identity(self):
        """The settings that decide what a run computes, as JSON-able values: a run folder
        resumes only a run with the same identity."""

        def describe(value):
            if value is None or isinstance(value, (str, int, float, bool)):
                return value
            if isinstance(value, data_lib.ImageData):
                return f"ImageData {value.name!r}, {len(value)} examples"
            if isinstance(value, os.PathLike):
                return os.fspath(value)
            if isinstance(value, (list, tuple)):
                if len(value) == 2 and all(hasattr(v, "shape") for v in value):
                    return f"arrays {[list(np.shape(v)) for v in value]}"
                return [describe(v) for v in value]
            if isinstance(value, dict):
                return {str(k): describe(v) for k, v in sorted(value.items())}
            if isinstance(value, Callable):
                return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', '?')}"
            return repr(value)

        return {
            field: describe(getattr(self, field))
            for field in (
                "name",
                "dataset",
                "epochs",
                "batch_size",
                "mixed_precision",
                "seed",
                "image_size",
                "recipe",
                "steps_per_epoch",
                "model_kwargs",
            )
        }


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """The data side of a run: data sets, recipe, pipelines and the resulting sizes."""

    train_data: data_lib.ImageData
    test_data: data_lib.ImageData
    recipe: recipes.Recipe
    train: data_lib.Pipeline
    test: data_lib.Pipeline
    epochs: int
    batch_size: int
    steps_per_epoch: int

    @property
    def total_steps(self):
        return self.steps_per_epoch * self.epochs

    @property
    def input_shape(self):
        return tuple(self.train_data.image_size) + (self.train_data.channels,)

    def sample_images(self, count=4):
        """The first `count` inputs of the evaluation stream (or of an unshuffled pass over
        the training data): what the attention maps are drawn on."""
        sample = self.test or data_lib.Pipeline(
            self.train_data,
            self.batch_size,
            mean=self.train.mean,
            std=self.train.std,
            training=False,
        )
        if sample.data.images is not None:
            images, _ = sample.numpy_batch(0)
        else:
            images, _ = next(iter(sample.tf_dataset(0, 1).as_numpy_iterator()))
        return images[:count]


def _spec_normalisation(name):
    if isinstance(name, str):
        spec = registry.get_spec(name)
        return spec.mean, spec.std
    return (0.0,), (1.0,)


def prepare_data(config):
    """Load the data set's splits, pick the recipe and build the input pipelines."""
    dataset = config.dataset
    train_data = data_lib.load(dataset, "train", image_size=config.image_size, seed=config.seed)
    test_data = None
    if config.validation and isinstance(dataset, (str, os.PathLike)):
        test_data = data_lib.load(
            dataset,
            "test",
            image_size=train_data.image_size,
            channels=train_data.channels,
            seed=config.seed,
        )
    small = not (isinstance(dataset, (str, os.PathLike)) and pathlib.Path(dataset).is_dir())
    recipe = config.recipe or recipes.get_recipe(
        config.name if isinstance(config.name, str) else None, small_data=small
    )
    mean, std = _spec_normalisation(config.name)
    train = data_lib.Pipeline(
        train_data,
        config.batch_size or recipe.batch_size,
        seed=config.seed,
        crop_padding=recipe.crop_padding,
        flip=recipe.flip,
        mean=mean,
        std=std,
    )
    test = (
        data_lib.Pipeline(test_data, train.batch_size, mean=mean, std=std, training=False)
        if test_data is not None
        else None
    )
    return PreparedData(
        train_data=train_data,
        test_data=test_data,
        recipe=recipe,
        train=train,
        test=test,
        epochs=config.epochs or recipe.epochs,
        batch_size=train.batch_size,
        steps_per_epoch=config.steps_per_epoch or train.steps_per_epoch,
    )


def _distribution(distribution):
    """(TF strategy or None, Keras distribution or None) for the `distribution` argument."""
    if distribution is None:
        return None, None
    if distribution == "mirrored":
        import tensorflow as tf

        return tf.distribute.MirroredStrategy(), None
    if distribution == "data_parallel":
        return None, keras.distribution.DataParallel()
    if isinstance(distribution, keras.distribution.Distribution):
        return None, distribution
    if hasattr(distribution, "scope"):
        return distribution, None
    raise ValueError(
        f"distribution must be None, 'mirrored', 'data_parallel', a "
        f"tf.distribute.Strategy or a keras.distribution, got {distribution!r}"
    )


@contextlib.contextmanager
def default_distribution(distribution):
    """Sets a keras.distribution for the duration of a block (JAX); None: no change."""
    if distribution is None:
        yield
        return
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(distribution)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


def _instantiate(name, input_shape, num_classes, model_kwargs):
    if callable(name):
        model = name(input_shape=input_shape, num_classes=num_classes, **model_kwargs)
    else:
        import zoo

        model = zoo.build(
            name,
            input_shape=input_shape,
            num_classes=num_classes,
            classifier_activation=None,
            **model_kwargs,
        )
    output = getattr(model, "outputs", None)
    if output and len(output) == 1 and output[0].dtype != "float32":
        # logits and the loss in float32 under mixed precision
        logits = keras.layers.Activation("linear", dtype="float32", name="logits_float32")(
            output[0]
        )
        model = keras.Model(model.inputs, logits, name=model.name)
    return model


def build_model(config, prepared):
    """The model (logits out, seeded by `config.seed`), compiled with the recipe's
    optimizer, loss and accuracy, its optimizer built. Call under the dtype policy and
    the distribution scope of the run."""
    keras.utils.set_random_seed(config.seed)
    recipe = prepared.recipe
    model = _instantiate(
        config.name, prepared.input_shape, prepared.train_data.num_classes, config.model_kwargs
    )
    optimizer = recipe.make_optimizer(
        prepared.batch_size,
        prepared.steps_per_epoch,
        prepared.total_steps,
        loss_scaling=config.mixed_precision == "float16",
    )
    recipes.exclude_from_weight_decay(optimizer, model)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=recipe.label_smoothing
        ),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=config.jit_compile,
        steps_per_execution=config.steps_per_execution,
        run_eagerly=config.run_eagerly,
    )
    model.optimizer.build(model.trainable_variables)
    return model


class RunFolder:
    """A run folder and its record `run.json` (`{"config": identity, "finished": bool,
    ...}`): one run per folder.

    `open()` accepts an empty or new folder (a new run), or the folder of an unfinished
    run with the same settings (`TrainConfig.identity()`; it resumes from its backup, or
    starts over when killed before its first backup). It refuses, with `RunFolderError`,
    a finished run or a run with other settings: their logs and checkpoints would mix
    with the new run's. Pick a new folder (e.g. `runs/<name>-2`) or delete the old one.
    """

    RECORD = "run.json"

    def __init__(self, path):
        self.path = pathlib.Path(path)

    @property
    def log_dir(self):
        return self.path / "logs"

    @property
    def backup_dir(self):
        return self.path / "backup"

    @property
    def model_path(self):
        return self.path / "model.keras"

    def _read_record(self):
        try:
            return json.loads((self.path / self.RECORD).read_text())
        except (OSError, ValueError):
            return None

    def _write_record(self, record):
        temporary = self.path / (self.RECORD + ".tmp")
        temporary.write_text(json.dumps(record, indent=1, default=str))
        os.replace(temporary, self.path / self.RECORD)

    def open(self, config):
        """Claim the folder for `config`'s run; return True if it continues an
        unfinished run of the same settings."""
        identity = config.identity()
        contents = sorted(p.name for p in self.path.iterdir()) if self.path.is_dir() else []
        if not contents:
            self.path.mkdir(parents=True, exist_ok=True)
            self._write_record({"config": identity, "finished": False})
            return False
        record = self._read_record()
        if record is None:
            raise RunFolderError(
                f"run folder {self.path} is not empty ({', '.join(contents[:4])}) and has "
                f"no {self.RECORD}: pick a new run folder"
            )
        if record.get("finished"):
            raise RunFolderError(
                f"run folder {self.path} holds a finished run: pick a new run folder (or "
                f"delete this one)"
            )
        if record.get("config") != identity:
            changed = sorted(
                k
                for k in set(identity) | set(record.get("config") or {})
                if identity.get(k) != (record.get("config") or {}).get(k)
            )
            raise RunFolderError(
                f"run folder {self.path} holds an unfinished run with other settings "
                f"({', '.join(changed)}): rerun with its settings to resume it, or pick a "
                f"new run folder"
            )
        if not (self.backup_dir / callbacks_lib.StepBackupAndRestore.WEIGHTS).exists():
            shutil.rmtree(self.log_dir, ignore_errors=True)  # killed before any backup
        return True

    def finish(self, summary):
        record = self._read_record() or {}
        record.update(summary, finished=True)
        self._write_record(record)
        shutil.rmtree(self.backup_dir, ignore_errors=True)


def _is_functional(model):
    try:
        model.input  # noqa: B018  (raises for a model without a functional graph)
    except (AttributeError, ValueError):
        return False
    return True


def attention_logger(model, prepared, log_dir, layers=None, initial_step=0):
    """The `AttentionMapTensorBoard` of a run: scalars under `log_dir/train` and
    `log_dir/validation`, attention maps of `layers` (default: up to 4) over the first
    evaluation images; no maps for a model without a functional graph."""
    return callbacks_lib.AttentionMapTensorBoard(
        str(log_dir),
        prepared.sample_images(4),
        layers=layers if _is_functional(model) else [],
        initial_step=initial_step,
    )


def resumable_fit(
    model,
    prepared,
    callbacks,
    *,
    start_step=0,
    backup=None,
    nan_guard=None,
    distribution=None,
    verbose="auto",
):
    """Train `model` from global step `start_step` to the end of `prepared.epochs`.

    A start inside an epoch first finishes that epoch (one `model.fit` call of the
    remaining steps, the data stream restarted at exactly `start_step`), then runs the
    remaining epochs in a second call; `backup` (a `StepBackupAndRestore` among
    `callbacks`) is told where each call starts. Returns `(history, steps_run)`:
    a `keras.callbacks.History` of all epochs of this call.

    Raises:
        NonFiniteLossError: `nan_guard` stopped the run.
    """
    spe, epochs = prepared.steps_per_epoch, prepared.epochs
    test = prepared.test
    history = keras.callbacks.History()
    history.history = {}
    epoch, within = divmod(start_step, spe)
    val_stream = None
    if test is not None:
        val_stream = (
            test.arrays()
            if keras.backend.backend() != "tensorflow"
            else test.tf_dataset(0, test.steps_per_epoch)
        )
    segments = []
    if within:
        segments.append((epoch, epoch + 1, spe - within, start_step))
        epoch += 1
    if epoch < epochs:
        segments.append((epoch, epochs, spe, epoch * spe))
    for first, last, steps, from_step in segments:
        if backup is not None:
            backup.begin_segment(from_step, first)
        with default_distribution(distribution):
            part = model.fit(
                prepared.train.stream(from_step, steps * (last - first)),
                epochs=last,
                initial_epoch=first,
                steps_per_epoch=steps,
                shuffle=False,
                validation_data=val_stream,
                validation_batch_size=prepared.batch_size,
                callbacks=list(callbacks),
                verbose=verbose,
            )
        for key, values in part.history.items():
            history.history.setdefault(key, []).extend(values)
        if nan_guard is not None and nan_guard.stopped_at is not None:
            raise callbacks_lib.NonFiniteLossError(nan_guard.message())
        if model.stop_training:
            break
    history.set_model(model)
    history.epoch = list(
        range(start_step // spe, start_step // spe + len(next(iter(history.history.values()), [])))
    )
    steps_run = sum(steps * (last - first) for first, last, steps, _ in segments)
    if model.stop_training and backup is not None:
        steps_run = backup.global_step - start_step
    return history, steps_run


def fit(
    name,
    dataset="mnist",
    *,
    epochs=None,
    batch_size=None,
    mixed_precision="off",
    jit_compile="auto",
    run_dir=None,
    checkpoint_every=None,
    seed=0,
    image_size=None,
    recipe=None,
    validation=True,
    steps_per_epoch=None,
    steps_per_execution=1,
    distribution=None,
    callbacks=(),
    attention_layers=None,
    verbose="auto",
    model_kwargs=None,
    run_eagerly=False,
):
    """Train a zoo model (or your own) on a data set with the model's recipe.

    Args:
        name: a name from `zoo.list_models()`, or a callable
            `(input_shape=, num_classes=, **model_kwargs) -> keras.Model` returning logits.
        dataset: `"mnist"`, `"translated_mnist"`, `"cluttered_mnist"`, `"rts_mnist"`, a
            folder of images (one subfolder per class), an `(images, labels)` tuple or a
            `zoo.train.data.ImageData` (see `zoo.train.data.load`).
        epochs, batch_size: default: the recipe's. `batch_size` is the global batch.
        mixed_precision: `"off"` (float32), `"bfloat16"` (mixed_bfloat16) or `"float16"`
            (mixed_float16 with dynamic loss scaling by `keras.optimizers.LossScaleOptimizer`).
            Variables, logits and the loss stay float32.
        jit_compile: XLA compilation (`True`, `False` or `"auto"`; Keras' `compile`).
        run_dir: folder of one run: `run.json` (its settings and, once finished, its
            summary), `logs/train` and `logs/validation` (TensorBoard scalars like
            `keras.callbacks.TensorBoard` writes them, step-level loss, attention-map
            images), `backup/` (fault-tolerance checkpoints, removed at the end),
            `model.keras` (the final model). A run restarted with the same `run_dir` and
            settings resumes from its last backup at the exact step it was taken and
            finishes with the weights an uninterrupted run would have (the data order and
            augmentation are functions of seed and step). A folder holding a finished run
            or a run with other settings is refused (`RunFolderError`), so two runs never
            mix their logs; use a new folder per run.
        checkpoint_every: back up every this many steps (and at every epoch end); None:
            every epoch end. Needs `run_dir`.
        seed: seed of the initial weights, the data order and the augmentation.
        image_size: `(height, width)` or int to resize the data to.
        recipe: a `zoo.train.Recipe` (default `zoo.train.get_recipe(name)`).
        validation: evaluate on the data set's test split after each epoch (when it has one).
        steps_per_epoch: default: full batches per epoch.
        steps_per_execution: training steps per Keras dispatch.
        distribution: None, `"mirrored"` (tf.distribute.MirroredStrategy over the local
            devices, TF backend), `"data_parallel"` (keras.distribution.DataParallel, JAX),
            or a strategy / keras distribution object.
        callbacks: more Keras callbacks.
        attention_layers: layers whose maps go to TensorBoard (default: up to 4).
        verbose: Keras `fit` verbosity (progress bar).
        model_kwargs: keyword arguments of the model builder.
        run_eagerly: run the train step eagerly (debugging; also the quickest way to take
            a single step of a large model on a CPU, skipping graph tracing).

    Returns:
        `(model, history)`: the trained `keras.Model` (logits out) and the
        `keras.callbacks.History` (all epochs of this call, also across a resume); the
        history's `run` attribute holds a summary (seconds, steps, paths, final metrics).

    Raises:
        zoo.train.NonFiniteLossError: the loss became NaN / inf (`TerminateOnNaN`); the
            message says what it means under float16 and what to do.
        zoo.train.RunFolderError: `run_dir` holds another run.
    """
    config = TrainConfig(
        name=name,
        dataset=dataset,
        epochs=epochs,
        batch_size=batch_size,
        mixed_precision=mixed_precision,
        jit_compile=jit_compile,
        run_dir=run_dir,
        checkpoint_every=checkpoint_every,
        seed=seed,
        image_size=image_size,
        recipe=recipe,
        validation=validation,
        steps_per_epoch=steps_per_epoch,
        steps_per_execution=steps_per_execution,
        distribution=distribution,
        attention_layers=attention_layers,
        verbose=verbose,
        model_kwargs=model_kwargs,
        run_eagerly=run_eagerly,
    )
    return fit_config(config, callbacks)


def fit_config(config, callbacks=()):
    """`fit` for a `TrainConfig` (and more Keras callbacks)."""
    folder = RunFolder(config.run_dir) if config.run_dir is not None else None
    if folder is not None:
        folder.open(config)
    prepared = prepare_data(config)
    strategy, keras_distribution = _distribution(config.distribution)
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(PRECISIONS[config.mixed_precision])
    try:
        scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
        with default_distribution(keras_distribution), scope:
            model = build_model(config, prepared)
        nan_guard = callbacks_lib.TerminateOnNaNWithAdvice(
            float16=config.mixed_precision == "float16"
        )
        all_callbacks = [nan_guard]
        backup = None
        start_step = 0
        if folder is not None:
            backup = callbacks_lib.StepBackupAndRestore(
                str(folder.backup_dir), save_freq=config.checkpoint_every or "epoch"
            )
            start_step = backup.restore(model)
            all_callbacks.append(backup)
            all_callbacks.append(
                attention_logger(
                    model, prepared, folder.log_dir, config.attention_layers, start_step
                )
            )
        all_callbacks += list(callbacks)

        start_time = time.perf_counter()
        history, steps_run = resumable_fit(
            model,
            prepared,
            all_callbacks,
            start_step=start_step,
            backup=backup,
            nan_guard=nan_guard,
            distribution=keras_distribution,
            verbose=config.verbose,
        )
        seconds = time.perf_counter() - start_time
        run = TrainResult(
            seconds=seconds,
            steps=steps_run,
            resumed_from_step=start_step,
            examples_per_second=steps_run * prepared.batch_size / max(seconds, 1e-9),
            batch_size=prepared.batch_size,
            steps_per_epoch=prepared.steps_per_epoch,
            epochs=prepared.epochs,
            mixed_precision=config.mixed_precision,
            recipe=prepared.recipe,
            data=prepared.train_data.name,
            num_classes=prepared.train_data.num_classes,
            input_shape=prepared.input_shape,
        )
        if folder is not None:
            run["model_path"] = str(folder.model_path)
            run["log_dir"] = str(folder.log_dir)
            model.save(run["model_path"])
            folder.finish(
                {
                    "num_classes": run["num_classes"],
                    "input_shape": list(run["input_shape"]),
                    "steps": start_step + steps_run,
                    "model_path": run["model_path"],
                    "metrics": {k: float(v[-1]) for k, v in history.history.items() if v},
                }
            )
        history.run = run
        return model, history
    finally:
        keras.config.set_dtype_policy(previous_policy)


def evaluate(model, pipeline):
    """Accuracy of `model` (logits out) over every example of an evaluation `Pipeline`."""
    x, y = pipeline.arrays()
    logits = model.predict(x, batch_size=pipeline.batch_size, verbose=0)
    return float((np.asarray(logits).argmax(-1) == y.argmax(-1)).mean())
