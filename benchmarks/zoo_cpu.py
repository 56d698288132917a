"""Batch-1 inference latency of zoo models against timm and keras.applications.ResNet50.

One process, one input per side, a warm-up, then every variant in turn in every round
(interleaved, so machine noise hits all alike); medians in milliseconds. Keras (TF backend)
runs each model as a `tf.function` (graph mode) and with XLA (`jit_compile=True`); timm runs
eager in `torch.inference_mode()` with as many threads as TF. The ratio column is the zoo's
best Keras variant over timm's eager time (below 1 = the zoo is faster).

Usage: `python benchmarks/zoo_cpu.py [--models seresnet50 ecaresnet50d gcresnet50t]
[--size 224] [--repeats 20]` (needs the oracle extra). Writes benchmarks/results/zoo_cpu.md
and .json.
"""

import argparse
import json
import os
import pathlib
import platform

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import timm  # noqa: E402  (timm before TensorFlow: ARCHITECTURE.md)
import torch  # noqa: E402
from layers_cpu import interleaved_medians  # noqa: E402  (benchmarks/, beside this script)

import zoo  # noqa: E402

RESULTS = pathlib.Path(__file__).parent / "results"


def keras_variants(label, model, x):
    graph = tf.function(lambda t: model(t, training=False))
    xla = tf.function(lambda t: model(t, training=False), jit_compile=True)
    tensor = tf.constant(x)
    return {
        f"{label} tf.function": lambda: graph(tensor).numpy(),
        f"{label} XLA": lambda: xla(tensor).numpy(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", default=["seresnet50", "ecaresnet50d", "gcresnet50t"]
    )
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--output", default=str(RESULTS / "zoo_cpu"))
    args = parser.parse_args()

    threads = os.cpu_count()
    torch.set_num_threads(threads)
    x = np.random.default_rng(0).normal(size=(1, args.size, args.size, 3)).astype("float32")
    x_torch = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    rows = []
    baseline = keras.applications.ResNet50(weights=None, input_shape=(args.size, args.size, 3))
    base = interleaved_medians(
        keras_variants("keras.applications.ResNet50", baseline, x), args.repeats
    )
    for name in args.models:
        ours = zoo.build(name, input_shape=(args.size, args.size, 3))
        reference = timm.create_model(name, pretrained=False).eval()

        def run_timm(reference=reference):
            with torch.inference_mode():
                return reference(x_torch)

        functions = keras_variants(f"zoo {name}", ours, x)
        functions[f"timm {name} eager"] = run_timm
        medians = interleaved_medians(functions, args.repeats)
        timm_ms = medians[f"timm {name} eager"]
        best = min(medians[f"zoo {name} tf.function"], medians[f"zoo {name} XLA"])
        rows.append(
            {
                "model": name,
                **{k: round(v, 2) for k, v in medians.items()},
                "zoo_best_ms": round(best, 2),
                "timm_ms": round(timm_ms, 2),
                "ratio_zoo_over_timm": round(best / timm_ms, 3),
            }
        )
        print(rows[-1], flush=True)
        keras.backend.clear_session()

    header = (
        f"Batch 1, {args.size}x{args.size}, float32, eval; {platform.processor() or platform.machine()}, "
        f"{threads} threads; TF {tf.__version__}, Keras {keras.__version__}, torch "
        f"{torch.__version__}, timm {timm.__version__}; median ms of {args.repeats} "
        f"interleaved rounds."
    )
    lines = [
        "# Zoo inference latency on CPU",
        "",
        header,
        "",
        f"keras.applications.ResNet50 (same run): tf.function "
        f"{base['keras.applications.ResNet50 tf.function']:.1f} ms, XLA "
        f"{base['keras.applications.ResNet50 XLA']:.1f} ms.",
        "",
        "| model | zoo tf.function ms | zoo XLA ms | timm eager ms | zoo best / timm |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        name = row["model"]
        lines.append(
            f"| {name} | {row[f'zoo {name} tf.function']:.1f} | "
            f"{row[f'zoo {name} XLA']:.1f} | {row['timm_ms']:.1f} | "
            f"{row['ratio_zoo_over_timm']:.2f} |"
        )
    output = pathlib.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    output.with_suffix(".json").write_text(
        json.dumps({"header": header, "keras_applications_resnet50": base, "rows": rows}, indent=1)
        + "\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
