"""Training semantic-segmentation models on digit scenes (`zoo.scenes.digit_scenes`).

    model, history, result = zoo.train.fit_segmentation(model, epochs=2, seed=0)
    result["mean_iou"]          # on the held-out scenes (test digits only)

A segmentation model takes `(B, H, W, 3)` images and returns `(B, H, W, num_classes)`
class probabilities (softmax; or logits with `from_logits=True`) at the input size. One
with an auxiliary head for training returns two such maps, the main one first: the loss
is the per-pixel cross-entropy (`PixelCrossEntropy`) of the main map plus `aux_weight` times
that of the auxiliary map (PSPNet's and DANet's deep supervision); the metric and the
evaluation use the main map only.

Mean IoU is computed the way `keras.metrics.MeanIoU` does it: from the confusion matrix
`C` (rows: true class, columns: predicted class, over all pixels), the IoU of class `c` is
`C[c, c] / (sum_j C[c, j] + sum_i C[i, c] - C[c, c])`, and the mean runs over the classes
that occur in the labels or in the predictions (an absent class, 0 / 0, is skipped).
"""

import time

import keras
import numpy as np

from zoo import scenes
from zoo.train import recipes

SEGMENTATION_RECIPE = recipes.SEGMENTATION_RECIPE
DEFAULT_AUX_WEIGHT = 0.4
# Loss weight of background pixels (digit strokes: 1) in `tools/train_segmentation.py`'s
# runs: background is ~92% of the pixels, and at weight 1 a short run predicts background
# everywhere (mIoU 0.08); at 0.1 the digits' identities are learnt.
DEFAULT_BACKGROUND_WEIGHT = 0.1
# The held-out scenes every recorded mIoU is measured on: digit_scenes("test", seed=0).
EVAL_SEED = 0


def confusion_matrix(labels, predictions, num_classes=scenes.NUM_CLASSES):
    """int64 `(num_classes, num_classes)` counts of pixels by (true class, predicted class).

    Args:
        labels: integer class ids, any shape.
        predictions: integer class ids of the same shape.
        num_classes: number of classes; ids must lie in `[0, num_classes)`.
    """
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    predictions = np.asarray(predictions).reshape(-1).astype(np.int64)
    if labels.shape != predictions.shape:
        raise ValueError(
            f"labels and predictions differ in size: {labels.size} vs {predictions.size}"
        )
    for what, ids in (("labels", labels), ("predictions", predictions)):
        if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
            raise ValueError(f"{what} must be class ids in [0, {num_classes})")
    counts = np.bincount(labels * num_classes + predictions, minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes)


def class_iou(confusion):
    """Per-class IoU from a confusion matrix; NaN for a class absent from both the labels
    and the predictions."""
    confusion = np.asarray(confusion, np.float64)
    true_positives = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - true_positives
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, true_positives / union, np.nan)


def mean_iou(confusion):
    """Mean of `class_iou` over the classes present (as `keras.metrics.MeanIoU`)."""
    iou = class_iou(confusion)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


@keras.saving.register_keras_serializable(package="zoo")
class PixelCrossEntropy(keras.losses.Loss):
    """Per-pixel categorical cross-entropy from integer labels `(B, H, W)` and a class map
    `(B, H, W, classes)`, averaged over pixels.

    The labels are one-hot encoded here rather than handed to Keras' sparse loss: with a
    softmax output, `SparseCategoricalCrossentropy` fails in the backward pass on the
    PyTorch backend (Keras 3.15, torch 2.x: "grad_input must be contiguous").

    Args:
        num_classes: number of classes.
        from_logits: `y_pred` holds logits rather than probabilities.
        class_weights: None, or one weight per class multiplying the loss of the pixels of
            that class (e.g. a background weight below 1 against its ~90% share of pixels).
    """

    def __init__(
        self,
        num_classes,
        from_logits=False,
        class_weights=None,
        name="pixel_crossentropy",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if class_weights is not None:
            class_weights = [float(w) for w in class_weights]
            if len(class_weights) != num_classes or min(class_weights) < 0:
                raise ValueError(
                    f"class_weights must be {num_classes} numbers >= 0, got {class_weights!r}"
                )
        self.num_classes = num_classes
        self.from_logits = from_logits
        self.class_weights = class_weights

    def call(self, y_true, y_pred):
        labels = keras.ops.cast(y_true, "int32")
        one_hot = keras.ops.one_hot(labels, self.num_classes)
        loss = keras.losses.categorical_crossentropy(one_hot, y_pred, from_logits=self.from_logits)
        if self.class_weights is not None:
            weights = keras.ops.convert_to_tensor(self.class_weights, loss.dtype)
            loss = loss * keras.ops.take(weights, labels)
        return loss

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "from_logits": self.from_logits,
            "class_weights": self.class_weights,
        }


def normalise(model, images):
    """Scene images in [0, 1] -> the model's input: a zoo model's `preprocessing`
    normalisation (its mean and std), else the images unchanged."""
    preprocessing = getattr(model, "preprocessing", None)
    if preprocessing is None:
        return np.asarray(images, np.float32)
    mean = np.asarray(preprocessing.mean, np.float32)
    std = np.asarray(preprocessing.std, np.float32)
    return (np.asarray(images, np.float32) - mean) / std


def _outputs(model):
    return list(model.outputs) if getattr(model, "outputs", None) else [None]


def compile_segmentation(
    model,
    *,
    recipe=SEGMENTATION_RECIPE,
    batch_size=None,
    steps_per_epoch=1,
    epochs=None,
    aux_weight=DEFAULT_AUX_WEIGHT,
    num_classes=scenes.NUM_CLASSES,
    from_logits=False,
    class_weights=None,
    jit_compile="auto",
):
    """Compile `model` with the recipe's optimizer (warmup + cosine over the whole run),
    per-pixel sparse categorical cross-entropy (plus `aux_weight` times the auxiliary
    map's, for a two-output model) and a mean-IoU metric on the main map."""
    if not isinstance(aux_weight, (int, float)) or aux_weight < 0:
        raise ValueError(f"aux_weight must be a number >= 0, got {aux_weight!r}")
    outputs = _outputs(model)
    if len(outputs) > 2:
        raise ValueError(
            f"a segmentation model has one output (or a main and an auxiliary one), "
            f"got {len(outputs)}"
        )
    batch_size = batch_size or recipe.batch_size
    epochs = epochs or recipe.epochs
    optimizer = recipe.make_optimizer(batch_size, steps_per_epoch, steps_per_epoch * epochs)
    recipes.exclude_from_weight_decay(optimizer, model)

    def loss():
        return PixelCrossEntropy(num_classes, from_logits=from_logits, class_weights=class_weights)

    def metric():
        return keras.metrics.MeanIoU(
            num_classes=num_classes, sparse_y_true=True, sparse_y_pred=False, name="mean_iou"
        )

    if len(outputs) == 2:
        model.compile(
            optimizer=optimizer,
            loss=[loss(), loss()],
            loss_weights=[1.0, float(aux_weight)],
            metrics=[[metric()], []],
            jit_compile=jit_compile,
        )
    else:
        model.compile(optimizer=optimizer, loss=loss(), metrics=[metric()], jit_compile=jit_compile)
    return model


def predict_classes(model, images, batch_size=32):
    """int32 `(N, H, W)` class ids: the argmax of the model's (main) map over `images`
    (already normalised for the model)."""
    batches = []
    for start in range(0, len(images), batch_size):
        outputs = model(images[start : start + batch_size], training=False)
        if isinstance(outputs, (list, tuple)):
            outputs = outputs[0]
        batches.append(np.argmax(keras.ops.convert_to_numpy(outputs), axis=-1).astype(np.int32))
    return np.concatenate(batches)


def bootstrap_standard_error(labels, predictions, num_classes=scenes.NUM_CLASSES, samples=1000):
    """The held-out set's sampling noise on one model's mean IoU: the standard deviation of
    the mean IoU over `samples` resamplings of the scenes (the first axis) with replacement
    (numpy's PCG64, seed 0)."""
    per_scene = np.stack(
        [
            confusion_matrix(true, predicted, num_classes)
            for true, predicted in zip(labels, predictions)
        ]
    )
    rng = np.random.default_rng(0)
    count = len(per_scene)
    values = [mean_iou(per_scene[rng.integers(0, count, count)].sum(0)) for _ in range(samples)]
    return float(np.std(values, ddof=1))


def evaluate_segmentation(model, images, labels, num_classes=scenes.NUM_CLASSES, batch_size=32):
    """Mean IoU, its bootstrap standard error over the scenes (`bootstrap_standard_error`),
    per-class IoU, pixel accuracy and the confusion matrix of `model` on `images` in [0, 1]
    (normalised here with `normalise`) against `labels`."""
    predictions = predict_classes(model, normalise(model, images), batch_size)
    confusion = confusion_matrix(labels, predictions, num_classes)
    return {
        "mean_iou": mean_iou(confusion),
        "mean_iou_standard_error": bootstrap_standard_error(labels, predictions, num_classes),
        "class_iou": [None if np.isnan(v) else float(v) for v in class_iou(confusion)],
        "pixel_accuracy": float(np.trace(confusion) / max(confusion.sum(), 1)),
        "confusion": confusion,
    }


class _Epochs(keras.utils.PyDataset):
    """Batches of freshly drawn training scenes: epoch `e` is the scenes of seed
    `first_seed + e`, normalised for `model`, in order (the scenes are random already)."""

    def __init__(self, model, batch_size, two_outputs, scene_kwargs, first_seed):
        super().__init__()
        self.model, self.two_outputs = model, two_outputs
        self.scene_kwargs, self.first_seed = scene_kwargs, first_seed
        self._epoch = 0
        self._load(0)
        self.batch_size = min(batch_size, len(self._labels))
        self.steps = max(len(self._labels) // self.batch_size, 1)

    def _load(self, epoch):
        images, labels, _ = scenes.digit_scenes(
            "train", seed=self.first_seed + epoch, **self.scene_kwargs
        )
        self._images, self._labels = normalise(self.model, images), labels

    def on_epoch_end(self):
        self._epoch += 1
        self._load(self._epoch)

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        labels = self._labels[rows]
        return self._images[rows], ((labels, labels) if self.two_outputs else labels)


def fit_segmentation(
    model,
    *,
    epochs=None,
    batch_size=None,
    seed=0,
    recipe=SEGMENTATION_RECIPE,
    aux_weight=DEFAULT_AUX_WEIGHT,
    scene_kwargs=None,
    num_test_scenes=None,
    from_logits=False,
    class_weights=None,
    verbose="auto",
    jit_compile="auto",
):
    """Train a segmentation model on digit scenes and measure it on held-out scenes.

    Epoch `e` trains on `digit_scenes("train", seed=1 + e, **scene_kwargs)` (fresh scenes
    of the 4,000 training digits every epoch, the same for every training seed); the
    evaluation uses `digit_scenes("test", seed=EVAL_SEED, **scene_kwargs)` (the 1,000
    held-out digits only).

    Args:
        model: a built Keras model, `(B, H, W, 3)` in, `(B, H, W, classes)` out (or two
            such outputs: main, auxiliary), H and W those of the scenes.
        epochs: default: the recipe's.
        batch_size: default: the recipe's.
        seed: seed of the initial weights' sampler (set before the caller builds the model,
            see `tools/train_segmentation.py`) and of Keras' shuffling / dropout.
        recipe: a `zoo.train.Recipe` (default `SEGMENTATION_RECIPE`).
        aux_weight: weight of the auxiliary map's loss (two-output models).
        scene_kwargs: `digit_scenes` arguments (`size`, `num_scenes`, ...), both splits.
        num_test_scenes: number of held-out scenes (default: `digit_scenes`' default).
        from_logits: the model outputs logits rather than probabilities.
        class_weights: per-class loss weights (see `PixelCrossEntropy`); default: none.
        verbose: `model.fit` verbosity.
        jit_compile: Keras' `compile` argument.

    Returns:
        `(model, history, result)`: `result` is `evaluate_segmentation`'s dict plus
        `seconds` (training time), `epochs`, `batch_size` and `steps_per_epoch`.
    """
    scene_kwargs = dict(scene_kwargs or {})
    epochs = epochs or recipe.epochs
    batch_size = batch_size or recipe.batch_size
    keras.utils.set_random_seed(seed)
    two_outputs = len(_outputs(model)) == 2
    data = _Epochs(model, batch_size, two_outputs, scene_kwargs, first_seed=1)
    expected = tuple(data._images.shape[1:])
    got = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else expected
    if any(g is not None and g != e for g, e in zip(got, expected)):
        raise ValueError(f"the model takes {got} inputs but the scenes are {expected}")
    batch_size, steps = data.batch_size, data.steps
    compile_segmentation(
        model,
        recipe=recipe,
        batch_size=batch_size,
        steps_per_epoch=steps,
        epochs=epochs,
        aux_weight=aux_weight,
        from_logits=from_logits,
        class_weights=class_weights,
        jit_compile=jit_compile,
    )
    start = time.perf_counter()
    history = model.fit(data, epochs=epochs, shuffle=False, verbose=verbose)
    seconds = time.perf_counter() - start
    test_kwargs = dict(scene_kwargs)
    if num_test_scenes is not None:
        test_kwargs["num_scenes"] = num_test_scenes
    elif "num_scenes" in test_kwargs:
        del test_kwargs["num_scenes"]
    images, labels, _ = scenes.digit_scenes("test", seed=EVAL_SEED, **test_kwargs)
    result = evaluate_segmentation(model, images, labels)
    result.update(seconds=seconds, epochs=epochs, batch_size=batch_size, steps_per_epoch=steps)
    return model, history, result
