"""zoo: applications built from keras_attention: models by name with pretrained weights,
data sets and tasks, converters from timm, training and demos.

    import zoo
    zoo.list_models(pretrained=True)
    model = zoo.load("seresnet50", weights="imagenet")
"""

from zoo import datasets
from zoo.imagenet import decode_predictions
from zoo.models import build, list_models, load, model_info, preprocess_input
from zoo.weights import WeightsError

__all__ = [
    "build",
    "datasets",
    "decode_predictions",
    "list_models",
    "load",
    "model_info",
    "preprocess_input",
    "WeightsError",
]
