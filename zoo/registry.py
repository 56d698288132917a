"""Models registered by name, with the weights each one can load.

A backbone module registers a *body* function under a name::

    @register_model("seresnet50", timm_name="seresnet50", weights=[...])
    def seresnet50(inputs, **kwargs):
        ...
        return {"stem": x0, "stage1": x1, ..., "stage4": x4}   # ordered feature maps

A complete model that does not fit that mould (a recurrent glimpse model, a spatial
transformer network) registers a *model* function instead, with `kind="model"`: it takes
`input_shape`, `num_classes` and its own keyword arguments and returns a `keras.Model`.

The body maps the input tensor to its feature maps by stage (the last one feeds the head),
with layer names equal to the timm module paths (`-` for `.`) where a timm counterpart exists. The zoo
adds the keras.applications head (`include_top`, `pooling`, `num_classes`,
`classifier_activation`) itself, so every model gets the same conventions.
"""

import dataclasses
from typing import Callable, Optional

from zoo.preprocessing import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocessing


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
    """

    tag: str
    url: str
    file_format: str
    sha256: Optional[str]
    input_size: tuple
    num_classes: int
    trained_on: str
    metric: str
    source: str = ""
    architecture: dict = dataclasses.field(default_factory=dict)
    preprocessing: Optional[ImagePreprocessing] = None
    revision: str = "main"
    sha1: Optional[str] = None

    def __post_init__(self):
        if self.preprocessing is not None and self.preprocessing.size != tuple(self.input_size):
            raise ValueError(f"weights {self.tag!r}: preprocessing size "
                             f"{self.preprocessing.size} differs from input_size "
                             f"{tuple(self.input_size)}")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered model: its body function and what goes around it."""

    name: str
    body: Callable
    default_input_shape: tuple = (224, 224, 3)
    num_classes: int = 1000
    # timm's model name when the architecture mirrors one exactly (the converter relies on
    # the layer names), else None
    timm_name: Optional[str] = None
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
    # builds the whole keras.Model (`body(input_shape=..., num_classes=..., **kwargs)`)
    kind: str = "backbone"

    def weights_for(self, tag):
        for spec in self.weights:
            if spec.tag == tag:
                return spec
        return None

    def preprocessing(self, tag=None, size=None):
        """The evaluation transform of the weights `tag` (default: the first weights that
        record one, so a model trained from scratch is evaluated as its pretrained sibling
        is) at `size` (default: the weights' input size), else the zoo's default: the
        whole image squashed to `size`, this model's mean and std."""
        entries = [self.weights_for(tag)] if tag is not None else list(self.weights)
        for entry in entries:
            if entry is not None and entry.preprocessing is not None:
                recorded = entry.preprocessing
                return recorded if size is None else recorded.with_size(size)
        from zoo.preprocessing import default_preprocessing

        return default_preprocessing(size or self.default_input_shape[:2], self.mean, self.std)


_REGISTRY = {}


def register_model(name, **spec_kwargs):
    """Decorator registering a body function under `name` (see the module docstring)."""

    def decorate(body):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        weights = tuple(spec_kwargs.pop("weights", ()))
        _REGISTRY[name] = ModelSpec(name=name, body=body, weights=weights, **spec_kwargs)
        return body

    return decorate


def _import_backbones():
    # Registration happens at import; import every backbone module once.
    import zoo.backbones  # noqa: F401


def get_spec(name):
    _import_backbones()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; registered models: {', '.join(sorted(_REGISTRY))}"
        ) from None


def all_specs():
    _import_backbones()
    return dict(sorted(_REGISTRY.items()))
