"""`keras-attention-zoo` command line: the one place that joins zoo and serving.

Keras and TensorFlow are imported inside the commands that need them, so `--help`, `list`,
`info` and `attention` answer without loading them.
"""

import argparse
import json
import os
import pathlib
import sys

from attention_zoo_common.checks import is_positive_int

PROG = "keras-attention-zoo"


class UsageError(Exception):
    """A command line that cannot run as given; `main` prints the message on one line."""


def _console_script():
    """How to run this command line again from a fresh shell: the absolute path of the
    console script (so the printed commands work without activating the virtual
    environment), else `python -m zoo` with this interpreter."""
    invoked = pathlib.Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if invoked is not None and invoked.name == PROG and invoked.is_file():
        return str(invoked.absolute())
    beside = pathlib.Path(sys.executable).absolute().parent / PROG
    if beside.is_file():
        return str(beside)
    return f"{pathlib.Path(sys.executable).absolute()} -m zoo"


def _tool(name):
    """The absolute path of `name` installed beside this interpreter (tensorboard, ...)."""
    beside = pathlib.Path(sys.executable).absolute().parent / name
    return str(beside) if beside.is_file() else name


def _demo(args):
    """The main job: serve the shipped pretrained spatial transformer network the way TF
    Serving users do (export, embedded server, REST and gRPC queries); `--train` instead
    trains the small CBAM CNN and plots its attention map first."""
    if args.train:
        return _train_demo(args)
    import numpy as np

    import zoo
    from zoo.tasks import rts_mnist

    name, tag = "stn_cnn", "rts_mnist"
    model = zoo.load(name, weights=tag)
    entry = zoo.model_info(name).weights_for(tag)
    print(
        f"loaded the shipped {name} weights {tag!r} (sha256 {entry.sha256[:12]}...): {entry.metric}"
    )
    images, labels, _ = rts_mnist("test", seed=0)
    pixels = np.round(images[: args.count] * 255.0).astype("uint8")
    return _export_serve_and_query(
        model, pathlib.Path(args.output_dir) / "models", name, pixels, labels[: args.count]
    )


def _train_demo(args):
    from zoo import demo
    from zoo.datasets import mnist_subset

    result = demo.run(output_dir=args.output_dir, epochs=args.epochs, seed=args.seed)
    print(
        f"CBAM CNN, {args.epochs} epoch(s) on {result['train_size']} MNIST digits "
        f"({result['backend']} backend, {result['train_seconds']:.1f} s): "
        f"test accuracy {result['accuracy']:.4f} on {result['test_size']} held-out digits"
    )
    print(
        f"attention map (cbam2 spatial gate over test digits) written to {result['png'].resolve()}"
    )
    if args.no_serve:
        return 0
    import numpy as np

    images, labels = mnist_subset("test")
    pixels = np.round(images[: args.count] * 255.0).astype("uint8")
    return _export_serve_and_query(
        result["model"],
        pathlib.Path(args.output_dir) / "models",
        "cbam_cnn",
        pixels,
        labels[: args.count],
    )


def _png_bytes(image):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
    return buffer.getvalue()


def _export_serve_and_query(model, base_path, name, pixels, labels):
    """Export `model` as a TF Serving servable, serve it on free loopback ports, query it over
    REST and gRPC with the client (tensors on `serving_default`, PNG files on the image
    signature), and print what a user needs to do the same by hand. `pixels`: uint8 images."""
    import numpy as np

    import serving
    from serving.models import single_model_config

    batch = pixels.astype("float32") / 255.0
    # one warmup record: TF Serving (and the embedded server) replay it before serving
    version_dir = serving.export(
        model, str(base_path), name, image_signature=True, warmup_requests=[batch[:1]]
    )
    print(f"exported SavedModel to {pathlib.Path(version_dir).resolve()} (with a warmup record)")
    model_path = str(pathlib.Path(base_path, name).resolve())
    pngs = np.array([_png_bytes(image) for image in pixels], dtype=object)
    server = serving.Server(
        single_model_config(name, model_path), rest_api_port=0, port=0, host="127.0.0.1"
    )
    with server:
        rest_url, grpc_target = (
            f"http://127.0.0.1:{server.rest_api_port}",
            f"127.0.0.1:{server.port}",
        )
        with serving.Client(rest=rest_url) as rest, serving.Client(grpc=grpc_target) as grpc:
            by_rest = next(iter(rest.predict(name, batch).values()))
            by_grpc = next(iter(grpc.predict(name, batch).values()))
            by_png = rest.predict(name, pngs, signature_name="serving_images")
        print(f"embedded TF-Serving-compatible server: REST {rest_url}, gRPC {grpc_target}")
        print(f"  true labels:         {labels.tolist()}")
        print(f"  REST predictions:    {np.argmax(by_rest, -1).tolist()}")
        print(f"  gRPC predictions:    {np.argmax(by_grpc, -1).tolist()}")
        print(f"  PNG (REST, image signature) top-1: {by_png['classes'][:, 0].tolist()}")
        correct = int((np.argmax(by_grpc, -1) == labels).sum())
        print(f"  {correct} of {len(labels)} right")
        if not np.allclose(by_rest, by_grpc, atol=1e-6):
            print("REST and gRPC answers differ", file=sys.stderr)
            return 1
    request = pathlib.Path(base_path, f"{name}_request.json")
    request.write_text(json.dumps({"instances": batch[:1].tolist()}))
    print("serve it yourself (from any shell):")
    print(f"  {_console_script()} serve --model_name {name} --model_base_path {model_path}")
    print(f"  curl -d @{request.resolve()} localhost:8501/v1/models/{name}:predict")
    print("or with the real TF Serving (serving/deploy/ has docker-compose and Kubernetes files):")
    print(
        f"  docker run -p 8500:8500 -p 8501:8501 -v {model_path}:/models/{name} "
        f"-e MODEL_NAME={name} tensorflow/serving"
    )
    return 0


def _list(args):
    from zoo import registry

    specs = registry.all_specs()
    names = registry.list_models(args.pattern, pretrained=True if args.pretrained else None)
    if not names:
        raise UsageError(f"no model matches {args.pattern!r}; `{PROG} list` shows them all")
    print(f"{'model':22s} {'family':20s} {'timm':18s} weights")
    for name in names:
        spec = specs[name]
        tags = ", ".join(entry.tag for entry in spec.weights) or "-"
        print(f"{name:22s} {spec.family:20s} {spec.timm_name or '-':18s} {tags}")
    return 0


def _info(args):
    from zoo import registry

    spec = registry.get_spec(args.name)
    print(f"{spec.name}: {spec.description}")
    print(
        f"  family {spec.family}; input {spec.default_input_shape}; classes {spec.num_classes}; "
        f"timm counterpart: {spec.timm_name or 'none'}"
    )
    if spec.dynamic_size is not True:
        print(f"  fixed input size: {spec.dynamic_size}")
    for entry in spec.weights:
        default = " (default for predict / export)" if entry.tag == spec.default_weights else ""
        print(f"  weights {entry.tag!r}{default}: {entry.source or entry.url}")
        digests = "; ".join(
            f"{algorithm} {value}"
            for algorithm, value in (("sha256", entry.sha256), ("sha1", entry.sha1))
            if value
        )
        print(f"    url {entry.url}; {digests or 'sha256 not recorded'}; input {entry.input_size}")
        if entry.architecture:
            print(
                "    architecture: "
                + ", ".join(f"{key}={value!r}" for key, value in entry.architecture.items())
            )
        if entry.labels is not None:
            from zoo.labels import class_names

            names = class_names(entry.labels)
            print(f"    classes: {entry.labels} ({len(names)}: {', '.join(names)})")
        print(f"    trained on: {entry.trained_on}")
        print(f"    metric: {entry.metric}")
    if not spec.weights:
        print("  no pretrained weights")
    return 0


def _print_top(paths, scores, num_classes, top):
    import numpy as np

    if num_classes == 1000:
        from zoo import decode_predictions

        for path, row in zip(paths, decode_predictions(scores, top=top)):
            print(
                f"{path}: "
                + ", ".join(f"{label} ({synset}) {score:.3f}" for synset, label, score in row)
            )
        return
    for path, row in zip(paths, scores):
        best = np.argsort(-row)[:top]
        print(f"{path}: " + ", ".join(f"class {i} {row[i]:.3f}" for i in best))


def _weights_choice(spec, weights):
    """What `--weights` means: a tag, a file, or None for random weights.
    Without the flag, the model's default pretrained weights, as keras.applications does."""
    if weights is None:
        if spec.default_weights is None:
            raise UsageError(
                f"{spec.name} has no pretrained weights; pass --weights FILE (a "
                f".keras, .weights.h5 or .safetensors file, e.g. what `train` wrote) or "
                f"--weights none for random weights"
            )
        return spec.default_weights
    if weights.lower() == "none":
        return None
    if spec.weights_for(weights) is None and not pathlib.Path(weights).is_file():
        tags = ", ".join(entry.tag for entry in spec.weights)
        raise UsageError(
            f"--weights {weights!r} is neither a file nor a weights tag of "
            f"{spec.name}" + (f" ({tags})" if tags else "") + "; or --weights none"
        )
    return weights


def _load_model(args):
    """(model with known inputs, preprocessing function, what was loaded in words)."""
    import warnings

    from zoo import registry

    spec = registry.get_spec(args.name)
    weights = _weights_choice(spec, args.weights)
    _start_tensorflow_quietly()  # after the checks that need no TensorFlow
    import keras

    import zoo
    from zoo.models import RandomWeightsWarning

    if weights is not None and weights.endswith(".keras") and spec.weights_for(weights) is None:
        # a whole saved model (what `train` writes): its own architecture, classes and size
        import keras_attention  # noqa: F401  (registers the layers the file names)
        import zoo.ram  # noqa: F401  (registers RecurrentAttentionModel)

        model = keras.saving.load_model(weights, compile=False)
    else:
        kwargs = {}
        if args.num_classes is not None:
            kwargs["num_classes"] = args.num_classes
        if args.input_shape is not None:
            kwargs["input_shape"] = args.input_shape
        with warnings.catch_warnings():
            # --weights none asks for random weights: no need to warn about them
            warnings.simplefilter("ignore", RandomWeightsWarning)
            model = zoo.load(args.name, weights=weights, **kwargs)
    described = "random weights" if weights is None else weights
    tag = weights if spec.weights_for(weights) is not None else None
    functional = _with_inputs(model, spec, args.input_shape)
    return functional, _preprocessing(model, functional, spec, tag), described


def _with_inputs(model, spec, input_shape):
    """A functional model around a subclassed one (RAM), so it has `inputs` for predict
    and export."""
    import keras

    if getattr(model, "inputs", None):
        return model
    shape = tuple(input_shape) if input_shape else tuple(spec.default_input_shape)
    inputs = keras.Input(shape, name="image")
    return keras.Model(inputs, model(inputs, training=False), name=model.name)


def _preprocessing(model, functional, spec, tag):
    """The evaluation transform (`zoo.preprocessing.ImagePreprocessing`) of `model`: the one
    a zoo model carries, else the registry's for the input size and channel count of its
    functional form."""
    own = getattr(model, "preprocessing", None)
    if own is not None:
        return own
    _, height, width, channels = functional.inputs[0].shape
    return spec.preprocessing(tag, size=(height, width), channels=channels)


def _probabilities(scores):
    """Rows of `scores` as probabilities: a model that outputs logits (as `train` saves
    them) gets a softmax."""
    import numpy as np

    scores = np.asarray(scores, "float64")
    if (scores >= 0).all() and np.allclose(scores.sum(-1), 1.0, atol=1e-3):
        return scores
    shifted = np.exp(scores - scores.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def _is_segmentation(model):
    """A segmentation model: it says so (`task`), or its one output is a per-pixel map."""
    if getattr(model, "task", None) == "segmentation":
        return True
    outputs = getattr(model, "outputs", None) or []
    return len(outputs) == 1 and len(outputs[0].shape) == 4


def _read_rgb(path):
    """An image file -> uint8 (height, width, 3); an unreadable file is a one-line error."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), np.uint8)
    except (UnidentifiedImageError, OSError) as error:
        message = " ".join(str(error).split())
        raise UsageError(f"cannot read {path} as an image ({message})") from None


def _mask_paths(images, output):
    """Where each image's mask goes: `<stem>.mask.png` beside it, or in the `output`
    folder (created); never over one of the input files."""
    if output is not None:
        folder = pathlib.Path(output)
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"--output {output} is a file, not a folder")
        folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for image in images:
        image = pathlib.Path(image)
        paths.append((folder if output is not None else image.parent) / f"{image.stem}.mask.png")
    inputs = {pathlib.Path(image).resolve() for image in images}
    clash = next((path for path in paths if path.resolve() in inputs), None)
    if clash is not None:
        raise UsageError(f"the mask {clash} would overwrite an input image; use --output")
    if len(set(paths)) != len(paths):
        raise UsageError("two input images share a file name: give them --output folders apart")
    return paths


def _write_masks(images, class_maps, output, labels=None):
    """Write each (height, width) class map as a palette PNG (each pixel's value is its
    class id; the colours of the label set `labels`, zoo/labels.py, else PASCAL VOC's
    `zoo.scenes.palette`) and print where, with the classes' pixel shares (by name where
    the label set names them)."""
    import numpy as np

    from zoo import labels as label_sets
    from zoo import scenes

    names = label_sets.class_names(labels) if labels is not None else None
    colours = label_sets.palette(labels) if labels is not None else None
    for image, path, class_ids in zip(images, _mask_paths(images, output), class_maps):
        class_ids = np.asarray(class_ids)
        if class_ids.size and (class_ids.min() < 0 or class_ids.max() > 255):
            raise UsageError("class ids outside 0-255 do not fit a palette PNG")
        if names is not None and class_ids.size and class_ids.max() >= len(names):
            raise UsageError(f"class ids over {len(names) - 1} have no {labels} name")
        if names is None:
            path.write_bytes(scenes.mask_png(class_ids, num_classes=256))
        else:
            path.write_bytes(scenes.mask_png(class_ids, colours=colours))
        ids, counts = np.unique(class_ids, return_counts=True)
        shares = ", ".join(
            f"{f'class {i}' if names is None else names[i]} {100 * c / class_ids.size:.1f}%"
            for i, c in sorted(zip(ids, counts), key=lambda pair: -pair[1])
        )
        print(f"{image}: mask {path} ({class_ids.shape[0]}x{class_ids.shape[1]}; {shares})")


def _predict_masks(args, model, preprocessing):
    """Segment image files: each stretched to the model input (bilinear), normalised with
    the model's mean and std, its class probabilities stretched back to the image's size
    and the argmax written as a palette PNG (what the exported image signature returns)."""
    import keras
    import numpy as np

    _, height, width, _ = model.inputs[0].shape
    mean = np.asarray(preprocessing.mean, np.float32)
    std = np.asarray(preprocessing.std, np.float32)
    class_maps = []
    for path in args.images:
        pixels = _read_rgb(path).astype(np.float32)
        resized = keras.ops.image.resize(pixels[None], (height, width), interpolation="bilinear")
        inputs = (keras.ops.convert_to_numpy(resized) / 255.0 - mean) / std
        probabilities = model(inputs, training=False)
        back = keras.ops.image.resize(probabilities, pixels.shape[:2], interpolation="bilinear")
        class_maps.append(np.argmax(keras.ops.convert_to_numpy(back)[0], axis=-1))
    _write_masks(args.images, class_maps, args.output, _label_set(args))
    return 0


def _label_set(args):
    """The label set (zoo/labels.py) of the registered weights `args` name, or None."""
    from zoo import registry

    try:
        spec = registry.get_spec(args.name)
    except ValueError:
        return None
    weights = args.weights if args.weights is not None else spec.default_weights
    entry = spec.weights_for(weights) if weights is not None else None
    return entry.labels if entry is not None else None


def _predict(args):
    import numpy as np

    missing = [path for path in args.images if not pathlib.Path(path).is_file()]
    if missing:
        raise UsageError(f"no such image file: {missing[0]}")
    model, preprocessing, _ = _load_model(args)
    if _is_segmentation(model):
        return _predict_masks(args, model, preprocessing)
    # resize, crop and normalise as the weights were evaluated (timm's eval transform)
    inputs = preprocessing.load(args.images)
    # eager calls in batches: a handful of images does not pay for tracing a graph
    import keras

    scores = _probabilities(
        np.concatenate(
            [
                keras.ops.convert_to_numpy(model(inputs[start : start + 32], training=False))
                for start in range(0, len(inputs), 32)
            ]
        )
    )
    _print_top(args.images, scores, scores.shape[-1], args.top)
    return 0


def _export(args):
    import serving

    if args.format != "saved_model" or args.quantization:
        return _export_format(args)
    model, preprocessing, described = _load_model(args)
    import keras

    segmentation = _is_segmentation(model)
    image_signature = None
    # the encoded-image signature decodes with TensorFlow ops: a JAX export has
    # serving_default only (Keras' jax2tf export of the model itself)
    on_tensorflow = keras.backend.backend() == "tensorflow"
    if not args.no_image_signature and on_tensorflow:
        import numpy as np

        scores = np.asarray(
            model.predict(np.zeros((1, *model.inputs[0].shape[1:]), "float32"), verbose=0)
        )
        # the image signature decodes with the model's preprocessing (timm's eval transform);
        # a segmentation model's stretches the image and normalises with its mean and std
        image_signature = {
            "softmax": not np.allclose(_probabilities(scores), scores, atol=1e-6),
        }
        if not segmentation:
            image_signature["decode"] = preprocessing.decode_tf
        elif getattr(model, "preprocessing", None) is None:
            mean, std = tuple(preprocessing.mean), tuple(preprocessing.std)
            image_signature["preprocessing"] = lambda x: (x / 255.0 - mean) / std
    attention_signature = None
    if args.attention is not None:  # --attention alone: every attention layer
        attention_signature = list(args.attention) or True
    version_dir = serving.export(
        model,
        args.base_path,
        args.serving_name or args.name,
        version=args.version,
        image_signature=image_signature,
        attention_signature=attention_signature,
        task="segmentation" if segmentation else None,
    )
    signatures = ["serving_default"] + (["serving_images"] if image_signature else [])
    if attention_signature:
        signatures += [
            f"{name}_attention" if name != "serving_default" else "attention" for name in signatures
        ]
    backend_note = "" if on_tensorflow else f"; {keras.backend.backend()} backend"
    print(
        f"exported {args.name} ({described}) to {pathlib.Path(version_dir).resolve()}"
        f" (signatures: {', '.join(signatures)}{backend_note})"
    )
    return 0


def export_version(model, base_path, name, format="saved_model", quantization=None, version=None):
    """Export into TF Serving's layout, `base_path/name/version/`: "saved_model" is
    `serving.export` (its signatures); "litert" writes `model.tflite` (what
    `serve --prefer_tflite_model` and tensorflow_model_server serve through LiteRT) and "onnx"
    `model.onnx` (the layout ONNX model repositories use), each through `zoo.export` into a
    version folder that appears atomically (`serving.saved_model.export_files`).
    `version=None` takes the next free one. Returns the version folder."""
    import serving
    from serving.saved_model import export_files
    from zoo.exporting import VERSION_FILES, check_options, export

    check_options(format, quantization)
    if format == "saved_model":
        return serving.export(model, base_path, name, version=version)

    def write(folder):
        export(model, pathlib.Path(folder, VERSION_FILES[format]), format, quantization)

    return export_files(write, base_path, name, version=version)


def _export_format(args):
    """`export --format litert|onnx`: `model.tflite` / `model.onnx` in the version folder."""
    from zoo.exporting import check_backend, check_options

    check_options(args.format, args.quantization)
    model, _, described = _load_model(args)  # checks --weights before Keras starts
    check_backend(args.format)
    version_dir = export_version(
        model,
        args.base_path,
        args.serving_name or args.name,
        args.format,
        args.quantization,
        version=args.version,
    )
    quantized = f", {args.quantization}" if args.quantization else ""
    print(
        f"exported {args.name} ({described}) as {args.format}{quantized} to "
        f"{pathlib.Path(version_dir).resolve()}"
    )
    return 0


def _query(args):
    import numpy as np

    import serving

    if bool(args.rest) == bool(args.grpc):
        raise UsageError("give exactly one of --rest URL or --grpc HOST:PORT")
    if args.grpc:
        _start_tensorflow_quietly()  # the gRPC stubs import TensorFlow
    signature_name = args.signature_name or (
        "serving_images_attention" if args.attention else "serving_images"
    )
    missing = [path for path in args.images if not pathlib.Path(path).is_file()]
    if missing:
        raise UsageError(f"no such image file: {missing[0]}")
    payload = [pathlib.Path(path).read_bytes() for path in args.images]
    with serving.Client(rest=args.rest, grpc=args.grpc, timeout=args.timeout) as client:
        outputs = client.predict(
            args.model_name, np.array(payload, dtype=object), signature_name=signature_name
        )
    if args.attention:
        from serving.attention import KEY_PREFIX

        maps = {key: value for key, value in outputs.items() if key.startswith(KEY_PREFIX)}
        if not maps:
            raise UsageError(
                f"signature {signature_name!r} of {args.model_name!r} returns no attention maps"
                f"; export the model with `{PROG} export --attention`"
            )
        outputs = {key: value for key, value in outputs.items() if key not in maps}
        for path in _write_attention_pngs(args.images, maps, pathlib.Path(args.attention)):
            print(f"attention map written to {path}")
    if "class_ids" in outputs and np.ndim(outputs["class_ids"]) == 3:
        # a segmentation model's image signature: one class map per image
        _write_masks(args.images, outputs["class_ids"], args.output)
    elif "probabilities" in outputs:
        _print_top(
            args.images, outputs["probabilities"], outputs["probabilities"].shape[-1], args.top
        )
    else:
        for key, value in outputs.items():
            print(f"{key}: {np.asarray(value).tolist()}")
    return 0


def _plain_module(package, filename):
    """A pure-Python module file of `package` loaded on its own, without running the package's
    `__init__` (which may import Keras and TensorFlow)."""
    import importlib.util

    location = importlib.util.find_spec(package).submodule_search_locations[0]
    spec = importlib.util.spec_from_file_location(
        f"_{package.replace('.', '_')}_{filename[:-3]}", pathlib.Path(location) / filename
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_attention_pngs(image_paths, maps, out_dir):
    """One PNG per image and map in `out_dir`: a spatial map `(batch, h, w)` upsampled over
    the image (at the image's own size), a channel map `(batch, C)` as a labelled strip.
    Named `<image stem>.<layer>.png` (`<index>-<stem>` when two images share a stem)."""
    import re

    import numpy as np
    from PIL import Image

    from serving.attention import KEY_PREFIX

    map_images = _plain_module("zoo.train", "map_images.py")  # numpy + Pillow only
    out_dir.mkdir(parents=True, exist_ok=True)
    stems = [pathlib.Path(path).stem for path in image_paths]
    written = []
    for index, (path, stem) in enumerate(zip(image_paths, stems)):
        if stems.count(stem) > 1:
            stem = f"{index}-{stem}"
        with Image.open(path) as image:
            display = np.asarray(image.convert("RGB"), "float32")[None] / 255.0
        for key, value in maps.items():
            layer = key[len(KEY_PREFIX) :]
            picture = np.asarray(value, "float32")[index : index + 1]
            if picture.ndim == 3:
                pixels = map_images.overlay(display, picture)[0]
            else:
                pixels = map_images.channel_image(picture, layer)[0]
            target = out_dir / f"{stem}.{re.sub(r'[^A-Za-z0-9_.-]', '_', layer)}.png"
            Image.fromarray(pixels).save(target)
            written.append(target)
    return written


def _attention(args):
    # keras_attention/names.py is plain data, but importing it through the package runs
    # keras_attention/__init__, which imports Keras (registering the layers); load the file
    # on its own instead.
    import importlib.util

    package = importlib.util.find_spec("keras_attention")
    path = pathlib.Path(package.submodule_search_locations[0]) / "names.py"
    spec = importlib.util.spec_from_file_location("_keras_attention_names", path)
    names = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(names)
    for name, description in names.describe_attention().items():
        print(f"{name:22s} {description}")
    return 0


def _serve(args):
    from serving import server

    return server.main(args)


def _train(args):
    import zoo.train

    if args.train_epochs is not None and not is_positive_int(args.train_epochs):
        raise SystemExit("train: --epochs must be at least 1")
    run_dir = pathlib.Path(args.run_dir or pathlib.Path("runs") / args.name)
    print(f"training {args.name} on {args.data}; run folder {run_dir.resolve()}")
    try:
        model, history = zoo.train.fit(
            args.name,
            args.data,
            epochs=args.train_epochs,
            batch_size=args.batch_size,
            mixed_precision=args.mixed_precision,
            jit_compile=args.jit_compile,
            run_dir=str(run_dir),
            checkpoint_every=args.checkpoint_every,
            seed=args.seed,
            image_size=args.image_size,
            steps_per_epoch=args.steps_per_epoch,
        )
    except zoo.train.NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    run, logs = history.run, history.history
    metrics = ", ".join(
        f"{key} {values[-1]:.4f}"
        for key, values in logs.items()
        if "accuracy" in key or key.endswith("loss")
    )
    print(
        f"done: {run['steps']} steps in {run['seconds']:.1f} s "
        f"({run['examples_per_second']:.1f} img/s overall, including compilation and "
        f"validation; batch {run['batch_size']}, "
        f"{run['mixed_precision']} precision"
        + (f", resumed at step {run['resumed_from_step']}" if run["resumed_from_step"] else "")
        + f"); final {metrics}"
    )
    print(f"model: {pathlib.Path(run['model_path']).resolve()}")
    print(
        f"checkpoints (BackupAndRestore, every {args.checkpoint_every or 'epoch'} "
        f"{'steps' if args.checkpoint_every else ''}): {(run_dir / 'backup').resolve()} "
        "(removed after a finished run; rerun the same command to resume an interrupted one)"
    )
    print(f"TensorBoard logs (scalars, attention maps): {pathlib.Path(run['log_dir']).resolve()}")
    print(f"  {_tool('tensorboard')} --logdir {run_dir.resolve()}")
    return 0


def _input_shape(text):
    try:
        shape = tuple(int(part) for part in text.lower().replace(",", "x").split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or not all(is_positive_int(n) for n in shape):
        raise argparse.ArgumentTypeError(
            f"expected HEIGHTxWIDTHxCHANNELS, e.g. 28x28x1, got {text!r}"
        )
    return shape


def _add_weights_flags(parser):
    parser.add_argument(
        "--weights",
        default=None,
        help="a weights tag (see `info NAME`), a file (.keras model or .weights.h5 written by "
        "`train`, timm .safetensors), or 'none' for random weights (default: the model's "
        "pretrained weights: 'imagenet', or its MNIST tag)",
    )
    parser.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="classifier width of a .weights.h5 / .safetensors file "
        "(a .keras file carries its own)",
    )
    parser.add_argument(
        "--input-shape",
        type=_input_shape,
        default=None,
        help="HEIGHTxWIDTHxCHANNELS the weights were trained at, e.g. 28x28x1 "
        "for `train --data mnist` (a .keras file carries its own)",
    )


class _Parser(argparse.ArgumentParser):
    """Usage errors on one line (argparse prints the whole usage first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    parser = _Parser(
        prog=PROG,
        description="Visual attention layers for Keras 3, an attention model zoo, serving.",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of an error instead of one line",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="export the shipped pretrained spatial transformer network, serve it with "
        "the embedded TF-Serving-compatible server and query it over REST and gRPC; with "
        "--train, train a small CBAM CNN and plot its attention map first",
    )
    demo.add_argument(
        "--train",
        action="store_true",
        help="train the CBAM CNN demo instead of serving the pretrained model",
    )
    demo.add_argument("--count", type=int, default=8, help="test digits to query (default: 8)")
    demo.add_argument("--epochs", type=int, default=1)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--output-dir",
        default="outputs",
        help="where the PNG and the exported models go (default: outputs)",
    )
    demo.add_argument(
        "--no-serve",
        action="store_true",
        help="with --train: only train and plot; skip the export / serve / query part",
    )
    demo.set_defaults(handler=_demo)

    listing = commands.add_parser("list", help="list the zoo's models and their weights")
    listing.add_argument(
        "pattern",
        nargs="?",
        default=None,
        help="shell-style wildcard on the name, e.g. '*se*' (quote it)",
    )
    listing.add_argument("--pretrained", action="store_true", help="only models with weights")
    listing.set_defaults(handler=_list)

    info = commands.add_parser("info", help="a model's registry entry: weights, sources, metrics")
    info.add_argument("name")
    info.set_defaults(handler=_info)

    predict = commands.add_parser(
        "predict",
        help="classify image files with a zoo model (its pretrained weights unless "
        "--weights says otherwise); a segmentation model writes each image's mask as a "
        "palette PNG",
    )
    predict.add_argument("name")
    predict.add_argument("images", nargs="+", help="JPEG / PNG files")
    _add_weights_flags(predict)
    predict.add_argument("--top", type=int, default=5)
    predict.add_argument(
        "--output",
        default=None,
        help="segmentation models: the folder for the masks (default: beside each image, "
        "as NAME.mask.png)",
    )
    predict.set_defaults(handler=_predict)

    export = commands.add_parser(
        "export",
        help="export a zoo model as a TF Serving SavedModel (serving_default and an "
        "encoded-image signature with the model's preprocessing)",
    )
    export.add_argument("name")
    _add_weights_flags(export)
    export.add_argument(
        "--no-image-signature",
        action="store_true",
        help="export serving_default only (no encoded-image signature)",
    )
    export.add_argument(
        "--attention",
        nargs="*",
        metavar="LAYER",
        default=None,
        help="also export the `attention` and `serving_images_attention` signatures: the "
        "predictions plus the attention maps of the layers named (default: every attention "
        "layer), uint8 with a scale and offset per image",
    )
    export.add_argument(
        "--base-path",
        default="models",
        help="TF Serving's model base path minus the model name (default: models)",
    )
    export.add_argument("--serving-name", default=None, help="the served name (default: NAME)")
    export.add_argument(
        "--version", type=int, default=None, help="version number (default: the next free one)"
    )
    export.add_argument(
        "--format",
        choices=("saved_model", "litert", "onnx"),
        default="saved_model",
        help="saved_model (default, TF Serving signatures), litert (model.tflite, served by "
        "`serve --prefer_tflite_model`) or onnx (model.onnx), in the version folder",
    )
    export.add_argument(
        "--quantization",
        choices=("float16", "dynamic_int8"),
        default=None,
        help="LiteRT only: float16 weights, or dynamic-range int8 (default: float32)",
    )
    export.set_defaults(handler=_export)

    query = commands.add_parser(
        "query",
        help="send image files to a TF Serving endpoint (this project's server or the real one)",
    )
    query.add_argument("model_name")
    query.add_argument("images", nargs="+", help="JPEG / PNG files")
    query.add_argument("--rest", default=None, help="e.g. http://localhost:8501")
    query.add_argument("--grpc", default=None, help="e.g. localhost:8500")
    query.add_argument(
        "--signature-name",
        default=None,
        help="default: serving_images, or serving_images_attention with --attention",
    )
    query.add_argument(
        "--attention",
        metavar="OUT_DIR",
        default=None,
        help="ask for the attention maps (a model exported with --attention) and write each "
        "one as a PNG over its image in OUT_DIR",
    )
    query.add_argument("--timeout", type=float, default=30.0)
    query.add_argument("--top", type=int, default=5)
    query.add_argument(
        "--output",
        default=None,
        help="segmentation models: the folder for the masks (default: beside each image, "
        "as NAME.mask.png)",
    )
    query.set_defaults(handler=_query)

    train = commands.add_parser(
        "train",
        help="train a zoo model with its recipe (progress bar, TensorBoard logs with "
        "attention maps, resumable checkpoints)",
    )
    train.add_argument("name")
    train.add_argument(
        "--data",
        default="mnist",
        help="mnist, translated_mnist, cluttered_mnist, rts_mnist, or a folder "
        "with one subfolder of images per class (default: mnist)",
    )
    train.add_argument(
        "--epochs", dest="train_epochs", type=int, default=None, help="default: the recipe's"
    )
    train.add_argument("--batch-size", type=int, default=None, help="default: the recipe's")
    train.add_argument("--image-size", type=int, default=None, help="resize images to this side")
    train.add_argument("--mixed-precision", choices=("off", "bfloat16", "float16"), default="off")
    train.add_argument(
        "--jit-compile",
        action="store_const",
        const=True,
        default="auto",
        help="compile the step with XLA (default: Keras' auto)",
    )
    train.add_argument("--run-dir", default=None, help="default: runs/NAME")
    train.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        help="back up every N steps (default: every epoch)",
    )
    train.add_argument(
        "--steps-per-epoch",
        type=int,
        default=None,
        help="default: every full batch of the training split",
    )
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(handler=_train)

    attention = commands.add_parser("attention", help="list the names create_attention accepts")
    attention.set_defaults(handler=_attention)

    from serving.server import add_flags

    serve = commands.add_parser(
        "serve",
        help="serve SavedModels over TF Serving's gRPC and REST APIs "
        "(tensorflow_model_server flags)",
    )
    add_flags(serve)
    serve.set_defaults(handler=_serve)
    return parser


# TensorFlow's start-up lines on a machine without a GPU (and its CPU-feature note): they are
# written by C++ before TF_CPP_MIN_LOG_LEVEL applies, so they are filtered from stderr.
_TF_NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "cudart_stub.cc",
    "Could not find cuda drivers",
    "failed call to cuInit",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "computation placer already registered",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions",
    "TF-TRT Warning: Could not find TensorRT",
    "oneDNN custom operations are on",
)


def _start_tensorflow_quietly():
    """Import TensorFlow and probe its devices with its start-up chatter filtered out of
    stderr (other lines pass through). TF_CPP_MIN_LOG_LEVEL defaults to 2 (errors only);
    who sets it to 0 wants all of TensorFlow's logging and gets it unfiltered."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0":
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not any(noise in line for noise in _TF_NOISE):
                    sys.stderr.write(line)
            sys.stderr.flush()


# commands that answer from the registry alone (no TensorFlow, no Keras)
# (predict and export start it themselves, after checking their arguments)
_WITHOUT_TENSORFLOW = ("list", "info", "attention", "predict", "export", "query")


def _one_line(error):
    """The message of `error` on one line, with its kind where the message alone is unclear."""
    message = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, KeyError):
        message = f"missing {message}"
    if (
        not isinstance(error, (UsageError, ValueError, OSError, KeyError))
        and type(error).__name__ != "ServingError"
    ):
        message = f"{type(error).__name__}: {message}"
    return message


def main(argv=None):
    """Run the command line; an error a user can cause prints one line on stderr and
    returns a non-zero status (`--debug` shows the traceback instead)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    parser = build_parser()
    args = parser.parse_args([arg for arg in argv if arg != "--debug"])
    if not is_positive_int(getattr(args, "epochs", 1)):
        parser.error("--epochs must be at least 1")
    if not is_positive_int(getattr(args, "count", 1)):
        parser.error("--count must be at least 1")
    try:
        if args.command not in _WITHOUT_TENSORFLOW:
            _start_tensorflow_quietly()
        return args.handler(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`... | head`): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as error:
        if debug:
            raise
        print(
            f"{PROG} {args.command}: error: {_one_line(error)} (--debug shows the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
