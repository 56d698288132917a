"""Training zoo models: recipes, input pipelines, `fit`, and TensorBoard attention maps.

    import zoo.train
    model, history = zoo.train.fit("seresnet50", "mnist", epochs=2, image_size=32,
                                   mixed_precision="bfloat16", run_dir="runs/se")
"""

from zoo.train.callbacks import (AttentionMapTensorBoard, NonFiniteLossError,
                                 StepBackupAndRestore, TerminateOnNaNWithAdvice)
from zoo.train.data import ImageData, Pipeline, load
from zoo.train.fit import PRECISIONS, evaluate, fit
from zoo.train.recipes import Recipe, get_recipe

__all__ = [
    "AttentionMapTensorBoard",
    "ImageData",
    "NonFiniteLossError",
    "PRECISIONS",
    "Pipeline",
    "Recipe",
    "StepBackupAndRestore",
    "TerminateOnNaNWithAdvice",
    "evaluate",
    "fit",
    "get_recipe",
    "load",
]
