"""SavedModel export of any Keras 3 model for TensorFlow Serving.

`export(model, base_path, name)` writes `base_path/<name>/<version>/` with tag `serve` and a
`serving_default` signature whose inputs carry the Keras input names and whose outputs are
float32 (`output_0`, ... or the model's own keys when it returns a dict), also under mixed
precision. The version folder appears atomically: the SavedModel is written into a
temporary sibling folder, fsynced and renamed into place, so a failed export leaves nothing
behind (a killed one's temporary folder is removed by the next export); the version folder
gets the usual permissions (umask), readable by a server running as another user.

On the JAX backend the model goes through Keras' ExportArchive (jax2tf) and gets the same
`serving_default`; the encoded-image signature needs the TensorFlow backend.

`image_signature=True` (or a dict of options, see `export`) adds a second signature for
encoded images: input `images` (`DT_STRING [-1]`, JPEG/PNG/GIF/BMP bytes; REST clients send
`{"b64": ...}`), decoded, resized and preprocessed in the graph, outputs `probabilities`
(float32), and the top-k `classes` (int32 indices) and `scores` (float32). A model that
carries its own preprocessing (a zoo model: `model.preprocessing.decode_tf`, timm's
evaluation resize and crop) is decoded with it; others are stretched to the input size.

`attention_signature=True` (or a list of layer names) adds the signatures `attention` and,
with the image signature, `serving_images_attention`: the same inputs, the same outputs plus
the attention map of each attention layer (see `serving.attention`).
A segmentation model (`task="segmentation"`, or a model whose `task` attribute says so) gets
per-pixel `class_ids` and `probabilities` instead, and an image signature that returns the
class map at each image's size (`serving.segmentation`).

`warmup_requests=[...]` writes TF Serving warmup records (`assets.extra/tf_serving_warmup_requests`,
see `serving.warmup`) into the version before it appears.

A model whose graph keeps a function compiled with XLA (`jit_compile=True`; Keras' TensorFlow
backend compiles grouped convolutions that way) gets an `XlaCompilationWarning`:
`tensorflow_model_server` refuses to run such a function unless started with
`--xla_cpu_compilation_enabled=true` (experimental, off by default). The zoo's models avoid it
(`keras_attention.convolution.GroupedConv2D`).
"""

import os
import re
import shutil
import tempfile

from attention_zoo_common.checks import is_positive_int

_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


class XlaCompilationWarning(UserWarning):
    """The exported SavedModel holds functions TensorFlow must compile with XLA."""


def xla_compiled_functions(saved_model):
    """Names of the functions that carry `_XlaMustCompile=true` (written by
    `tf.function(jit_compile=True)`), sorted, in a SavedModel: its folder or its parsed
    `SavedModel` proto. `tensorflow_model_server` runs them only with
    `--xla_cpu_compilation_enabled=true`."""
    if isinstance(saved_model, (str, os.PathLike)):
        from tensorflow.core.protobuf import saved_model_pb2

        path, saved_model = saved_model, saved_model_pb2.SavedModel()
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            saved_model.ParseFromString(f.read())
    return sorted(
        {
            function.signature.name
            for meta_graph in saved_model.meta_graphs
            for function in meta_graph.graph_def.library.function
            if "_XlaMustCompile" in function.attr and function.attr["_XlaMustCompile"].b
        }
    )


def _warn_if_xla_compiled(export_dir, name):
    functions = xla_compiled_functions(export_dir)
    if functions:
        import warnings

        warnings.warn(
            f"model {name!r}: the SavedModel holds {len(functions)} function(s) compiled with "
            "XLA (jit_compile=True, e.g. a grouped convolution on Keras' TensorFlow backend); "
            "tensorflow_model_server runs them only with --xla_cpu_compilation_enabled=true "
            "(experimental, off by default)",
            XlaCompilationWarning,
            stacklevel=5,  # export's caller (through write and _write_version)
        )


def existing_versions(model_dir):
    """Versions present under `model_dir`: its version folders as the server reads them
    (plain ASCII decimal names within int64; others ignored)."""
    from serving.models import versions_on_disk

    return sorted(versions_on_disk(model_dir))


_TMP_PREFIX = ".tmp-export-"
_TMP_RE = re.compile(r"\.tmp-export-\d+-(\d+)-")


def _remove_abandoned_exports(model_dir):
    """Remove the temporary folders of exports that were killed: those whose process (its id is
    in the name) is gone, and old-style ones without a process id."""
    try:
        entries = os.listdir(model_dir)
    except OSError:
        return
    for entry in entries:
        if not entry.startswith(_TMP_PREFIX):
            continue
        match = _TMP_RE.match(entry)
        if match:
            pid = int(match.group(1))
            if pid == os.getpid():
                continue
            try:
                os.kill(pid, 0)
                continue  # another export is writing it now
            except ProcessLookupError:
                pass
            except PermissionError:
                continue  # alive, another user's
        shutil.rmtree(os.path.join(model_dir, entry), ignore_errors=True)


def _fsync_tree(path):
    """fsync every file and folder under `path` (and `path`), so that the rename that publishes
    the version never exposes files whose data is not on disk yet."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(root)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a folder
        pass
    finally:
        os.close(fd)


def _umask():
    try:  # Linux: read it, setting it (below) is process-wide and racy with other threads
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _input_name(tensor, index):
    name = getattr(tensor, "name", None) or f"input_{index}"
    # Keras names like "image" are kept; anything unusable for a signature key is cleaned.
    name = re.sub(r"[^A-Za-z0-9_]", "_", name.split(":")[0])
    return name or f"input_{index}"


def _input_specs(model, tf):
    """Named `tf.TensorSpec`s of the model's inputs, batch dimension left open."""
    if not getattr(model, "inputs", None):
        raise ValueError(
            "export needs a built functional-style model with known inputs "
            "(call the model once on data or build it with keras.Input)."
        )
    specs, names = [], []
    for index, tensor in enumerate(model.inputs):
        name = _input_name(tensor, index)
        if name in names:
            raise ValueError(
                f"two model inputs are both named {name!r}; name each keras.Input uniquely"
            )
        names.append(name)
        shape = (None,) + tuple(tensor.shape[1:])
        specs.append(tf.TensorSpec(shape, tf.as_dtype(tensor.dtype), name=name))
    return specs


def _serve_fn(model, to_float32):
    """Inference on positional inputs; outputs as a dict of float32 tensors."""

    def serve(*args):
        inputs = args[0] if len(args) == 1 else list(args)
        outputs = model(inputs, training=False)
        if isinstance(outputs, dict):
            return {str(key): to_float32(value) for key, value in outputs.items()}
        if isinstance(outputs, (list, tuple)):
            return {f"output_{i}": to_float32(value) for i, value in enumerate(outputs)}
        return {"output_0": to_float32(outputs)}

    return serve


def _serving_function(model, tf):
    """A tf.function with named inputs and float32 outputs that calls `model` for inference."""

    def to_float32(value):
        value = tf.convert_to_tensor(value)
        return tf.cast(value, tf.float32) if value.dtype.is_floating else value

    return tf.function(
        _serve_fn(model, to_float32), input_signature=_input_specs(model, tf), autograph=False
    )


def _write_with_export_archive(model, path, tf):
    """JAX backend: Keras' ExportArchive turns the model into TensorFlow (jax2tf), so the
    SavedModel has the same `serving_default` as a TensorFlow-backend export. The graph then
    holds `XlaCallModule` ops, which old TF Serving releases cannot run."""
    import keras

    def to_float32(value):
        dtype = keras.backend.standardize_dtype(value.dtype)
        return keras.ops.cast(value, "float32") if "float" in dtype else value

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default", _serve_fn(model, to_float32), input_signature=_input_specs(model, tf)
    )
    archive.write_out(path, verbose=False)


IMAGE_SIGNATURE_DEFAULTS = dict(
    signature_name="serving_images",
    height=None,
    width=None,
    channels=None,
    preprocessing="unit",
    top_k=5,
    softmax=False,
    decode=None,
)
PREPROCESSING = {
    "unit": lambda x: x / 255.0,  # [0, 1]
    "symmetric": lambda x: x / 127.5 - 1.0,  # [-1, 1]
    "none": lambda x: x,  # [0, 255]
}


def _image_options(model, options):
    if options is True:
        options = {}
    unknown = set(options) - set(IMAGE_SIGNATURE_DEFAULTS)
    if unknown:
        raise ValueError(
            f"unknown image_signature options {sorted(unknown)}; "
            f"valid: {sorted(IMAGE_SIGNATURE_DEFAULTS)}"
        )
    explicit = set(options)
    options = {**IMAGE_SIGNATURE_DEFAULTS, **options}
    own_decode = getattr(getattr(model, "preprocessing", None), "decode_tf", None)
    if (
        options["decode"] is None
        and callable(own_decode)
        and not explicit & {"preprocessing", "height", "width"}
    ):
        options["decode"] = own_decode
    if options["decode"] is not None and not callable(options["decode"]):
        raise ValueError(
            "decode must be a callable from one encoded image to the model input, "
            f"got {options['decode']!r}"
        )
    if len(getattr(model, "inputs", None) or []) != 1:
        raise ValueError("image_signature needs a model with exactly one image input")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4:
        raise ValueError(
            f"image_signature needs an image input (batch, height, width, channels), got {shape}"
        )
    for key, index in (("height", 1), ("width", 2), ("channels", 3)):
        if options[key] is None:
            options[key] = shape[index]
        if options[key] is None:
            raise ValueError(
                f"the model input has no static {key}: pass image_signature=dict({key}=...)"
            )
        if shape[index] is not None and shape[index] != options[key]:
            raise ValueError(
                f"image_signature {key}={options[key]} but the model input has {shape[index]}"
            )
    if options["channels"] not in (1, 3, 4):
        raise ValueError("image_signature channels must be 1, 3 or 4")
    pre = options["preprocessing"]
    if not callable(pre) and pre not in PREPROCESSING:
        raise ValueError(
            f"preprocessing must be a callable or one of {sorted(PREPROCESSING)}, got {pre!r}"
        )
    if not is_positive_int(options["top_k"]):
        raise ValueError("top_k must be a positive integer")
    if options["signature_name"] == "serving_default":
        raise ValueError("the image signature needs its own name, not serving_default")
    return options


def _image_function(model, options, tf):
    """A tf.function from encoded image bytes to probabilities and top-k classes/scores."""
    height, width, channels = options["height"], options["width"], options["channels"]
    pre = options["preprocessing"]
    pre = PREPROCESSING[pre] if not callable(pre) else pre
    input_dtype = tf.as_dtype(model.inputs[0].dtype)

    def decode(data):
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        image = tf.image.resize(tf.cast(image, tf.float32), (height, width), method="bilinear")
        return tf.ensure_shape(image, (height, width, channels))

    def decode_to_input(data):
        return tf.ensure_shape(
            tf.cast(options["decode"](data), tf.float32), (height, width, channels)
        )

    def serve(images):
        element = tf.TensorSpec((height, width, channels), tf.float32)
        if options["decode"] is not None:
            inputs = tf.cast(
                tf.map_fn(decode_to_input, images, fn_output_signature=element), input_dtype
            )
        else:
            inputs = tf.cast(
                pre(tf.map_fn(decode, images, fn_output_signature=element)), input_dtype
            )
        outputs = model(inputs, training=False)
        if isinstance(outputs, (dict, list, tuple)):
            raise ValueError("image_signature needs a model with a single output (class scores)")
        probabilities = tf.cast(outputs, tf.float32)
        if probabilities.shape.rank != 2:
            raise ValueError(
                f"image_signature needs a (batch, classes) output, got {probabilities.shape}"
            )
        if options["softmax"]:
            probabilities = tf.nn.softmax(probabilities, axis=-1)
        k = min(options["top_k"], int(probabilities.shape[-1]))
        scores, classes = tf.math.top_k(probabilities, k=k)
        return {
            "probabilities": probabilities,
            "classes": tf.cast(classes, tf.int32),
            "scores": scores,
        }

    return tf.function(
        serve, input_signature=[tf.TensorSpec((None,), tf.string, name="images")], autograph=False
    )


def export(
    model,
    base_path,
    name,
    version=None,
    overwrite=False,
    image_signature=None,
    warmup_requests=None,
    attention_signature=None,
    task=None,
):
    """Write `model` as a SavedModel servable at `base_path/name/version/`.

    Args:
        model: a Keras 3 model with known inputs, on the TensorFlow backend, or on the JAX
            backend with TensorFlow installed (converted by jax2tf; `serving_default` only).
        base_path: the folder TF Serving's `--model_base_path` points at, minus `name`.
        name: the model name (a folder name: letters, digits, `_`, `.`, `-`).
        version: a positive integer; `None` takes the next one after the highest existing.
        overwrite: must stay `False`; an existing version is never replaced.
        image_signature: `True` or a dict to add an encoded-image signature (for a model with one
            (batch, height, width, channels) input and one (batch, classes) output). Options:
            `signature_name` ("serving_images"), `height`/`width`/`channels` (default: the model
            input's), `preprocessing` ("unit": [0, 1] (default), "symmetric": [-1, 1], "none":
            [0, 255], or a callable on float32 pixels in [0, 255]), `top_k` (5, at most the class
            count), `softmax` (False: the model already outputs probabilities) and `decode` (a
            callable from one encoded image, a scalar `tf.string`, to the model's input
            (height, width, channels), replacing decode + stretch + `preprocessing`; default:
            the model's own `model.preprocessing.decode_tf` where it has one and neither
            `preprocessing` nor a size is given).
        warmup_requests: optional list (at most 1000) of requests that TF Serving (and this
            project's server) replays when the version loads, before serving it; written as
            `assets.extra/tf_serving_warmup_requests` (TFRecord of PredictionLog predict logs).
            Each one is an array for a single-input `serving_default`, a dict {input name: array}
            for `serving_default`, a list of encoded image bytes for the image signature,
            `{"signature_name": ..., "inputs": {input name: array}}` for any exported signature,
            or a ready `tensorflow_serving.apis.prediction_log_pb2.PredictionLog`.
        attention_signature: `True`, a list of layer names or a dict of options to add a
            signature `attention` (the `serving_default` inputs; its outputs plus the map of
            every attention layer, or of the layers named, as `attention/<layer name>`) and,
            with `image_signature`, `serving_images_attention` (encoded images in). Options:
            `layers` (None: every attention layer whose map has a layout), `signature_name`
            ("attention"), `size` ((height, width) of the maps' common grid; default the model
            input's) and `dtype` ("uint8" with per-sample `/scale` and `/offset` (default),
            "float16" (gRPC only: REST cannot write it) or "float32"). See `serving.attention`.
        task: `"segmentation"` exports a model with one (batch, height, width, classes)
            output as a segmentation model (`serving.segmentation`: per-pixel `class_ids` and
            `probabilities`; an image signature that returns the class map at each image's
            size); default: the model's `task` attribute where it has one (zoo segmentation
            models), else a classifier / any model.

    Returns:
        The path of the new version folder.

    Raises:
        FileExistsError: the version already exists.
        ValueError: bad name, version, model or warmup requests.
    """
    if overwrite:
        raise ValueError("export never overwrites a version; pick a new version number")
    model_dir, version = _model_dir_and_version(base_path, name, version)
    import keras

    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax"):
        raise ValueError(f"export runs on the TensorFlow or JAX backend, not {backend!r}")
    if image_signature and backend != "tensorflow":
        raise ValueError(
            "image_signature needs the TensorFlow backend (it decodes images with TF ops)"
        )
    from serving import segmentation as segmentation_lib

    segmentation = segmentation_lib.is_segmentation(model, task)
    if segmentation and backend != "tensorflow":
        raise ValueError("a segmentation model is exported on the TensorFlow backend")
    if image_signature:
        options = segmentation_lib.image_options if segmentation else _image_options
        image_signature = options(model, image_signature)
    if attention_signature and segmentation:
        raise ValueError("attention_signature is not available for segmentation models yet")
    if attention_signature and backend != "tensorflow":
        raise ValueError("attention_signature needs the TensorFlow backend")
    if attention_signature:
        from serving.attention import attention_options

        attention_signature = attention_options(model, attention_signature)
    _check_version_is_new(model_dir, name, version)

    import tensorflow as tf

    warmup_logs = None
    if warmup_requests is not None:
        from serving.warmup import build_warmup_logs

        signature_inputs = {
            "serving_default": {spec.name: spec for spec in _input_specs(model, tf)}
        }
        image_name = image_signature["signature_name"] if image_signature else None
        if image_name:
            signature_inputs[image_name] = {
                "images": tf.TensorSpec((None,), tf.string, name="images")
            }
        if attention_signature:
            _add_attention_inputs(signature_inputs, attention_signature, image_name)
        warmup_logs = build_warmup_logs(warmup_requests, name, signature_inputs, image_name)

    def write(tmp):
        if backend == "jax":
            _write_with_export_archive(model, tmp, tf)
        else:
            fn = (segmentation_lib.serving_function if segmentation else _serving_function)(
                model, tf
            )
            module = tf.Module()
            module.model_variables = list(model.variables)
            module.serve = fn
            signatures = {"serving_default": fn.get_concrete_function()}
            if image_signature:
                image_function = (
                    segmentation_lib.image_function if segmentation else _image_function
                )
                module.serve_images = image_function(model, image_signature, tf)
                signatures[image_signature["signature_name"]] = (
                    module.serve_images.get_concrete_function()
                )
            if attention_signature:
                signatures.update(
                    _attention_signatures(module, model, attention_signature, image_signature, tf)
                )
            tf.saved_model.save(module, tmp, signatures=signatures)
        _warn_if_xla_compiled(tmp, name)
        if warmup_logs is not None:  # inside the temporary folder: part of the atomic rename
            from serving.warmup import write_warmup_file

            write_warmup_file(tmp, warmup_logs)

    return _write_version(model_dir, name, version, write)


def export_files(write, base_path, name, version=None):
    """A new version folder `base_path/name/version/` holding what `write(folder)` puts in
    the (temporary) folder it is given: a `model.tflite` for `--prefer_tflite_model`, a
    `model.onnx`. The folder appears atomically, as `export`'s does; `version=None` takes the
    next free number. Returns the version folder's path."""
    model_dir, version = _model_dir_and_version(base_path, name, version)
    _check_version_is_new(model_dir, name, version)
    return _write_version(model_dir, name, version, write)


def _model_dir_and_version(base_path, name, version):
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in (".", ".."):
        raise ValueError(f"invalid model name {name!r}: use letters, digits, '_', '.' or '-'")
    model_dir = os.path.join(os.fspath(base_path), name)
    if version is None:
        versions = existing_versions(model_dir)
        version = versions[-1] + 1 if versions else 1
    if not is_positive_int(version):
        raise ValueError(f"version must be a positive integer, got {version!r}")
    return model_dir, version


def _check_version_is_new(model_dir, name, version):
    target = os.path.join(model_dir, str(version))
    if os.path.exists(target) or version in existing_versions(model_dir):
        raise FileExistsError(f"version {version} of model {name!r} already exists at {model_dir}")


def _write_version(model_dir, name, version, write):
    """`write(tmp)` into a temporary folder beside the versions, fsynced, then renamed to the
    version folder in one step; nothing is left behind on failure."""
    target = os.path.join(model_dir, str(version))
    os.makedirs(model_dir, exist_ok=True)
    _remove_abandoned_exports(model_dir)
    tmp = tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{version}-{os.getpid()}-", dir=model_dir)
    # mkdtemp makes it 0700: the version folder must be readable by a server running as
    # another user, like any folder made under the process's umask
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        write(tmp)
        if os.path.exists(target):
            raise FileExistsError(f"version {version} of model {name!r} appeared during export")
        _fsync_tree(tmp)
        os.replace(tmp, target)
        _fsync_dir(model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _add_attention_inputs(signature_inputs, options, image_name):
    """The warmup inputs of the attention signatures: those of the signatures they extend."""
    from serving.attention import IMAGE_SUFFIX

    signature_inputs[options["signature_name"]] = signature_inputs["serving_default"]
    if image_name:
        signature_inputs[image_name + IMAGE_SUFFIX] = signature_inputs[image_name]


def _attention_signatures(module, model, options, image_options, tf):
    """The concrete functions of the attention signatures (`serving.attention`), tracked by
    `module`."""
    from serving.attention import attention_functions

    functions = attention_functions(model, options, image_options, tf)
    module.serve_attention = list(functions.values())
    return {name: function.get_concrete_function() for name, function in functions.items()}
