"""zoo: applications built from keras_attention: models by name with pretrained weights,
data sets and tasks, converters from timm, training and demos.

    import zoo
    zoo.list_models("*se*", pretrained=True)
    model = zoo.load("seresnet50", weights="imagenet")
    zoo.export("stn_cnn", "stn_cnn.tflite", format="litert", weights="rts_mnist")

`import zoo` is cheap: the registry (`list_models`, `model_info`) needs no Keras, and the
rest is imported on first use.
"""

import importlib

# numpy only; imported first because zoo.tasks and zoo.datasets import each other
from zoo import datasets
from zoo.registry import list_models, model_info

# public name -> module that defines it (imported on first access: it imports Keras)
_LAZY = {
    "build": "zoo.models",
    "load": "zoo.models",
    "preprocess_input": "zoo.models",
    "decode_predictions": "zoo.imagenet",
    "decode_segmentation": "zoo.labels",
    "export": "zoo.exporting",
    "WeightsError": "zoo.weights",
}

__all__ = [
    "build",
    "datasets",
    "decode_predictions",
    "decode_segmentation",
    "export",
    "list_models",
    "load",
    "model_info",
    "preprocess_input",
    "WeightsError",
]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'zoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
