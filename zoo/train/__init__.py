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
from zoo.train.recipes import Recipe, get_recipe

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
    "StepBackupAndRestore",
    "TerminateOnNaNWithAdvice",
    "TrainConfig",
    "evaluate",
    "fit",
    "fit_config",
    "get_recipe",
    "load",
    "prepare_data",
    "resumable_fit",
]
