"""Training recipes: one per zoo model family (and per model where it differs).

A `Recipe` holds everything `zoo.train.fit` needs besides the model and the data: the
optimizer, the learning-rate schedule (linear warmup, then cosine decay), weight decay,
label smoothing, augmentation and the default batch size and epoch count. Learning rates
are given for a batch of 256 and scaled linearly with the batch size actually used.

    recipe = zoo.train.get_recipe("seresnet50")
    recipe = dataclasses.replace(recipe, epochs=10)   # recipes are frozen: replace fields
"""

import dataclasses
import math

import keras

from zoo import registry

OPTIMIZERS = ("sgd", "adamw")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to train a model.

    Attributes:
        optimizer: `"sgd"` (momentum, Nesterov) or `"adamw"`.
        learning_rate: peak learning rate for a batch of `reference_batch_size`, scaled
            linearly to the batch size used.
        reference_batch_size: the batch size `learning_rate` is quoted for.
        batch_size: default batch size.
        epochs: default number of epochs.
        warmup_epochs: linear warmup length in epochs, capped at a tenth of the run.
        warmup_start: learning rate at step 0 as a fraction of the peak (never 0, so the
            first step already trains).
        min_lr_ratio: final learning rate as a fraction of the peak (cosine floor).
        weight_decay: decoupled weight decay (AdamW) or the SGD optimizer's
            `weight_decay`; biases and normalisation parameters are excluded.
        momentum: SGD momentum.
        label_smoothing: label smoothing of the cross-entropy.
        crop_padding: random-crop augmentation: pad by this fraction of the image side
            (reflect padding), then crop back at a random position; 0 disables it.
        flip: random horizontal flips (the data set can veto them, e.g. digits).
        clipnorm: global gradient-norm clipping, or None.
    """

    optimizer: str = "sgd"
    learning_rate: float = 0.1
    reference_batch_size: int = 256
    batch_size: int = 128
    epochs: int = 90
    warmup_epochs: float = 5.0
    warmup_start: float = 0.01
    min_lr_ratio: float = 0.0
    weight_decay: float = 5e-5
    momentum: float = 0.9
    label_smoothing: float = 0.1
    crop_padding: float = 0.125
    flip: bool = True
    clipnorm: float = None

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if not 0.0 <= self.crop_padding < 1.0:
            raise ValueError(f"crop_padding must be in [0, 1), got {self.crop_padding!r}")

    def peak_learning_rate(self, batch_size):
        return self.learning_rate * batch_size / self.reference_batch_size

    def warmup_steps(self, steps_per_epoch, total_steps):
        return int(min(round(self.warmup_epochs * steps_per_epoch), total_steps // 10))

    def schedule(self, batch_size, steps_per_epoch, total_steps):
        """The learning rate per optimizer step: linear warmup from `warmup_start * peak`
        to the peak, then cosine decay to `min_lr_ratio * peak` at `total_steps`."""
        peak = self.peak_learning_rate(batch_size)
        warmup = self.warmup_steps(steps_per_epoch, total_steps)
        decay = max(total_steps - warmup, 1)
        if warmup == 0:
            return keras.optimizers.schedules.CosineDecay(peak, decay, alpha=self.min_lr_ratio)
        return keras.optimizers.schedules.CosineDecay(
            peak * self.warmup_start,
            decay,
            alpha=self.min_lr_ratio,
            warmup_target=peak,
            warmup_steps=warmup,
        )

    def make_optimizer(self, batch_size, steps_per_epoch, total_steps, loss_scaling=False):
        """The optimizer, wrapped in `keras.optimizers.LossScaleOptimizer` for float16."""
        lr = self.schedule(batch_size, steps_per_epoch, total_steps)
        if self.optimizer == "adamw":
            optimizer = keras.optimizers.AdamW(
                learning_rate=lr, weight_decay=self.weight_decay, clipnorm=self.clipnorm
            )
        else:
            optimizer = keras.optimizers.SGD(
                learning_rate=lr,
                momentum=self.momentum,
                nesterov=True,
                weight_decay=self.weight_decay or None,
                clipnorm=self.clipnorm,
            )
        if loss_scaling:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        return optimizer


def exclude_from_weight_decay(optimizer, model):
    """No weight decay on biases, normalisation parameters and 1-D vectors (the usual
    practice: decaying BN scales only hurts)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    names = sorted({v.name for v in model.trainable_variables if len(v.shape) <= 1})
    if names:
        inner.exclude_from_weight_decay(var_names=names)


# Per family: the ResNet-style CNNs follow the classic ImageNet SGD recipe (Goyal et al.
# 2017 linear scaling, cosine, label smoothing); the self-attention hybrids (BoTNet,
# HaloNet, LambdaNet, GC-ResNet-t of timm's byobnet) and SAN train with AdamW, which is
# far less sensitive to the attention layers' scale at initialisation.
FAMILY_RECIPES = {
    "resnet": Recipe(),
    "residual_attention": Recipe(weight_decay=1e-4),
    "byob": Recipe(optimizer="adamw", learning_rate=1e-3, weight_decay=0.05, clipnorm=1.0),
    "san": Recipe(optimizer="adamw", learning_rate=1e-3, weight_decay=0.05, clipnorm=1.0),
    # MNIST-scale models: Adam-style, short, no flips (digits are not mirror symmetric);
    # the tasks already translate / clutter / rotate, so crops only jitter a little.
    "hard_attention": Recipe(
        optimizer="adamw",
        learning_rate=4e-3,
        batch_size=64,
        epochs=10,
        warmup_epochs=0.5,
        weight_decay=1e-4,
        label_smoothing=0.0,
        crop_padding=0.0,
        flip=False,
        clipnorm=5.0,
    ),
    "spatial_transformer": Recipe(
        optimizer="adamw",
        learning_rate=4e-3,
        batch_size=64,
        epochs=10,
        warmup_epochs=0.5,
        weight_decay=1e-4,
        label_smoothing=0.0,
        crop_padding=0.0,
        flip=False,
    ),
}

# What any model gets on the small offline data (MNIST and the tasks derived from it):
# a short AdamW run, light translation jitter, no flips.
SMALL_DATA_RECIPE = Recipe(
    optimizer="adamw",
    learning_rate=4e-3,
    batch_size=64,
    epochs=5,
    warmup_epochs=0.5,
    weight_decay=0.01,
    label_smoothing=0.1,
    crop_padding=0.1,
    flip=False,
    clipnorm=1.0,
)

# Digit scenes are small and few: a short AdamW run, no flips (digits are not mirror
# symmetric) and no crops (every epoch draws fresh scenes instead). Sized to train in about
# five minutes on one CPU core; with it, the background's loss weight is
# zoo.train.segmentation.DEFAULT_BACKGROUND_WEIGHT (tuning: docs/training.md).
SEGMENTATION_RECIPE = Recipe(
    optimizer="adamw",
    learning_rate=5e-3,
    reference_batch_size=16,
    batch_size=16,
    epochs=6,
    warmup_epochs=0.5,
    weight_decay=1e-4,
    label_smoothing=0.0,
    crop_padding=0.0,
    flip=False,
    clipnorm=1.0,
)
FAMILY_RECIPES["segmentation"] = SEGMENTATION_RECIPE

MODEL_RECIPES = {}


def get_recipe(name, small_data=False):
    """The recipe of a registered model (or of a custom model: the ResNet recipe).

    Args:
        name: a name from `zoo.list_models()`, or None for a custom model.
        small_data: True for the offline MNIST-derived data: the small-data recipe for
            backbones (the MNIST models' own recipes already are small).
    """
    if name is not None and name in MODEL_RECIPES:
        return MODEL_RECIPES[name]
    family = registry.get_spec(name).family if name is not None else "resnet"
    if family in ("hard_attention", "spatial_transformer", "segmentation"):
        return FAMILY_RECIPES[family]
    if small_data:
        return SMALL_DATA_RECIPE
    return FAMILY_RECIPES.get(family, FAMILY_RECIPES["resnet"])


def steps_per_epoch(num_examples, batch_size):
    """Full batches per epoch (the last partial batch is dropped), at least 1."""
    return max(num_examples // batch_size, 1) if num_examples >= batch_size else 1


def cosine_value(recipe, batch_size, spe, total, step):
    """The schedule's value at `step` in plain Python (for tests and summaries)."""
    peak = recipe.peak_learning_rate(batch_size)
    warmup = recipe.warmup_steps(spe, total)
    if step < warmup:
        start = peak * recipe.warmup_start
        return start + (peak - start) * step / warmup
    t = min(step - warmup, max(total - warmup, 1)) / max(total - warmup, 1)
    cosine = 0.5 * (1 + math.cos(math.pi * t))
    return peak * ((1 - recipe.min_lr_ratio) * cosine + recipe.min_lr_ratio)
