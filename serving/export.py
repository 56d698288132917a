"""SavedModel export of any Keras 3 model for TensorFlow Serving.

`export(model, base_path, name)` writes `base_path/<name>/<version>/` with tag `serve` and a
`serving_default` signature whose inputs carry the Keras input names and whose outputs are
float32 (`output_0`, ... or the model's own keys when it returns a dict), also under mixed
precision. The version folder appears atomically: the SavedModel is written into a
temporary sibling folder and renamed into place, so a failed export leaves nothing behind.
"""

import os
import re
import shutil
import tempfile

_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


def existing_versions(model_dir):
    """Integer versions present under `model_dir` (folder names parsed as int64, others ignored)."""
    versions = []
    if not os.path.isdir(model_dir):
        return versions
    for entry in os.listdir(model_dir):
        if entry.isdigit() and os.path.isdir(os.path.join(model_dir, entry)):
            versions.append(int(entry))
    return sorted(versions)


def _input_name(tensor, index):
    name = getattr(tensor, "name", None) or f"input_{index}"
    # Keras names like "image" are kept; anything unusable for a signature key is cleaned.
    name = re.sub(r"[^A-Za-z0-9_]", "_", name.split(":")[0])
    return name or f"input_{index}"


def _serving_function(model, tf):
    """A tf.function with named inputs and float32 outputs that calls `model` for inference."""
    if not getattr(model, "inputs", None):
        raise ValueError(
            "export needs a built functional-style model with known inputs "
            "(call the model once on data or build it with keras.Input)."
        )
    specs, names = [], []
    for index, tensor in enumerate(model.inputs):
        name = _input_name(tensor, index)
        if name in names:
            raise ValueError(f"two model inputs are both named {name!r}; name each keras.Input uniquely")
        names.append(name)
        shape = (None,) + tuple(tensor.shape[1:])
        specs.append(tf.TensorSpec(shape, tf.as_dtype(tensor.dtype), name=name))

    def to_float32(value):
        value = tf.convert_to_tensor(value)
        return tf.cast(value, tf.float32) if value.dtype.is_floating else value

    def serve(*args):
        inputs = args[0] if len(args) == 1 else list(args)
        outputs = model(inputs, training=False)
        if isinstance(outputs, dict):
            return {str(key): to_float32(value) for key, value in outputs.items()}
        if isinstance(outputs, (list, tuple)):
            return {f"output_{i}": to_float32(value) for i, value in enumerate(outputs)}
        return {"output_0": to_float32(outputs)}

    return tf.function(serve, input_signature=specs, autograph=False)


def export(model, base_path, name, version=None, overwrite=False):
    """Write `model` as a SavedModel servable at `base_path/name/version/`.

    Args:
        model: a Keras 3 model with known inputs (TensorFlow backend).
        base_path: the folder TF Serving's `--model_base_path` points at, minus `name`.
        name: the model name (a folder name: letters, digits, `_`, `.`, `-`).
        version: a positive integer; `None` takes the next one after the highest existing.
        overwrite: must stay `False`; an existing version is never replaced.

    Returns:
        The path of the new version folder.

    Raises:
        FileExistsError: the version already exists.
        ValueError: bad name, version or model.
    """
    if overwrite:
        raise ValueError("export never overwrites a version; pick a new version number")
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in (".", ".."):
        raise ValueError(f"invalid model name {name!r}: use letters, digits, '_', '.' or '-'")
    model_dir = os.path.join(os.fspath(base_path), name)
    if version is None:
        versions = existing_versions(model_dir)
        version = versions[-1] + 1 if versions else 1
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive integer, got {version!r}")
    target = os.path.join(model_dir, str(version))
    if os.path.exists(target) or version in existing_versions(model_dir):
        raise FileExistsError(f"version {version} of model {name!r} already exists at {model_dir}")

    import tensorflow as tf

    os.makedirs(model_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-export-{version}-", dir=model_dir)
    try:
        fn = _serving_function(model, tf)
        module = tf.Module()
        module.model_variables = list(model.variables)
        module.serve = fn
        tf.saved_model.save(module, tmp, signatures={"serving_default": fn.get_concrete_function()})
        if os.path.exists(target):
            raise FileExistsError(f"version {version} of model {name!r} appeared during export")
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
