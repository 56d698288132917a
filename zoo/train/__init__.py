"""Training zoo models: recipes, input pipelines, `fit`, and TensorBoard attention maps.

import zoo.train
model, history = zoo.train.fit("seresnet50", "mnist", epochs=2, image_size=32,
                               mixed_precision="bfloat16", run_dir="runs/se")
"""

from zoo.train.callbacks import (
    AttentionMapTensorBoard,
    NonFiniteLossError,
    StepBackupAndRestore,
    TerminateOnNaNWithAdvice,
)
from zoo.train.data import ImageData, Pipeline, load
from zoo.train.fit import (
    PRECISIONS,
    PreparedData,
    RunFolder,
    RunFolderError,
    TrainConfig,
    evaluate,
    fit,
    fit_config,
    prepare_data,
    resumable_fit,
)
from zoo.train.recipes import SEGMENTATION_RECIPE, Recipe, get_recipe
from zoo.train.segmentation import evaluate_segmentation, fit_segmentation

__all__ = [
    "AttentionMapTensorBoard",
    "ImageData",
    "NonFiniteLossError",
    "PRECISIONS",
    "Pipeline",
    "PreparedData",
    "Recipe",
    "RunFolder",
    "RunFolderError",
    "SEGMENTATION_RECIPE",
    "StepBackupAndRestore",
    "TerminateOnNaNWithAdvice",
    "TrainConfig",
    "evaluate",
    "evaluate_segmentation",
    "fit",
    "fit_config",
    "fit_segmentation",
    "get_recipe",
    "load",
    "prepare_data",
    "resumable_fit",
]
