"""Models registered by name, with the weights each one can load.

A *body* function is registered under a name, either by reference (how zoo/catalog.py
registers the zoo's own models, so that listing them imports no Keras)::

    register_model("seresnet50", body="zoo.backbones.resnet:seresnet50", ...)

or as a decorator::

    @register_model("my_resnet", weights=[...])
    def my_resnet(inputs, **kwargs):
        ...
        return {"stem": x0, "stage1": x1, ..., "stage4": x4}   # ordered feature maps

A complete model that does not fit that mould (a recurrent glimpse model, a spatial
transformer network) registers a *model* function instead, with `kind="model"`: it takes
`input_shape`, `num_classes`, `classifier_activation` and its own keyword arguments and
returns a `keras.Model`.

The body maps the input tensor to its feature maps by stage (the last one feeds the head),
with layer names equal to the timm module paths (`-` for `.`) where a timm counterpart exists.
The zoo adds the keras.applications head (`include_top`, `pooling`, `num_classes`,
`classifier_activation`) itself, so every model gets the same conventions.
"""

import dataclasses
import difflib
import fnmatch
import importlib
from collections.abc import Callable

from zoo.preprocessing import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocessing


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One number measured for a checkpoint: `value` in `unit`, what was measured
    (`quantity`) and where the number comes from (`source`)."""

    value: float
    unit: str
    quantity: str
    source: str


@dataclasses.dataclass(frozen=True)
class WeightsSpec:
    """One set of weights for a registered model.

    Attributes:
        tag: what users pass as `weights=` (`"imagenet"`, `"translated_mnist"`, ...).
        url: where the file comes from: `hf://<owner>/<repo>/<file>` (the Hugging Face
            Hub through `huggingface_hub`, at `revision`, so timm users' cached files are
            reused), `https://`, `file://`, or `package://<path>` for files shipped inside
            this package.
        file_format: `"safetensors"` (a timm state dict, converted on load),
            `"pytorchcv"` (a pytorchcv `.pth` state dict, usually inside a `.zip`, converted
            on load by zoo/convert/pytorchcv.py) or `"weights.h5"` (Keras weights of this
            exact architecture).
        sha256: hex digest of the file, or None where the source publishes none.
        input_size: (height, width) the weights were trained / evaluated at.
        num_classes: classifier width of the checkpoint.
        trained_on: data set and recipe, in words.
        metric: measured metric with its source, in words.
        source: upstream name (e.g. `timm/seresnet50.a1_in1k`).
        architecture: the model function's keyword arguments the file was saved with,
            where they differ from its defaults (`zoo.load` builds the model with them).
        preprocessing: the evaluation transform the weights were measured with (a
            `zoo.preprocessing.ImagePreprocessing` at `input_size`; timm's `pretrained_cfg`
            for timm checkpoints), or None for the zoo's default (squash to the input
            size, the model's mean and std).
        revision: the Hub revision (branch, tag or commit) of an `hf://` file.
        sha1: SHA-1 hex digest of the file where the source records that instead
            (pytorchcv); of the unpacked checkpoint when `url` is a `.zip`, as there.
        labels: the label set of a segmentation checkpoint's classes (`"cityscapes"`:
            names and colours in zoo/labels.py), or None.
    """

    tag: str
    url: str
    file_format: str
    sha256: str | None
    input_size: tuple
    num_classes: int
    trained_on: str
    metric: str
    source: str = ""
    architecture: dict = dataclasses.field(default_factory=dict)
    preprocessing: ImagePreprocessing | None = None
    revision: str = "main"
    sha1: str | None = None
    labels: str | None = None

    def __post_init__(self):
        if self.preprocessing is not None and self.preprocessing.size != tuple(self.input_size):
            raise ValueError(
                f"weights {self.tag!r}: preprocessing size "
                f"{self.preprocessing.size} differs from input_size "
                f"{tuple(self.input_size)}"
            )
        if self.labels is not None:
            from zoo.labels import class_names

            if len(class_names(self.labels)) != self.num_classes:
                raise ValueError(
                    f"weights {self.tag!r}: the {self.labels} label set has "
                    f"{len(class_names(self.labels))} classes, num_classes is {self.num_classes}"
                )


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered model: its body function and what goes around it."""

    name: str
    body: Callable
    default_input_shape: tuple = (224, 224, 3)
    num_classes: int = 1000
    # timm's model name when the architecture mirrors one exactly (the converter relies on
    # the layer names), else None
    timm_name: str | None = None
    # name of the classifier Dense layer (the timm module path of the final Linear, with
    # "-" for ".": zoo/backbones/common.py)
    classifier_name: str = "fc"
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    # the input sizes the architecture accepts: "any", or the reason it needs a fixed size
    # (position tables of relative self-attention)
    dynamic_size: object = True
    weights: tuple = ()
    description: str = ""
    family: str = ""
    # "backbone": `body` returns feature maps and the zoo adds the head; "model": `body`
    # builds the whole keras.Model (`body(input_shape=..., num_classes=..., **kwargs)`);
    # "segmentation": `body(inputs, num_classes=..., classifier_activation=..., **kwargs)`
    # returns per-pixel scores at the input size (zoo/backbones/segmentation.py)
    kind: str = "backbone"

    def weights_for(self, tag):
        for spec in self.weights:
            if spec.tag == tag:
                return spec
        return None

    def preprocessing(self, tag=None, size=None, channels=None):
        """The evaluation transform of the weights `tag` (default: the first weights that
        record one, so a model trained from scratch is evaluated as its pretrained sibling
        is) at `size` (default: the weights' input size), else the zoo's default: the
        whole image squashed to `size`, this model's mean and std. For another channel
        count than the statistics' (grayscale MNIST through an RGB architecture), every
        channel is normalised with the mean of the statistics, as `zoo.train` does."""
        from zoo.preprocessing import default_preprocessing

        entries = [self.weights_for(tag)] if tag is not None else list(self.weights)
        recorded = next(
            (
                entry.preprocessing
                for entry in entries
                if entry is not None and entry.preprocessing is not None
            ),
            None,
        )
        if recorded is None:
            recorded = default_preprocessing(
                size or self.default_input_shape[:2], self.mean, self.std
            )
        elif size is not None:
            recorded = recorded.with_size(size)
        if channels is not None and channels != recorded.channels:
            mean = sum(recorded.mean) / len(recorded.mean)
            std = sum(recorded.std) / len(recorded.std)
            recorded = dataclasses.replace(recorded, mean=(mean,) * channels, std=(std,) * channels)
        return recorded

    @property
    def default_weights(self):
        """The tag the command line loads when no `--weights` is given: `"imagenet"` where
        registered, else the first registered tag; None for a model without weights."""
        if self.weights_for("imagenet") is not None:
            return "imagenet"
        return self.weights[0].tag if self.weights else None


_REGISTRY = {}


class _BodyReference:
    """A body function named `"module:attribute"`, imported on its first call."""

    def __init__(self, reference):
        self.reference = reference

    def __call__(self, *args, **kwargs):
        module, attribute = self.reference.split(":")
        return getattr(importlib.import_module(module), attribute)(*args, **kwargs)

    def __repr__(self):
        return f"<body {self.reference}>"


def register_model(name, body=None, **spec_kwargs):
    """Register a body function under `name` (see the module docstring): with `body` (a
    function or `"module:attribute"`) directly, else as a decorator."""

    def decorate(body):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        weights = tuple(spec_kwargs.pop("weights", ()))
        function = _BodyReference(body) if isinstance(body, str) else body
        _REGISTRY[name] = ModelSpec(name=name, body=function, weights=weights, **spec_kwargs)
        return body

    return decorate if body is None else decorate(body)


def _import_catalog():
    import zoo.catalog  # noqa: F401  (registers the zoo's models on first import)


def get_spec(name):
    _import_catalog()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3)
        raise ValueError(
            f"unknown model {name!r}; "
            + (
                f"did you mean {' or '.join(repr(c) for c in close)}?"
                if close
                else f"registered models: {', '.join(sorted(_REGISTRY))}"
            )
        ) from None


def all_specs():
    _import_catalog()
    return dict(sorted(_REGISTRY.items()))


def list_models(pattern=None, pretrained=None):
    """Names of the registered models, sorted.

    Args:
        pattern: a shell-style wildcard (`"*se*"`, like `timm.list_models`), or None for all.
        pretrained: None for all; True for those with at least one set of weights; False
            for those without.
    """
    if pattern is not None and not isinstance(pattern, str):
        raise ValueError(
            f"pattern must be a string such as '*se*' (pretrained= is the "
            f"keyword for weights), got {pattern!r}"
        )
    return [
        name
        for name, spec in all_specs().items()
        if (pattern is None or fnmatch.fnmatchcase(name, pattern))
        and (pretrained is None or bool(spec.weights) == bool(pretrained))
    ]


def model_info(name):
    """The registry entry of `name` (a `ModelSpec`)."""
    return get_spec(name)
