"""`zoo.load`, `zoo.build` and `zoo.list_models`: registered models with keras.applications
conventions (`include_top`, `input_shape`, `input_tensor`, `pooling`, `num_classes`,
`classifier_activation`), plus `features_only` for multi-scale feature maps by stage."""

import dataclasses
import pathlib
import warnings

import keras

from attention_zoo_common.checks import is_positive_int
from zoo import registry
from zoo import weights as weights_lib
from zoo.backbones.segmentation import ResizeLike  # noqa: F401  (registered for keras.saving)
from zoo.preprocessing import ImagePreprocessing
from zoo.registry import list_models, model_info  # noqa: F401  (keras-free; re-exported)

TASKS = ("classification", "segmentation")


@keras.saving.register_keras_serializable(package="zoo")
class ZooModel(keras.Model):
    """A functional `keras.Model` that carries its evaluation preprocessing.

    Built like any functional model (`ZooModel(inputs, outputs, name=...,
    preprocessing=...)`); `preprocessing` (a `zoo.preprocessing.ImagePreprocessing`, or its
    config) is part of `get_config`, so it survives `model.save()` and
    `keras.saving.load_model`.

    Args:
        preprocessing: the transform from image files to this model's input.
        task: what the output is: `"classification"` (class scores per image) or
            `"segmentation"` (class scores per pixel, `(batch, height, width, classes)`
            at the input's size).
    """

    def __init__(self, *args, preprocessing=None, task="classification", **kwargs):
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        super().__init__(*args, **kwargs)
        self.task = task
        if isinstance(preprocessing, dict):
            preprocessing = ImagePreprocessing.from_config(preprocessing)
        if preprocessing is not None and not isinstance(preprocessing, ImagePreprocessing):
            raise ValueError(
                f"preprocessing must be an ImagePreprocessing or its config, got {preprocessing!r}"
            )
        self.preprocessing = preprocessing

    def preprocess_input(self, images):
        """Pixels in [0, 255] at the model's input size -> the model's input (scaled to
        [0, 1], normalised with the weights' mean and std). For image files (resize and
        crop as timm evaluates), use `model.preprocessing.load(paths)`."""
        return self.preprocessing.normalize(images)

    def get_config(self):
        config = super().get_config()
        if self.preprocessing is not None:
            config["preprocessing"] = self.preprocessing.get_config()
        config["task"] = self.task
        return config


class RandomWeightsWarning(UserWarning):
    """`zoo.load(name)` returned random weights of a model that has pretrained ones."""


_WARNED_RANDOM = set()


def _warn_random_weights(spec):
    """Once per model and process, as keras.applications users would otherwise not notice."""
    if not spec.weights or spec.name in _WARNED_RANDOM:
        return
    _WARNED_RANDOM.add(spec.name)
    warnings.warn(
        f"zoo.load({spec.name!r}) returns random weights; pretrained ones exist: "
        f"weights={spec.default_weights!r} (tags: "
        f"{', '.join(entry.tag for entry in spec.weights)}). zoo.build() gives random weights "
        f"without this warning.",
        RandomWeightsWarning,
        stacklevel=3,
    )


def _check_input_shape(spec, input_shape):
    if input_shape is None:
        return tuple(spec.default_input_shape)
    input_shape = tuple(input_shape)
    if len(input_shape) != len(spec.default_input_shape):
        axes = "(frames, height, width, channels)" if spec.family == "video" else None
        raise ValueError(
            f"input_shape must be {axes or '(height, width, channels)'}, got {input_shape}"
        )
    if spec.dynamic_size is not True and None in input_shape[-3:-1]:
        raise ValueError(
            f"input_shape: {spec.name} needs a fixed height and width "
            f"({spec.dynamic_size}), got {input_shape}"
        )
    return input_shape


def _check_head_args(pooling, include_top, num_classes):
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    if include_top and not is_positive_int(num_classes):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")


def _inputs(spec, input_shape, input_tensor):
    if input_tensor is None:
        return keras.Input(_check_input_shape(spec, input_shape), name="image")
    if input_shape is not None and tuple(input_tensor.shape[1:]) != tuple(input_shape):
        raise ValueError(
            f"input_shape {tuple(input_shape)} disagrees with input_tensor's shape "
            f"{tuple(input_tensor.shape)}"
        )
    _check_input_shape(spec, tuple(input_tensor.shape[1:]))
    return input_tensor


def _classifier(spec, x, num_classes):
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    # logits (and probabilities) in float32 under mixed precision
    return keras.layers.Dense(num_classes, name=spec.classifier_name, dtype="float32")(x)


def _head(spec, features, include_top, pooling, num_classes, classifier_activation, logits=None):
    """The output tensor for the requested head; `logits` reuses an existing classifier."""
    x = list(features.values())[-1]
    if include_top:
        x = _classifier(spec, x, num_classes) if logits is None else logits
        if classifier_activation is not None:
            x = keras.layers.Activation(classifier_activation, name="predictions", dtype="float32")(
                x
            )
        return x
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name="global_pool")(x)
    return x


def _preprocessing(spec, tag, input_shape):
    """The weights' preprocessing at the input's size (the weights' own if it is dynamic);
    the size of each frame for a video model's `(frames, height, width, channels)`."""
    size = tuple(input_shape[-3:-1])
    return spec.preprocessing(tag, size=None if None in size else size, channels=input_shape[-1])


def _zoo_model(spec, tag, inputs, outputs, name):
    return ZooModel(
        inputs, outputs, name=name, preprocessing=_preprocessing(spec, tag, tuple(inputs.shape[1:]))
    )


def _attach_preprocessing(model, spec, tag, input_shape):
    """A complete model (kind "model") with its preprocessing: a functional one becomes a
    `ZooModel` over the same graph; a subclassed one gets the attributes (not saved)."""
    preprocessing = _preprocessing(spec, tag, input_shape)
    if type(model).__name__ == "Functional":
        return ZooModel(model.input, model.output, name=model.name, preprocessing=preprocessing)
    model.preprocessing = preprocessing
    model.preprocess_input = preprocessing.normalize
    return model


def build(
    name,
    *,
    include_top=True,
    input_shape=None,
    input_tensor=None,
    pooling=None,
    num_classes=None,
    classifier_activation="softmax",
    features_only=False,
    **body_kwargs,
):
    """Build a registered architecture with freshly initialised weights (see `load`)."""
    return _build(
        registry.get_spec(name),
        None,
        include_top=include_top,
        input_shape=input_shape,
        input_tensor=input_tensor,
        pooling=pooling,
        num_classes=num_classes,
        classifier_activation=classifier_activation,
        features_only=features_only,
        **body_kwargs,
    )


def _build(
    spec,
    source,
    *,
    include_top,
    input_shape,
    input_tensor,
    pooling,
    num_classes,
    classifier_activation,
    features_only,
    **body_kwargs,
):
    """The one build path: the model `spec` names with the requested head, and the weights
    of `source` (a `WeightsSource`, or None for random initialisation) applied to it.

    Keras weights load into the model as built. A converted checkpoint (timm, pytorchcv)
    loads into the checkpoint's own architecture (the body and the checkpoint's classifier)
    before the requested head is cut from it; the layers are shared, so the requested model
    holds the loaded weights.
    """
    if spec.kind != "backbone" and source is not None and source.converts:
        # converters map timm / pytorchcv module paths, which only the backbones and the
        # registered segmentation checkpoints mirror
        if spec.kind != "segmentation" or source.tagged is None:
            raise ValueError(f"{spec.name} loads Keras weights only (.weights.h5, .keras)")
    tag = source.tag if source is not None else None
    if num_classes is None:
        num_classes = spec.num_classes if source is None else source.num_classes(spec.num_classes)
    if spec.kind == "model":
        if input_tensor is not None or pooling is not None or features_only or not include_top:
            raise ValueError(
                f"{spec.name} is a complete model: include_top, input_tensor, pooling and "
                f"features_only do not apply"
            )
        _check_head_args(None, True, num_classes)
        input_shape = _check_input_shape(spec, input_shape)
        model = spec.body(
            input_shape=input_shape,
            num_classes=num_classes,
            classifier_activation=classifier_activation,
            **body_kwargs,
        )
        model = _attach_preprocessing(model, spec, tag, input_shape)
        if source is not None:
            source.load_into(model)
        return model
    if spec.kind == "segmentation":
        if pooling is not None or features_only or not include_top:
            raise ValueError(
                f"{spec.name} is a segmentation model: include_top, pooling and "
                f"features_only do not apply"
            )
        _check_head_args(None, True, num_classes)
        inputs = _inputs(spec, input_shape, input_tensor)
        converts = source is not None and source.converts
        aux_head = body_kwargs.pop("aux_head", False)

        def body(classes, aux):
            return spec.body(
                inputs,
                num_classes=classes,
                classifier_activation=classifier_activation,
                aux_head=aux,
                **body_kwargs,
            )

        if converts:
            # a converted checkpoint loads into its own architecture (its classes, auxiliary
            # outputs included), of which the requested outputs are kept
            checkpoint_classes = source.checkpoint_classes()
            loaded = body(checkpoint_classes, True)
            full = keras.Model(inputs, loaded, name=spec.name)
            source.load_into(full, cache_key="x".join(str(d) for d in inputs.shape[1:3]))
            if num_classes == checkpoint_classes:
                outputs = loaded if aux_head else loaded["segmentation"]
            else:  # fine-tuning: everything but the new classifiers from the checkpoint
                outputs = body(num_classes, aux_head)
                _copy_all_but_classifiers(full, keras.Model(inputs, outputs), num_classes)
        else:
            outputs = body(num_classes, aux_head)
        preprocessing = _preprocessing(spec, tag, tuple(inputs.shape[1:]))
        model = ZooModel(
            inputs, outputs, name=spec.name, preprocessing=preprocessing, task="segmentation"
        )
        if source is not None and not converts:
            source.load_into(model)
        return model
    _check_head_args(pooling, include_top, num_classes)
    inputs = _inputs(spec, input_shape, input_tensor)
    features = spec.body(inputs, **body_kwargs)
    logits = None
    if source is not None and source.converts:
        last = list(features.values())[-1]
        checkpoint_classes = source.checkpoint_classes()
        logits = _classifier(spec, last, checkpoint_classes) if checkpoint_classes else None
        full = keras.Model(inputs, logits if logits is not None else last, name=spec.name)
        source.load_into(full, cache_key="x".join(str(d) for d in tuple(inputs.shape[1:3])))
        if not (include_top and checkpoint_classes == num_classes):
            logits = None
    if features_only:
        return _zoo_model(spec, tag, inputs, dict(features), f"{spec.name}_features")
    outputs = _head(
        spec, features, include_top, pooling, num_classes, classifier_activation, logits=logits
    )
    model = _zoo_model(spec, tag, inputs, outputs, spec.name)
    if source is not None and not source.converts:
        source.load_into(model)
    return model


def _copy_all_but_classifiers(source, target, num_classes):
    """Copy the weights of `source` into the same-named layers of `target`, which differs
    only in its classifiers (the convolutions to `num_classes` scores): those keep their
    fresh initialisation."""
    for layer in target.layers:
        if not layer.weights:
            continue
        weights = source.get_layer(layer.name).get_weights()
        if [w.shape for w in weights] == [tuple(w.shape) for w in layer.weights]:
            layer.set_weights(weights)
        elif not (isinstance(layer, keras.layers.Conv2D) and layer.filters == num_classes):
            raise ValueError(
                f"layer {layer.name!r} differs from the checkpoint's architecture beyond "
                f"its classifiers"
            )


# checkpoints of PyTorch libraries, converted on load into the architecture they mirror
CONVERTED_FORMATS = ("safetensors", "pytorchcv")


@dataclasses.dataclass(frozen=True)
class WeightsSource:
    """Where `zoo.load` takes weights from: a registry entry (`tagged`) or a local file
    (`path`). Keras files (`.weights.h5`, `.keras`) hold this exact architecture; timm
    safetensors and pytorchcv checkpoints are converted (`converts`)."""

    spec: registry.ModelSpec
    tagged: registry.WeightsSpec | None = None
    path: pathlib.Path | None = None

    @classmethod
    def resolve(cls, spec, weights):
        """The source of a `weights=` argument (None for random initialisation)."""
        if weights is None:
            return None
        if isinstance(weights, pathlib.PurePath):
            weights = str(weights)
        if not isinstance(weights, str):
            raise ValueError(f"weights must be None, a tag or a file path, got {weights!r}")
        tagged = spec.weights_for(weights)
        if tagged is not None:
            return cls(spec, tagged=tagged)
        if weights.endswith(weights_lib.SUFFIXES):
            if not pathlib.Path(weights).is_file():
                raise FileNotFoundError(f"weights file {weights!r} does not exist")
            return cls(spec, path=pathlib.Path(weights))
        tags = [entry.tag for entry in spec.weights]
        raise ValueError(
            f"unknown weights {weights!r} for {spec.name}: "
            + (f"tags are {', '.join(tags)}" if tags else "it has no pretrained weights")
            + f"; or pass a path ending in {', '.join(weights_lib.SUFFIXES)}"
        )

    @property
    def tag(self):
        return self.tagged.tag if self.tagged is not None else None

    @property
    def converts(self):
        if self.tagged is not None:
            return self.tagged.file_format in CONVERTED_FORMATS
        return weights_lib.weights_format(self.path) == "safetensors"

    def checkpoint_classes(self):
        """The classifier width of a converted checkpoint (None: it has no classifier)."""
        if self.tagged is not None:
            return self.tagged.num_classes
        return _safetensors_classes(self.path, self.spec)

    def num_classes(self, default):
        """The classifier width to build when `num_classes=None`: the weights' own, else
        `default` (the registry's)."""
        if self.converts:
            return self.checkpoint_classes() or default
        return self.tagged.num_classes if self.tagged is not None else default

    def load_into(self, model, cache_key=None):
        """Load the weights into `model` (for a converted checkpoint: its architecture,
        body and classifier; the conversion is cached per input size `cache_key`)."""
        spec, tagged, path = self.spec, self.tagged, self.path
        if tagged is not None:
            if tagged.file_format in CONVERTED_FORMATS:
                converted = (
                    weights_lib.cache_dir() / f"{spec.name}.{tagged.tag}.{cache_key}.weights.h5"
                )
                if converted.is_file():
                    try:
                        weights_lib.load_keras_weights(model, converted)
                        return
                    except weights_lib.WeightsError:
                        converted.unlink()  # stale conversion (architecture changed): redo it
                path = weights_lib.fetch(spec.name, tagged)
                if tagged.file_format == "pytorchcv":
                    weights_lib.load_pytorchcv(model, path, spec.name)
                else:
                    weights_lib.load_safetensors(model, path)
                weights_lib.save_weights_atomically(model, converted)
                return
            path = weights_lib.fetch(spec.name, tagged)
        if weights_lib.weights_format(path) == "safetensors":
            weights_lib.load_safetensors(model, path)
        else:
            weights_lib.load_keras_weights(model, path)


def load(
    name,
    weights=None,
    *,
    include_top=True,
    input_shape=None,
    input_tensor=None,
    pooling=None,
    num_classes=None,
    classifier_activation="softmax",
    features_only=False,
    **body_kwargs,
):
    """A registered model, optionally with weights.

    Args:
        name: a name from `list_models()`.
        weights: None (random initialisation; a `RandomWeightsWarning`, once per model,
            when pretrained weights exist), a tag from the registry (`"imagenet"`, ...), or
            a path to a timm `.safetensors` checkpoint, a Keras `.weights.h5` file or a
            `.keras` model, detected by suffix.
        include_top: add global average pooling and the classifier.
        input_shape: (height, width, channels); default: the weights' training size, else
            the registry's default. Relative position tables are resized for other sizes.
        input_tensor: a Keras tensor to build the model on.
        pooling: without the top, `None` (feature map), `"avg"` or `"max"`.
        num_classes: classifier width; with pretrained weights of another width, the
            backbone is loaded and a new classifier is initialised (fine-tuning).
        classifier_activation: activation of the top (`None` for logits).
        features_only: return a model whose output is a dict of feature maps by stage.
        **body_kwargs: architecture options of the model family.

    Returns:
        A `ZooModel` (a functional `keras.Model`) whose `preprocessing` turns image files
        into its input as timm evaluates the weights (`model.preprocessing.load(paths)`),
        and whose `preprocess_input(images)` normalises pixels in [0, 255] already at the
        input size. Both are saved with the model.
    """
    spec = registry.get_spec(name)
    source = WeightsSource.resolve(spec, weights)
    if source is not None and source.tagged is not None:
        if input_shape is None and input_tensor is None:
            # a video model's frame count is its registered one
            frames = spec.default_input_shape[:-3]
            input_shape = (*frames, *source.tagged.input_size, spec.default_input_shape[-1])
        body_kwargs = _with_architecture(source.tagged, body_kwargs)
    model = _build(
        spec,
        source,
        include_top=include_top,
        input_shape=input_shape,
        input_tensor=input_tensor,
        pooling=pooling,
        num_classes=num_classes,
        classifier_activation=classifier_activation,
        features_only=features_only,
        **body_kwargs,
    )
    if source is None:
        _warn_random_weights(spec)
    return model


def _with_architecture(tagged, body_kwargs):
    """`body_kwargs` plus the architecture options the tagged weights were saved with."""
    for key, value in tagged.architecture.items():
        if key in body_kwargs and body_kwargs[key] != value:
            raise ValueError(
                f"weights={tagged.tag!r} were saved from {key}={value!r}; got "
                f"{key}={body_kwargs[key]!r}"
            )
    return {**tagged.architecture, **body_kwargs}


def _safetensors_classes(path, spec):
    """The classifier width stored in a timm checkpoint (None if it has no classifier)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as checkpoint:
            key = spec.classifier_name.replace("-", ".") + ".bias"
            if key in checkpoint.keys():  # noqa: SIM118  (safe_open has no __contains__)
                return int(checkpoint.get_slice(key).get_shape()[0])
    except Exception as error:
        raise weights_lib.WeightsError(
            f"{path} is not a readable safetensors file: {error}"
        ) from None
    return None


def preprocess_input(images, name, weights=None):
    """Images with values in [0, 255] (channels last, at the input size) -> the input
    `name`'s weights expect: scaled to [0, 1], minus the weights' mean, divided by their
    std (the registry's own where the weights record none)."""
    spec = registry.get_spec(name)
    return spec.preprocessing(weights).normalize(images)


def architecture_summary(model):
    """One line per weight-holding layer, in order: name, class, weight shapes. Keras weight
    files are keyed by class and creation order, so this list is what a pretrained file is
    tied to (see tools/pin_architectures.py)."""
    lines = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if layer.weights and not layer._layers:
            shapes = ",".join("x".join(str(d) for d in w.shape) for w in layer.weights)
            lines.append(
                f"{layer.path if hasattr(layer, 'path') else layer.name}:"
                f"{type(layer).__name__}:{shapes}"
            )
    return lines
