"""Grouped convolutions on TensorFlow: Keras' Conv2D(groups > 1) against GroupedConv2D.

Keras' TensorFlow backend runs a grouped convolution inside an XLA-compiled function; the zoo's
models use `keras_attention.convolution.GroupedConv2D`, one convolution per group. Both are
timed here in the same run on `seresnext50_32x4d` (32 groups in each bottleneck's 3x3
convolution): the zoo's model, and a clone whose GroupedConv2D layers are Keras' Conv2D with
the same configuration and weights. Reported: largest output difference, Keras
`predict_on_batch` (224x224, batch 1 and 8), one `train_on_batch` step (SGD, batch 4,
128x128), and the functions marked for XLA in each one's SavedModel (what
`tensorflow_model_server` refuses without `--xla_cpu_compilation_enabled=true`). Medians of
interleaved repeats, after a first call that compiles.

Usage: `python benchmarks/grouped_conv.py [--repeats 5]`. Writes
benchmarks/results/grouped_conv.md and .json.
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import zoo  # noqa: E402
from keras_attention.convolution import GroupedConv2D  # noqa: E402
from serving.saved_model import xla_compiled_functions  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
MODEL = "seresnext50_32x4d"


def with_keras_conv2d(model):
    """A clone of `model` with Keras' own Conv2D where it has GroupedConv2D, same weights."""

    def clone_layer(layer):
        cls = keras.layers.Conv2D if type(layer) is GroupedConv2D else type(layer)
        return cls.from_config(layer.get_config())

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    clone.set_weights(model.get_weights())
    return clone


def pair(input_size):
    ours = zoo.build(MODEL, input_shape=(input_size, input_size, 3))
    return {"keras_conv2d": with_keras_conv2d(ours), "grouped_conv2d": ours}


def interleaved_median_ms(models, step, repeats):
    for model in models.values():
        step(model)  # compiles
    times = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            step(model)
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--results-dir", default=str(RESULTS))
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []

    models = pair(224)
    n_grouped = sum(type(layer) is GroupedConv2D for layer in models["grouped_conv2d"].layers)
    for batch in (1, 8):
        x = rng.random((batch, 224, 224, 3), dtype=np.float32)
        outputs = {name: model.predict_on_batch(x) for name, model in models.items()}
        ms = interleaved_median_ms(models, lambda m: m.predict_on_batch(x), args.repeats)
        rows.append(
            {
                "case": f"predict_on_batch, batch {batch}, 224x224",
                **ms,
                "max_abs_difference": float(
                    np.abs(outputs["keras_conv2d"] - outputs["grouped_conv2d"]).max()
                ),
            }
        )
        print(rows[-1], flush=True)
    saved_model_functions = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, model in models.items():
            model.export(os.path.join(folder, name), verbose=False)
            saved_model_functions[name] = len(xla_compiled_functions(os.path.join(folder, name)))
    keras.backend.clear_session()

    models = pair(128)
    x = rng.random((4, 128, 128, 3), dtype=np.float32)
    y = rng.integers(0, 1000, size=4)
    for model in models.values():
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    ms = interleaved_median_ms(models, lambda m: m.train_on_batch(x, y), args.repeats)
    rows.append({"case": "train_on_batch (SGD), batch 4, 128x128", **ms})
    print(rows[-1], flush=True)
    for row in rows:
        row["speedup"] = row["keras_conv2d"] / row["grouped_conv2d"]

    lines = [
        "# Grouped convolutions on TensorFlow",
        "",
        f"`benchmarks/grouped_conv.py`: `{MODEL}` ({n_grouped} grouped 3x3 convolutions, 32 "
        "groups each) built by the zoo (`GroupedConv2D`: one convolution per group) and its "
        "clone with Keras' `Conv2D(groups=32)` (an XLA-compiled function on TensorFlow), same "
        f"weights, timed in the same run: medians of {args.repeats} interleaved calls after a "
        f"compiling one. {platform.machine()}, {os.cpu_count()} CPU cores, TensorFlow backend, "
        f"Keras {keras.__version__}.",
        "",
        "| case | Keras Conv2D ms | GroupedConv2D ms | speed-up | largest output difference |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        difference = row.get("max_abs_difference")
        difference = "" if difference is None else f"{difference:.1e}"
        lines.append(
            f"| {row['case']} | {row['keras_conv2d']:.1f} | {row['grouped_conv2d']:.1f} | "
            f"{row['speedup']:.2f}x | {difference} |"
        )
    lines += [
        "",
        "Functions marked `_XlaMustCompile` in the SavedModel (`serving.saved_model."
        "xla_compiled_functions`; `tensorflow_model_server` runs them only with "
        f"`--xla_cpu_compilation_enabled=true`): Keras Conv2D {saved_model_functions['keras_conv2d']}, "
        f"GroupedConv2D {saved_model_functions['grouped_conv2d']}.",
    ]
    out = pathlib.Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "grouped_conv.md").write_text("\n".join(lines) + "\n")
    (out / "grouped_conv.json").write_text(
        json.dumps({"rows": rows, "saved_model_xla_functions": saved_model_functions}, indent=1)
        + "\n"
    )
    print(f"wrote {out / 'grouped_conv.md'}")


if __name__ == "__main__":
    main()
