"""Self-attention cost versus feature-map side: latency and peak memory per layer (TF, CPU).

For each layer and side S in --sides (default 32 48 64 96 128), a fresh Python process
builds the layer on a (1, S, S, C) input, runs one warm-up forward pass and then --repeats
timed ones inside a `tf.function`, and reports the median latency and its peak resident
memory above what the process held before the first forward pass (`ru_maxrss`, so TF's CPU
allocations count). One process per measurement keeps the peaks independent.

The dense reference is `NonLocal` (embedded Gaussian): it materialises the (HW)^2 attention
matrix on CPU. `CrissCrossAttention` (O(HW(H+W))) and `CompactGeneralizedNonLocal` (O(CHW))
must stay far below it; the table's last columns give their memory as a fraction of it.

Usage: `python benchmarks/attention_scaling.py [--channels 256] [--sides 32 64 96]`; writes
benchmarks/results/attention_scaling.md and .json.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys

RESULTS = pathlib.Path(__file__).parent / "results"
LAYERS = {
    "NonLocal (dense)": "NonLocal(subsample=False)",
    "PositionAttention": "PositionAttention()",
    "CrissCrossAttention": "CrissCrossAttention(recurrence=2)",
    "CompactGeneralizedNonLocal": "CompactGeneralizedNonLocal()",
}
DENSE = "NonLocal (dense)"

CHILD = r"""
import os, resource, statistics, sys, time, json
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, tensorflow as tf
from keras_attention.layers import *
side, channels, repeats = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
layer = eval(sys.argv[4])
x = tf.constant(np.random.default_rng(0).normal(size=(1, side, side, channels)).astype("float32"))
layer.build(x.shape)
forward = tf.function(lambda t: layer(t, training=False))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
forward(x).numpy()
times = []
for _ in range(repeats):
    start = time.perf_counter(); forward(x).numpy(); times.append(time.perf_counter() - start)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"ms": 1e3 * statistics.median(times), "peak_mib": (peak - before) / 1024}))
"""


def measure(expression, side, channels, repeats):
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(side), str(channels), str(repeats), expression],
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": "tensorflow"},
    )
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--sides", type=int, nargs="+", default=[32, 48, 64, 96, 128])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default=str(RESULTS / "attention_scaling"))
    args = parser.parse_args()

    rows = []
    for side in args.sides:
        row = {"side": side, "positions": side * side}
        for name, expression in LAYERS.items():
            row[name] = measure(expression, side, args.channels, args.repeats)
            print(side, name, row[name], flush=True)
        rows.append(row)
    write(pathlib.Path(args.output), rows, args)


def write(stem, rows, args):
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(
        json.dumps({"channels": args.channels, "rows": rows}, indent=2)
    )

    def cell(result, key):
        return result.get("error", "")[:40] if "error" in result else f"{result[key]:.1f}"

    names = list(LAYERS)
    lines = [
        f"# Self-attention scaling, TF backend, CPU ({os.cpu_count()} cores), batch 1, {args.channels} channels",
        "",
        "Median forward latency (ms) and peak resident memory above the pre-forward level (MiB),",
        "each measurement in a fresh process. Memory ratio = layer / dense NonLocal.",
        "",
        "| side | positions | "
        + " | ".join(f"{n} ms | {n} MiB" for n in names)
        + " | CCNet / dense memory | CGNL / dense memory |",
        "|---|---|" + "---|---|" * len(names) + "---|---|",
    ]
    for row in rows:
        dense = row[DENSE].get("peak_mib")
        ratios = []
        for name in ("CrissCrossAttention", "CompactGeneralizedNonLocal"):
            value = row[name].get("peak_mib")
            ratios.append(f"{value / dense:.3f}" if value is not None and dense else "")
        lines.append(
            f"| {row['side']} | {row['positions']} | "
            + " | ".join(f"{cell(row[n], 'ms')} | {cell(row[n], 'peak_mib')}" for n in names)
            + " | "
            + " | ".join(ratios)
            + " |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
