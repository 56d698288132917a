"""Export matrix: every zoo model x every export format, converted and run in its own runtime.

For each model of `zoo.list_models()` (random weights, logits head, one input size) and each
of SavedModel, LiteRT float32 / float16 / dynamic-range int8 and ONNX: whether `zoo.export`
converts it (or its error; LiteRT converts the SavedModel of the first column, as
`zoo.export(format="litert")` converts the one it writes), the file size, the largest logit error against Keras on the same
input (absolute, and relative to the largest Keras logit), and the CPU batch-1 latency in the
format's runtime against Keras' compiled `predict_on_batch` on the same input (median of
`--repeats` calls after one warm-up call). One run; writes
`benchmarks/results/export_matrix.md` and `.json`.

    python benchmarks/export_matrix.py --size 64          # all models at 64x64 (MNIST ones: own size)
    python benchmarks/export_matrix.py --models stn_cnn ram --size 0   # registry sizes
    python benchmarks/export_matrix.py --backend jax --models stn_cnn   # JAX section

`--backend jax` runs the same measurement under KERAS_BACKEND=jax (SavedModel through Keras'
jax2tf export; the formats `zoo.export` refuses there are recorded as refused) and writes the
table's JAX section.
"""

import argparse
import json
import os
import pathlib
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

COLUMNS = (
    ("saved_model", None),
    ("litert", None),
    ("litert", "float16"),
    ("litert", "dynamic_int8"),
    ("onnx", None),
)
RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def column_name(format, quantization):
    return format if quantization is None else f"{format} {quantization}"


def _median_seconds(fn, repeats):
    fn()  # warm-up (graph tracing, allocation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _input_shape(spec, size):
    """The registry's input shape, or `size` x `size` for a model that accepts other sizes
    (one whose height and width are pinned, or a complete MNIST model, keeps its own)."""
    default = tuple(spec.default_input_shape)
    if not size or spec.dynamic_size is not True or spec.kind == "model":
        return default
    # HaloNet needs multiples of its block size times 32: 256 is the smallest it takes
    if spec.name.startswith("halonet"):
        return (max(size, 256), max(size, 256), default[-1])
    # SAN's last stage pads its 7x7 footprint by reflection: it needs 4x4 maps, 128x128 inputs
    if spec.name.startswith("san"):
        return (max(size, 128), max(size, 128), default[-1])
    return (size, size, default[-1])


# models whose output is a sum of probabilities, with no logits head to export
PROBABILITIES_ONLY = ("two_level_mnist",)


def measure_model(name, size, repeats, workdir):
    import keras

    import zoo
    from zoo import registry
    from zoo.exporting import (
        ExportedModel,
        ExportError,
        check_backend,
        convert_saved_model_to_litert,
        functional_model,
    )

    spec = registry.get_spec(name)
    shape = _input_shape(spec, size)
    keras.utils.set_random_seed(0)
    kwargs = dict(weights=None, input_shape=shape, classifier_activation=None)
    if spec.kind == "model" and name == "ram":
        kwargs["mc_samples"] = 0  # follow the location means: a deterministic graph
    if name in PROBABILITIES_ONLY:
        kwargs["classifier_activation"] = "softmax"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = functional_model(zoo.load(name, **kwargs), shape)
    x = np.random.default_rng(0).random((1, *shape), dtype=np.float32)
    reference = np.asarray(model.predict_on_batch(x))
    keras_seconds = _median_seconds(lambda: model.predict_on_batch(x), repeats)
    row = {
        "model": name,
        "input_shape": list(shape),
        "parameters": int(model.count_params()),
        "keras_ms": keras_seconds * 1e3,
        "formats": {},
    }
    for format, quantization in COLUMNS:
        column = column_name(format, quantization)
        suffix = {"litert": ".tflite", "onnx": ".onnx"}.get(format, "")
        path = pathlib.Path(workdir, f"{name}.{column.replace(' ', '.')}{suffix}")
        start = time.perf_counter()
        saved_model = row["formats"].get("saved_model", {})
        try:
            check_backend(format)
        except ValueError as error:  # a format Keras does not export on this backend
            row["formats"][column] = {"converts": False, "error": f"refused: {error}"}
            continue
        try:
            if format == "litert" and saved_model.get("converts"):
                # what zoo.export(format="litert") does after writing the same SavedModel
                convert_saved_model_to_litert(saved_model["path"], path, quantization, model)
            else:
                zoo.export(model, path, format=format, quantization=quantization)
        except ExportError as error:
            row["formats"][column] = {"converts": False, "error": str(error)}
            print(f"  {column}: does not convert: {error}", flush=True)
            continue
        convert_seconds = time.perf_counter() - start
        size_bytes = (
            sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            if path.is_dir()
            else path.stat().st_size
        )
        cell = {"converts": True, "convert_s": convert_seconds, "bytes": size_bytes}
        if format == "saved_model":
            cell["path"] = str(path)
        try:
            runtime = ExportedModel(path, format)
            outputs = runtime.predict(x)
            error = np.abs(outputs - reference)
            cell.update(
                max_abs_error=float(error.max()),
                max_rel_error=float(error.max() / max(np.abs(reference).max(), 1e-12)),
                top1_agrees=bool(np.argmax(outputs) == np.argmax(reference)),
                ms=_median_seconds(lambda: runtime.predict(x), repeats) * 1e3,
            )
        except Exception as error:  # converts, but its runtime refuses it: part of the result
            cell.update(runs=False, error=f"{type(error).__name__}: {str(error)[:300]}")
        row["formats"][column] = cell
        print(f"  {column}: {json.dumps(cell)}", flush=True)
    row["formats"].get("saved_model", {}).pop("path", None)
    return row


LAYER_COLUMNS = (("litert", None), ("onnx", None))


def measure_layer(case, workdir):
    """One harness case of the layer suite (tests/keras_attention) as a model of its own:
    converts or not, and the largest error against Keras, per format."""
    import keras

    import zoo
    from tests.layer_harness import randomize_weights
    from zoo.exporting import ExportedModel, ExportError

    shapes = case.input_shape if isinstance(case.input_shape, list) else [case.input_shape]
    keras.utils.set_random_seed(0)
    inputs = [keras.Input(shape[1:], name=f"input_{i}") for i, shape in enumerate(shapes)]
    layer = case.build_layer()
    outputs = layer(inputs if len(inputs) > 1 else inputs[0])
    model = keras.Model(inputs, outputs, name=case.id)
    randomize_weights(layer)  # zero-initialised residual scales would hide the attention path
    rng = np.random.default_rng(0)
    xs = [rng.random((1, *shape[1:]), dtype=np.float32) for shape in shapes]
    reference = keras.ops.convert_to_numpy(model(xs if len(xs) > 1 else xs[0], training=False))
    row = {
        "layer": type(layer).__name__,
        "case": case.id,
        "input_shapes": [list(shape[1:]) for shape in shapes],
        "formats": {},
    }
    for format, _ in LAYER_COLUMNS:
        path = pathlib.Path(workdir, f"{case.id}.{'tflite' if format == 'litert' else 'onnx'}")
        try:
            zoo.export(model, path, format=format)
        except ExportError as error:
            row["formats"][format] = {"converts": False, "error": str(error)}
            continue
        cell = {"converts": True}
        try:
            output = ExportedModel(path, format).predict(xs)
            error = np.abs(output - reference)
            cell["max_rel_error"] = float(error.max() / max(np.abs(reference).max(), 1e-12))
        except Exception as error:  # converts but its runtime refuses it: part of the result
            cell.update(runs=False, error=f"{type(error).__name__}: {str(error)[:300]}")
        row["formats"][format] = cell
    return row


def layer_cases():
    """The first harness case of every layer class of keras_attention (the layer suite's
    configurations and input shapes), weights randomised as the suite does."""
    from tests.keras_attention import all_harness_cases

    seen, cases = set(), []
    for case in all_harness_cases():
        if case.cls not in seen:
            seen.add(case.cls)
            cases.append(case)
    return cases


def layer_classes(name):
    """The keras_attention layer classes a zoo model is built from (nested models too)."""
    import warnings

    import keras_attention
    import zoo

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = zoo.load(name, weights=None)  # the registry's input size builds every model
    found = set()

    def walk(layer):
        for sub in getattr(layer, "layers", None) or []:
            if type(sub).__module__.startswith(keras_attention.__name__):
                found.add(type(sub).__name__)
            walk(sub)

    walk(model)
    return sorted(found)


def _expected(classes, layer_rows):
    """Per format, whether every layer class of a model converted in the layer table."""
    results = {}
    for format, _ in LAYER_COLUMNS:
        failing = [
            row["layer"]
            for row in layer_rows
            if row["layer"] in classes and not row["formats"][format]["converts"]
        ]
        results[format] = failing
    return results


def _size(n):
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def _cell_text(cell, keras_ms):
    if not cell["converts"]:
        return "no: " + cell["error"].split(": ", 1)[-1].replace("|", "\\|")[:160]
    if cell.get("runs") is False:
        # onnxruntime's status prefix ("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : ...") says
        # nothing the message after it does not
        error = re.sub(r"\[ONNXRuntimeError\] : \d+ : [A-Z_]+ : ", "", cell["error"])
        return "converts, does not run: " + error.replace("|", "\\|")[:160]
    return (
        f"{_size(cell['bytes'])}; err {cell['max_abs_error']:.1e} "
        f"({cell['max_rel_error']:.0e} rel){'' if cell['top1_agrees'] else ', top-1 differs'}; "
        f"{cell['ms']:.1f} ms ({keras_ms / cell['ms']:.1f}x Keras)"
    )


def _model_table(part, all_models, backend="tensorflow"):
    columns = [column_name(f, q) for f, q in COLUMNS]
    rows = part["rows"] if part else []
    if backend != "tensorflow":
        return _backend_model_table(part, all_models, backend, columns)
    lines = [
        "## Models",
        "",
        part["header"] if part else "Not measured yet.",
        "",
        "Each cell: file size; largest absolute logit error against Keras on the same input "
        "(and relative to the largest Keras logit); CPU batch-1 latency in the format's own "
        "runtime (TensorFlow for SavedModel, LiteRT's interpreter, onnxruntime) and the "
        "speed-up over Keras' compiled `predict_on_batch`. Or `no:` and the converter's error.",
        "",
        "| model | input | Keras ms | " + " | ".join(columns) + " |",
        "|---|---|---|" + "---|" * len(columns),
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| `{row['model']}` | | | " + f"model failed: {row['error']} |" * 5)
            continue
        cells = [_cell_text(row["formats"][c], row["keras_ms"]) for c in columns]
        shape = "x".join(str(d) for d in row["input_shape"])
        lines.append(
            f"| `{row['model']}` | {shape} | {row['keras_ms']:.1f} | " + " | ".join(cells) + " |"
        )
    measured = {row["model"] for row in rows}
    uses = _layer_use()
    layer_rows = (_load_results().get("layers") or {}).get("rows", [])
    for name in all_models:
        if name in measured:
            continue
        text = "not measured in this run"
        if name in uses and layer_rows:
            expected = _expected(uses[name], layer_rows)
            text += "; expected from its layers ({}): ".format(", ".join(uses[name]) or "none")
            text += ", ".join(
                f"{format} " + ("converts" if not failing else f"fails ({', '.join(failing)})")
                for format, failing in expected.items()
            )
        lines.append(f"| `{name}` | | | " + " | ".join([text] + [""] * (len(columns) - 1)) + " |")
    converts = {
        c: sum(r.get("formats", {}).get(c, {}).get("converts", False) for r in rows)
        for c in columns
    }
    if len(measured) < len(all_models):
        lines += [
            "",
            "Models not measured in this run have their expected outcome from the layer table "
            "(a prediction, not a measurement): on the shared 2-core machine of this run one "
            "ResNet-50-size model took minutes per format (aa_resnet50's SavedModel export "
            "alone 309 s), so `python benchmarks/export_matrix.py` (all models) was left for a "
            "machine with CPU to spare.",
        ]
    lines += [
        "",
        "`ram` is exported with `mc_samples=0` (the glimpse locations follow the policy means): "
        "its sampled inference draws random locations, which no two runtimes reproduce. "
        "`fcan_mnist_random` (the baseline of `fcan_mnist`) draws its glimpse cells at random "
        "at inference too, so its error against Keras is that of two different draws. "
        "`two_level_mnist` adds the two levels' class probabilities and has no logits head: "
        "its row is of that sum.",
        "",
        f"Measured models that convert, by format ({len(rows)} of {len(all_models)} measured): "
        + ", ".join(f"{c} {converts[c]}" for c in columns)
        + ".",
        "",
    ]
    return lines


def _backend_model_table(part, all_models, backend, columns):
    """The model table of a run on another backend: its formats and the models it measured."""
    from zoo.exporting import BACKEND_FORMATS

    refused = [c for c in columns if c.split()[0] not in BACKEND_FORMATS[backend]]
    columns = [c for c in columns if c not in refused]
    rows = part["rows"] if part else []
    lines = [
        f"## Models on the {'JAX' if backend == 'jax' else backend} backend",
        "",
        part["header"] if part else "Not measured yet.",
        "",
        "Cells as in the table above. Not in it: "
        + ", ".join(refused)
        + f", which `zoo.export` does not write on the {backend} backend "
        "(`zoo.exporting.BACKEND_FORMATS`); it refuses them with a `ValueError` naming the "
        "backend and the format.",
        "",
        "| model | input | Keras ms | " + " | ".join(columns) + " |",
        "|---|---|---|" + "---|" * len(columns),
    ]
    for row in rows:
        if "error" in row:
            failed = f"model failed: {row['error']}".replace("|", "\\|")
            lines.append(f"| `{row['model']}` | | | {failed} |" + " |" * (len(columns) - 1))
            continue
        cells = [_cell_text(row["formats"][c], row["keras_ms"]) for c in columns]
        shape = "x".join(str(d) for d in row["input_shape"])
        lines.append(
            f"| `{row['model']}` | {shape} | {row['keras_ms']:.1f} | " + " | ".join(cells) + " |"
        )
    measured = [row["model"] for row in rows]
    cells = {c: [r["formats"][c] for r in rows if c in r.get("formats", {})] for c in columns}
    counts = ", ".join(
        f"{c} {sum(cell['converts'] for cell in cells[c])} / "
        f"{sum(cell['converts'] and cell.get('runs', True) for cell in cells[c])}"
        for c in columns
    )
    missing = [name for name in all_models if name not in measured]
    coverage = (
        f"All {len(all_models)} zoo models measured."
        if not missing
        else f"A subset: {len(measured)} of the {len(all_models)} zoo models measured; not run "
        f"on {backend}: {', '.join(missing)}."
    )
    lines += [
        "",
        f"{coverage} Models that convert / whose file also runs in its runtime: {counts}.",
        "",
    ]
    return lines


def _layer_table(part):
    lines = [
        "## Layers",
        "",
        part["header"] if part else "Not measured yet.",
        "",
        "Every layer class of `keras_attention`, in the first configuration of the layer test "
        "suite (tests/keras_attention), alone in a model on a batch of one: whether it "
        "converts (LiteRT float32 with builtin ops only; ONNX) and the largest output error "
        "against Keras relative to the largest output. A zoo model converts when all its "
        "layers do.",
        "",
        "| layer | input | litert | onnx |",
        "|---|---|---|---|",
    ]
    for row in part["rows"] if part else ():
        cells = []
        for format, _ in LAYER_COLUMNS:
            cell = row["formats"][format]
            if not cell["converts"]:
                text = "no: " + cell["error"].split(": ", 1)[-1]
            elif cell.get("runs") is False:
                text = "converts; " + cell["error"]
            else:
                text = f"yes, err {cell['max_rel_error']:.0e}"
            cells.append(text.replace("|", "\\|")[:200])
        shapes = ", ".join("x".join(str(d) for d in shape) for shape in row["input_shapes"])
        lines.append(f"| `{row['layer']}` | {shapes} | " + " | ".join(cells) + " |")
    if part:
        rows = part["rows"]
        lines += [
            "",
            "Layers that convert: "
            + ", ".join(
                f"{format} {sum(r['formats'][format]['converts'] for r in rows)}/{len(rows)}"
                for format, _ in LAYER_COLUMNS
            )
            + ".",
        ]
    return lines + [""]


def write_tables(results, all_models):
    lines = [
        "# Export matrix",
        "",
        "`python benchmarks/export_matrix.py` (models) and `--layers` (layers); "
        "`zoo.export` to each format, each file run in its own runtime.",
        "",
    ]
    lines += _layer_table(results.get("layers"))
    lines += _model_table(results.get("models"), all_models)
    if results.get("models_jax"):
        lines += _model_table(results["models_jax"], all_models, backend="jax")
    return "\n".join(lines)


def _versions():
    import keras
    import onnxruntime
    import tensorflow as tf
    from ai_edge_litert import __version__ as litert_version

    from zoo.exporting import ONNX_OPSET

    if keras.backend.backend() == "jax":
        import jax

        onnx_converter = f"JAX {jax.__version__}"
    else:
        import tf2onnx

        onnx_converter = f"tf2onnx {tf2onnx.__version__} (opset {ONNX_OPSET})"
    return (
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, ai-edge-litert "
        f"{litert_version}, {onnx_converter}, onnxruntime {onnxruntime.__version__}"
    )


def _machine():
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores (shared)"


LAYER_USE = RESULTS / "export_layer_use.json"


def _layer_use():
    return json.loads(LAYER_USE.read_text()) if LAYER_USE.is_file() else {}


def _load_results():
    path = RESULTS / "export_matrix.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _save(output, results, all_models):
    output.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    output.with_suffix(".md").write_text(write_tables(results, all_models))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="default: every model of zoo.list_models()")
    parser.add_argument(
        "--layers", action="store_true", help="the layer table instead of the model table"
    )
    parser.add_argument(
        "--layer-classes", nargs="*", help="with --layers: only these classes (default: all)"
    )
    parser.add_argument(
        "--layer-use",
        action="store_true",
        help="record the layer classes of every zoo model (export_layer_use.json) and rewrite "
        "the tables",
    )
    parser.add_argument(
        "--size", type=int, default=64, help="input height and width (0: the registry's)"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--add",
        action="store_true",
        help="keep the table's rows of models not in --models (of layers not in "
        "--layer-classes) from the last run (default: replace the table)",
    )
    parser.add_argument(
        "--backend",
        choices=("tensorflow", "jax"),
        default=None,
        help="the Keras backend to export from (default: KERAS_BACKEND, else tensorflow); "
        "jax writes the table's JAX section",
    )
    parser.add_argument("--output", default=str(RESULTS / "export_matrix"))
    args = parser.parse_args(argv)
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend  # before Keras is first imported
    import keras

    import zoo

    models_key = "models" if keras.backend.backend() == "tensorflow" else "models_jax"

    all_models = zoo.list_models()
    output = pathlib.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    previous = output.with_suffix(".json")
    results = json.loads(previous.read_text()) if previous.is_file() else {}
    started = time.time()
    rows = []
    if args.layer_use:
        uses = {}
        for name in all_models:
            uses[name] = layer_classes(name)
            print(name, uses[name], flush=True)
        LAYER_USE.write_text(json.dumps(uses, indent=1) + "\n")
        _save(output, _load_results(), all_models)
        return 0
    with tempfile.TemporaryDirectory() as workdir:
        if args.layers:
            order = [case.cls.__name__ for case in layer_cases()]
            cases = [
                case
                for case in layer_cases()
                if not args.layer_classes or case.cls.__name__ in args.layer_classes
            ]
            names = {case.cls.__name__ for case in cases}
            kept = [
                row
                for row in (results.get("layers") or {}).get("rows", [])
                if args.add and row["layer"] not in names
            ]
            for case in cases:
                print(case.id, flush=True)
                rows.append(measure_layer(case, workdir))
                print(f"  {json.dumps(rows[-1]['formats'])[:400]}", flush=True)
                header = (
                    f"One run on {_machine()}; {_versions()}; {time.time() - started:.0f} s"
                    + ("." if len(rows) == len(cases) else f" (partial: {len(rows)} so far).")
                )
                if kept:
                    header += f" Rows of {len(kept)} other layers kept from an earlier run."
                results["layers"] = {
                    "header": header,
                    "rows": sorted(kept + rows, key=lambda row: order.index(row["layer"])),
                }
                _save(output, results, all_models)
                _empty(workdir)
        else:
            names = args.models or all_models
            kept = []
            if args.add:
                kept = [
                    row
                    for row in results.get(models_key, {}).get("rows", [])
                    if row["model"] not in names
                ]
            for name in names:
                print(name, flush=True)
                try:
                    rows.append(measure_model(name, args.size, args.repeats, workdir))
                except Exception as error:  # a model that does not build at this size
                    rows.append({"model": name, "error": f"{type(error).__name__}: {error}"[:300]})
                    print(f"  failed: {rows[-1]['error']}", flush=True)
                results[models_key] = {
                    "header": _model_header(args, started, len(rows), len(names)),
                    "rows": sorted(kept + rows, key=lambda row: row["model"]),
                }
                if kept:
                    results[models_key]["header"] += (
                        f" Rows of {len(kept)} other models kept from an earlier run"
                        f" ({', '.join(row['model'] for row in kept)})."
                    )
                _save(output, results, all_models)
                _empty(workdir)
    print(f"wrote {output.with_suffix('.md')}")
    return 0


def _empty(workdir):
    for leftover in pathlib.Path(workdir).iterdir():  # disk use: one model's files at most
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()


def _model_header(args, started, done, total):
    size_text = (
        f"inputs reduced to {args.size}x{args.size} (HaloNet 256x256, SAN 128x128; the MNIST models at "
        f"their own fixed sizes)"
        if args.size
        else "inputs at each model's registry size"
    )
    return (
        f"One run on {_machine()}, random weights (seed 0), logits head, batch 1; "
        f"{size_text}. {_versions()}; {time.time() - started:.0f} s"
        + ("." if done == total else f" (partial: {done} of {total} models so far).")
    )


if __name__ == "__main__":
    sys.exit(main())
