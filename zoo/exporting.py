"""Export a zoo model (or any Keras 3 model) to SavedModel, LiteRT or ONNX, and run the result.

    import zoo
    zoo.export("stn_cnn", "stn_cnn.tflite", format="litert", quantization="float16")
    zoo.export(model, "model.onnx", format="onnx")

Every format goes through Keras' own `model.export` and the official converter behind it:
`tf_saved_model` (Keras' ExportArchive); LiteRT as Keras' `format="litert"` does it, that
SavedModel through TensorFlow's `TFLiteConverter` (`convert_saved_model_to_litert`, which
also converts a SavedModel exported earlier), builtin ops only, so the file runs on LiteRT's
plain interpreter; `onnx` (tf2onnx, opset `ONNX_OPSET`). LiteRT takes a quantization:
`float16` (weights stored as float16) or `dynamic_int8` (dynamic-range: int8 weights,
activations quantized at run time).

On the JAX backend Keras exports a SavedModel through jax2tf (its graph holds the model as
`XlaCallModule` ops, which TensorFlow runs). Its ONNX export there needs jax2onnx, which
converts few zoo models into files onnxruntime runs (docs/serving.md), and it has no LiteRT
export there, so both are refused with a message naming the backend (`BACKEND_FORMATS`).

An op that a converter cannot translate fails the export with an `ExportError` that names
the op and the model's layers it belongs to. `run_exported` runs an exported file in its own
runtime (TensorFlow, LiteRT's interpreter, onnxruntime), as a deployment would.
"""

import os
import pathlib
import re

FORMATS = ("saved_model", "litert", "onnx")
QUANTIZATIONS = (None, "float16", "dynamic_int8")
ONNX_OPSET = 17  # pinned: the exported graph does not change with the converter's default
SUFFIXES = {"litert": ".tflite", "onnx": ".onnx"}
# the formats `zoo.export` writes on each backend. On JAX: Keras' LiteRT export refuses the
# backend (and its SavedModel is jax2tf's XlaCallModule graph, which TFLite cannot convert);
# its ONNX export goes through jax2onnx, whose files onnxruntime runs for 1 of 25 zoo models
# measured (benchmarks/results/export_matrix.md), so ONNX is exported from TensorFlow.
BACKEND_FORMATS = {"tensorflow": FORMATS, "jax": ("saved_model",)}


class ExportError(RuntimeError):
    """A model that a converter cannot translate: the message names the op and the layer."""


def check_options(format, quantization):
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"quantization must be None, 'float16' or 'dynamic_int8', got {quantization!r}"
        )
    if quantization is not None and format != "litert":
        raise ValueError(
            f"quantization={quantization!r} applies to format='litert' only "
            f"(format={format!r} exports float32)"
        )


def check_backend(format, backend=None):
    """Refuse a format `zoo.export` does not write on `backend` (default: Keras' backend)."""
    if backend is None:
        import keras

        backend = keras.backend.backend()
    if backend not in BACKEND_FORMATS:
        raise ValueError(
            f"zoo.export runs on the {' or '.join(repr(b) for b in BACKEND_FORMATS)} backend, "
            f"not {backend!r}"
        )
    if format not in BACKEND_FORMATS[backend]:
        others = [b for b, formats in BACKEND_FORMATS.items() if format in formats]
        raise ValueError(
            f"format={format!r} is not supported on the {backend!r} backend (zoo.export "
            f"writes {', '.join(BACKEND_FORMATS[backend])} there); export it with "
            f"KERAS_BACKEND={' or '.join(others)}"
        )


def _check_path(path, format):
    path = pathlib.Path(path)
    suffix = SUFFIXES.get(format)
    if suffix and path.suffix != suffix:
        raise ValueError(f"a {format} export is a file ending in {suffix}, got {str(path)!r}")
    if path.exists():
        raise FileExistsError(f"{path} exists; export never overwrites")
    return path


def functional_model(model, input_shape=None):
    """`model` itself when it has known inputs, else a functional model around it (a
    subclassed zoo model such as RAM), built on `input_shape` (default: the registry's)."""
    import keras

    if getattr(model, "inputs", None):
        return model
    if input_shape is None:
        from zoo import registry

        input_shape = registry.get_spec(model.name).default_input_shape
    inputs = keras.Input(tuple(input_shape), name="image")
    return keras.Model(inputs, model(inputs, training=False), name=model.name)


def _resolve_model(model_or_name, input_shape, load_kwargs):
    if isinstance(model_or_name, str):
        import zoo

        load_kwargs = dict(load_kwargs)
        load_kwargs.setdefault("weights", None)
        if input_shape is not None:
            load_kwargs["input_shape"] = tuple(input_shape)
        model = zoo.load(model_or_name, **load_kwargs)
    else:
        if load_kwargs:
            raise ValueError(
                f"{sorted(load_kwargs)} apply to a model given by name, not to a Keras model"
            )
        model = model_or_name
    return functional_model(model, input_shape)


def _layer_paths(model):
    """{name: path} of every layer in `model` and its nested models, path = outer/inner;
    input layers left out."""
    import keras

    paths = {}

    def walk(layer, prefix):
        for sub in getattr(layer, "layers", None) or ():
            if isinstance(sub, keras.layers.InputLayer):
                continue
            path = f"{prefix}{sub.name}"
            paths.setdefault(sub.name, path)
            walk(sub, path + "/")

    walk(model, "")
    return paths


# where converters name the TensorFlow op they stopped at: TFLite's MLIR locations
# (fused["Svd:", "functional_1/svd_gate_1/Svd@__inference_..."]), tf2onnx's
# "Tensorflow op [functional_1/svd_gate_1/Svd: Svd]" and the node names of an ONNX graph
_OP_PATH_PATTERNS = (
    re.compile(r'loc\((?:callsite\()?fused\["[A-Za-z0-9_]+:", "([^"@]+)'),
    re.compile(r"Tensorflow op \[([^:\]]+):"),
    re.compile(r"\(nodes ([^)]+)\)"),
)
_OP_PATTERNS = (
    re.compile(r"'tf\.([A-Za-z0-9_]+)' op is neither"),
    # any other converter error: the TensorFlow op type of the location it is reported at
    re.compile(r'error: loc\((?:callsite\()?fused\["([A-Za-z0-9_]+):'),
    re.compile(r"Tensorflow op \[[^\]]*?: ([A-Za-z0-9_]+)\] is not supported"),
    re.compile(r"Unsupported ops: ([A-Za-z0-9_, ]+)"),
)


def _layers_named_in(text, model):
    """The model's layers that own the ops named in `text` (Keras' name scopes: the layer's
    name, with a `_<n>` suffix when the scope was uniquified)."""
    if model is None:
        return []
    paths = _layer_paths(model)
    found = []
    for pattern in _OP_PATH_PATTERNS:
        for match in pattern.finditer(text):
            for op_path in match.group(1).split():
                for component in op_path.split("/")[:-1]:
                    for name in (component, re.sub(r"_\d+$", "", component)):
                        if name in paths and name != model.name and paths[name] not in found:
                            found.append(paths[name])
                            break
    # the innermost layers are the most telling: drop a layer that contains another found
    return [p for p in found if not any(q.startswith(p + "/") for q in found)]


def _describe_failure(error_text, model, format):
    ops = []
    for pattern in _OP_PATTERNS:
        for match in pattern.finditer(error_text):
            for op in match.group(1).split(","):
                if op.strip() and op.strip() not in ops:
                    ops.append(op.strip())
    layers = _layers_named_in(error_text, model)
    name = model.name if model is not None else "the model"
    if ops:
        where = f" in layer {', '.join(layers[:5])}" if layers else ""
        reason = re.search(r"error: (?:loc\(.*?\)\)+: )?(?:error: )?(.*)", error_text)
        reason = reason.group(1)[:200] if reason else ""
        if "is neither a custom op nor a flex op" in error_text or "Unsupported ops" in error_text:
            reason = f"not among the {'LiteRT builtin' if format == 'litert' else 'ONNX'} ops"
        return f"{name}: {format} cannot convert TensorFlow op {', '.join(ops)}{where} ({reason})"
    first_line = next((line for line in error_text.splitlines() if line.strip()), error_text)
    return f"{name}: {format} conversion failed: {first_line[:300]}"


def convert_saved_model_to_litert(saved_model_dir, path, quantization=None, model=None):
    """Convert a SavedModel (`zoo.export(..., format="saved_model")`, `serving.export`'s
    version folder, any TF2 SavedModel) to a LiteRT file with TensorFlow's `TFLiteConverter`,
    as Keras' `model.export(format="litert")` does, keeping its `serving_default` signature.
    Builtin ops only: a file with TensorFlow (Flex) ops would need TensorFlow on the device.

    Args:
        saved_model_dir: the SavedModel folder.
        path: the `.tflite` file to write (never overwritten).
        quantization: None (float32), "float16" (weights stored as float16) or
            "dynamic_int8" (dynamic range: int8 weights, activations quantized at run time).
        model: the Keras model it was exported from, to name its layers in an error.

    Raises:
        ExportError: an op has no LiteRT builtin; the message names it and its layer.
    """
    import tensorflow as tf

    check_options("litert", quantization)
    path = _check_path(path, "litert")
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model_dir), signature_keys=["serving_default"]
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.experimental_enable_resource_variables = True
    if quantization is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    try:
        flatbuffer = converter.convert()
    except Exception as error:  # ConverterError and others: all mean "cannot convert"
        raise ExportError(_describe_failure(str(error), model, "litert")) from error
    path.write_bytes(flatbuffer)
    return path


def _onnx_unsupported_ops(path):
    """Ops tf2onnx kept as TensorFlow ops (it logs them and writes them into the graph rather
    than failing): (op type, node name) of every node that is no ONNX operator."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return sorted(
        {
            (node.op_type, node.name)
            for node in graph.node
            if node.domain != "com.microsoft" and not onnx.defs.has(node.op_type, node.domain)
        }
    )


def export(
    model_or_name, path, format="saved_model", quantization=None, *, input_shape=None, **load_kwargs
):
    """Export a model to `path` in `format` through Keras' own `model.export`.

    Args:
        model_or_name: a Keras 3 model (TensorFlow or JAX backend) or the name of a zoo
            model, loaded with `zoo.load(name, **load_kwargs)` (random weights unless
            `weights=` names them).
        path: a folder for "saved_model", a `.tflite` file for "litert", an `.onnx` file for
            "onnx". Never overwritten.
        format: "saved_model", "litert" or "onnx"; on the JAX backend "saved_model" only
            (jax2tf; `BACKEND_FORMATS`).
        quantization: None (float32), "float16" or "dynamic_int8"; LiteRT only.
        input_shape: `(height, width, channels)` of a model given by name, or of the input a
            subclassed model is wrapped around.
        **load_kwargs: `zoo.load` arguments for a model given by name (`weights`,
            `num_classes`, `classifier_activation`, ...).

    Returns:
        The path written.

    Raises:
        ExportError: the converter cannot translate an op; the message names it and its layer.
        ValueError: a bad format, quantization or path; a backend other than TensorFlow and
            JAX, or a format not exported on the current backend (`BACKEND_FORMATS`).
        FileExistsError: `path` exists.
    """
    check_options(format, quantization)
    check_backend(format)
    path = _check_path(path, format)
    model = _resolve_model(model_or_name, input_shape, load_kwargs)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True)
    try:
        if format == "saved_model":
            model.export(str(path), format="tf_saved_model", verbose=False)
        elif format == "litert":
            # Keras' own LiteRT export writes this SavedModel and converts it the same way
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                saved = pathlib.Path(tmp, "saved_model")
                model.export(str(saved), format="tf_saved_model", verbose=False)
                convert_saved_model_to_litert(saved, path, quantization, model=model)
        else:
            import warnings

            with warnings.catch_warnings():  # Keras' numpy-2 patch of tf2onnx touches np.object
                warnings.filterwarnings("ignore", category=FutureWarning, module=r"keras\.")
                model.export(
                    str(path),
                    format="onnx",
                    verbose=False,
                    opset_version=ONNX_OPSET,
                    input_signature=_input_signature(model),
                )
    except ExportError:
        _remove(path)
        raise
    except Exception as error:  # the converters raise many types; all mean "cannot convert"
        _remove(path)
        raise ExportError(_describe_failure(str(error), model, format)) from error
    if format == "onnx":
        unsupported = _onnx_unsupported_ops(path)
        if unsupported:
            _remove(path)
            names = " ".join(name for _, name in unsupported)
            raise ExportError(
                _describe_failure(
                    f"Unsupported ops: {', '.join(sorted({op for op, _ in unsupported}))}"
                    f" (nodes {names})",
                    model,
                    format,
                )
            )
    return path


def _input_signature(model):
    """`tf.TensorSpec`s of the model's inputs (batch dimension open), named as its inputs, in
    the form Keras' exporters take (one spec per call argument)."""
    import tensorflow as tf

    specs = [
        tf.TensorSpec((None, *tensor.shape[1:]), tensor.dtype, name=tensor.name.split(":")[0])
        for tensor in model.inputs
    ]
    return specs if len(specs) == 1 else [specs]


def _remove(path):
    import shutil

    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        os.remove(path)


class ExportedModel:
    """An exported file loaded in its own runtime: `predict(x)` -> first output as numpy.

    SavedModel: `tf.saved_model.load` and its `serve` endpoint; LiteRT: `ai_edge_litert`'s
    interpreter (its signature runner); ONNX: an `onnxruntime.InferenceSession` on the CPU.
    """

    def __init__(self, path, format=None, num_threads=None):
        path = pathlib.Path(path)
        if format is None:
            format = {".tflite": "litert", ".onnx": "onnx"}.get(path.suffix, "saved_model")
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        self.path, self.format = path, format
        if format == "saved_model":
            import tensorflow as tf

            self._loaded = tf.saved_model.load(str(path))
            self._run = lambda x: self._loaded.serve(x)
        elif format == "litert":
            from ai_edge_litert.interpreter import Interpreter

            self._interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
            signatures = self._interpreter.get_signature_list()
            key = next(iter(signatures))
            self._runner = self._interpreter.get_signature_runner(key)
            self._input_names = signatures[key]["inputs"]
            self._output_names = list(signatures[key]["outputs"])
        else:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            if num_threads:
                options.intra_op_num_threads = num_threads
            self._session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )

    def predict(self, x):
        """The first output on `x`: one array, or a list of arrays for several inputs (in the
        order of the model's inputs)."""
        import numpy as np

        xs = [np.asarray(a, "float32") for a in (x if isinstance(x, (list, tuple)) else [x])]
        if self.format == "saved_model":
            return np.asarray(self._run(xs[0] if len(xs) == 1 else xs))
        if self.format == "litert":
            outputs = self._runner(**dict(zip(self._input_names, xs)))
            return np.asarray(outputs[self._output_names[0]])
        feeds = {i.name: a for i, a in zip(self._session.get_inputs(), xs)}
        return self._session.run(None, feeds)[0]


def run_exported(path, x, format=None):
    """The first output of the exported model at `path` on the batch `x` (numpy)."""
    return ExportedModel(path, format).predict(x)


VERSION_FILES = {"litert": "model.tflite", "onnx": "model.onnx"}
