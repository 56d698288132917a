"""`zoo.train.fit`: train a zoo model with its recipe, observably and resumably."""

import os
import pathlib
import shutil
import time

import keras
import numpy as np

from keras_attention.layers._utils import is_positive_int
from zoo import registry
from zoo.train import callbacks as callbacks_lib
from zoo.train import data as data_lib
from zoo.train import recipes

PRECISIONS = {"off": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


class TrainResult(dict):
    """What `fit` knows about a finished run (also `history.run`)."""


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
    raise ValueError(f"distribution must be None, 'mirrored', 'data_parallel', a "
                     f"tf.distribute.Strategy or a keras.distribution, got {distribution!r}")


def _build(name, input_shape, num_classes, model_kwargs):
    if callable(name):
        model = name(input_shape=input_shape, num_classes=num_classes, **model_kwargs)
    else:
        import zoo

        model = zoo.build(name, input_shape=input_shape, num_classes=num_classes,
                          classifier_activation=None, **model_kwargs)
    output = getattr(model, "outputs", None)
    if output and len(output) == 1 and output[0].dtype != "float32":
        # logits and the loss in float32 under mixed precision
        logits = keras.layers.Activation("linear", dtype="float32", name="logits_float32")(
            output[0])
        model = keras.Model(model.inputs, logits, name=model.name)
    return model


def _spec_normalisation(name):
    if isinstance(name, str):
        spec = registry.get_spec(name)
        return spec.mean, spec.std
    return (0.0,), (1.0,)


class _DefaultDistribution:
    """Sets a keras.distribution for the duration of a block (JAX)."""

    def __init__(self, distribution):
        self.distribution = distribution

    def __enter__(self):
        self.previous = keras.distribution.distribution()
        if self.distribution is not None:
            keras.distribution.set_distribution(self.distribution)

    def __exit__(self, *exc):
        if self.distribution is not None:
            keras.distribution.set_distribution(self.previous)


class _NullScope:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def fit(name, dataset="mnist", *, epochs=None, batch_size=None, mixed_precision="off",
        jit_compile="auto", run_dir=None, checkpoint_every=None, seed=0, image_size=None,
        recipe=None, validation=True, steps_per_epoch=None, steps_per_execution=1,
        distribution=None, callbacks=(), attention_layers=None, verbose="auto",
        model_kwargs=None, run_eagerly=False):
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
        run_dir: folder of the run: `logs/` (TensorBoard scalars and attention-map images),
            `backup/` (fault-tolerance checkpoints), `model.keras` (the final model). A run
            restarted with the same `run_dir` and arguments resumes from its last backup at
            the exact step it was taken and finishes with the weights an uninterrupted run
            would have (the data order and augmentation are functions of seed and step).
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
    """
    if mixed_precision not in PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {', '.join(PRECISIONS)}, "
                         f"got {mixed_precision!r}")
    if checkpoint_every is not None and not is_positive_int(checkpoint_every):
        raise ValueError(f"checkpoint_every must be a positive integer, got {checkpoint_every!r}")
    if checkpoint_every is not None and run_dir is None:
        raise ValueError("checkpoint_every needs a run_dir to write the checkpoints to")
    model_kwargs = dict(model_kwargs or {})
    train_data = data_lib.load(dataset, "train", image_size=image_size, seed=seed)
    test_data = None
    if validation and isinstance(dataset, (str, os.PathLike)):
        test_data = data_lib.load(dataset, "test", image_size=train_data.image_size,
                                  channels=train_data.channels, seed=seed)
    small = not (isinstance(dataset, (str, os.PathLike)) and pathlib.Path(dataset).is_dir())
    recipe = recipe or recipes.get_recipe(name if isinstance(name, str) else None,
                                          small_data=small)
    epochs = epochs or recipe.epochs
    batch_size = batch_size or recipe.batch_size
    mean, std = _spec_normalisation(name)
    train = data_lib.Pipeline(train_data, batch_size, seed=seed, crop_padding=recipe.crop_padding,
                              flip=recipe.flip, mean=mean, std=std)
    batch_size = train.batch_size
    spe = steps_per_epoch or train.steps_per_epoch
    total_steps = spe * epochs
    test = (data_lib.Pipeline(test_data, batch_size, mean=mean, std=std, training=False)
            if test_data is not None else None)

    strategy, keras_distribution = _distribution(distribution)
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(PRECISIONS[mixed_precision])
    run_dir = pathlib.Path(run_dir) if run_dir is not None else None
    try:
        with _DefaultDistribution(keras_distribution), \
                (strategy.scope() if strategy is not None else _NullScope()):
            keras.utils.set_random_seed(seed)
            input_shape = tuple(train_data.image_size) + (train_data.channels,)
            model = _build(name, input_shape, train_data.num_classes, model_kwargs)
            optimizer = recipe.make_optimizer(batch_size, spe, total_steps,
                                              loss_scaling=mixed_precision == "float16")
            recipes.exclude_from_weight_decay(optimizer, model)
            model.compile(
                optimizer=optimizer,
                loss=keras.losses.CategoricalCrossentropy(
                    from_logits=True, label_smoothing=recipe.label_smoothing),
                metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                jit_compile=jit_compile, steps_per_execution=steps_per_execution,
                run_eagerly=run_eagerly)
            model.optimizer.build(model.trainable_variables)
        nan_guard = callbacks_lib.TerminateOnNaNWithAdvice(float16=mixed_precision == "float16")
        all_callbacks = [nan_guard]
        backup = None
        start_step = 0
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            backup = callbacks_lib.StepBackupAndRestore(str(run_dir / "backup"),
                                                        save_freq=checkpoint_every or "epoch")
            start_step = backup.restore(model)
            all_callbacks.append(backup)
            sample = test or data_lib.Pipeline(train_data, batch_size, mean=mean, std=std,
                                               training=False)
            images, _ = sample.numpy_batch(0) if sample.data.images is not None else \
                next(iter(sample.tf_dataset(0, 1).as_numpy_iterator()))
            images = images[:4]
            try:
                model.input  # attention maps need a functional model
                functional = True
            except (AttributeError, ValueError):
                functional = False
            layers = attention_layers if functional else []
            all_callbacks.append(callbacks_lib.AttentionMapTensorBoard(
                str(run_dir / "logs"), images, layers=layers))
        all_callbacks += list(callbacks)

        history = keras.callbacks.History()
        history.history = {}
        start_time = time.perf_counter()
        epoch, within = divmod(start_step, spe)
        val_arrays = None
        if test is not None and keras.backend.backend() != "tensorflow":
            val_arrays = test.arrays()
        segments = []
        if within:
            segments.append((epoch, epoch + 1, spe - within, start_step))
            epoch += 1
        if epoch < epochs:
            segments.append((epoch, epochs, spe, epoch * spe))
        for first, last, steps, from_step in segments:
            if backup is not None:
                backup.begin_segment(from_step, first)
            with _DefaultDistribution(keras_distribution):
                val_stream = None
                if val_arrays is not None:
                    val_stream = val_arrays
                elif test is not None:
                    val_stream = test.tf_dataset(0, test.steps_per_epoch)
                part = model.fit(
                    train.stream(from_step, steps * (last - first)),
                    epochs=last, initial_epoch=first, steps_per_epoch=steps, shuffle=False,
                    validation_data=val_stream, validation_batch_size=batch_size,
                    callbacks=all_callbacks, verbose=verbose)
            for key, values in part.history.items():
                history.history.setdefault(key, []).extend(values)
            if nan_guard.stopped_at is not None:
                raise callbacks_lib.NonFiniteLossError(nan_guard.message())
            if model.stop_training:
                break
        seconds = time.perf_counter() - start_time
        history.set_model(model)
        history.epoch = list(range(start_step // spe, start_step // spe + len(
            next(iter(history.history.values()), []))))
        steps_run = sum(steps * (last - first) for first, last, steps, _ in segments)
        if model.stop_training and backup is not None:
            steps_run = backup.global_step - start_step
        run = TrainResult(seconds=seconds, steps=steps_run, resumed_from_step=start_step,
            examples_per_second=steps_run * batch_size / max(seconds, 1e-9),
            batch_size=batch_size, steps_per_epoch=spe, epochs=epochs,
            mixed_precision=mixed_precision, recipe=recipe, data=train_data.name,
            num_classes=train_data.num_classes, input_shape=input_shape)
        if run_dir is not None:
            run["model_path"] = str(run_dir / "model.keras")
            run["log_dir"] = str(run_dir / "logs")
            model.save(run["model_path"])
            shutil.rmtree(run_dir / "backup", ignore_errors=True)
        history.run = run
        return model, history
    finally:
        keras.config.set_dtype_policy(previous_policy)


def evaluate(model, pipeline):
    """Accuracy of `model` (logits out) over every example of an evaluation `Pipeline`."""
    x, y = pipeline.arrays()
    logits = model.predict(x, batch_size=pipeline.batch_size, verbose=0)
    return float((np.asarray(logits).argmax(-1) == y.argmax(-1)).mean())
