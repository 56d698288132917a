"""Segmentation heads: latency and peak memory of each zoo head on one feature map (TF, CPU).

Each head is the function the zoo's segmentation models use (zoo/backbones/segmentation.py),
on a `(1, S, S, C)` backbone feature map for S in --sides (default 64 and 128, the last
stage of a 512 x 512 and a 1024 x 1024 image at output stride 8), built as a Keras model
whose output is the logits at the map's resolution. For each head and side a fresh Python
process runs one warm-up forward pass and then --repeats timed ones inside a `tf.function`,
and reports the median latency and the peak resident memory above what the process held
before the first forward pass (`ru_maxrss`). One process per measurement keeps the peaks
independent.

The reference is DANet's head, whose position attention (PAM) is dense over the `S^2`
positions; the ratio columns give each head's latency and memory as a fraction of it.
The PAN row is its feature pyramid attention (FPA) alone on the map: its decoders need the
backbone's other stages. The heads' widths are set by --channels and --head-channels
(DANet and CCNet work at `C / 4` inside, as their official code).

Usage: `python benchmarks/segmentation_heads.py [--channels 512] [--sides 64 128]`; writes
benchmarks/results/segmentation_heads.md and .json.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# name -> expression of the head's output on the Keras tensor `x` (`n` classes, `w` width)
HEADS = {
    "DANet PAM+CAM": "S.danet_head(x, n)",
    "CCNet RCCA (r=2)": "S.ccnet_head(x, n, head_channels=w)",
    "OCNet base": "S.ocnet_head(x, n, oc_mode='base', head_channels=w)",
    "OCNet pyramid": "S.ocnet_head(x, n, oc_mode='pyramid', head_channels=w)",
    "OCNet asp": "S.ocnet_head(x, n, oc_mode='asp', head_channels=w)",
    "PAN FPA": "FeaturePyramidAttention(out_channels=w)(x)",
    "FCN (baseline)": "S.fcn_head(x, n)",
}
REFERENCE = "DANet PAM+CAM"
NUM_CLASSES = 21

CHILD = r"""
import os, resource, statistics, sys, time, json
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, tensorflow as tf, keras
from keras_attention.layers import FeaturePyramidAttention
from zoo.backbones import segmentation as S
side, c, w, repeats = (int(v) for v in sys.argv[1:5])
n = int(sys.argv[6])
x = keras.Input((side, side, c))
model = keras.Model(x, eval(sys.argv[5]))
data = tf.constant(np.random.default_rng(0).normal(size=(1, side, side, c)).astype("float32"))
forward = tf.function(lambda t: model(t, training=False))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
forward(data).numpy()
times = []
for _ in range(repeats):
    start = time.perf_counter(); forward(data).numpy(); times.append(time.perf_counter() - start)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"ms": 1e3 * statistics.median(times), "peak_mib": (peak - before) / 1024,
                  "params": model.count_params()}))
"""


def measure(expression, side, args):
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(side), str(args.channels), str(args.head_channels)]
        + [str(args.repeats), expression, str(NUM_CLASSES)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "KERAS_BACKEND": "tensorflow", "PYTHONPATH": str(ROOT)},
    )
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--head-channels", type=int, default=128)
    parser.add_argument("--sides", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default=str(RESULTS / "segmentation_heads"))
    args = parser.parse_args()

    rows = []
    for side in args.sides:
        for name, expression in HEADS.items():
            result = measure(expression, side, args)
            rows.append({"side": side, "head": name, **result})
            print(side, name, result, flush=True)
    write(pathlib.Path(args.output), rows, args)


def write(stem, rows, args):
    stem.parent.mkdir(parents=True, exist_ok=True)
    settings = {
        "channels": args.channels,
        "head_channels": args.head_channels,
        "repeats": args.repeats,
        "num_classes": NUM_CLASSES,
    }
    stem.with_suffix(".json").write_text(json.dumps({**settings, "rows": rows}, indent=2))
    reference = {row["side"]: row for row in rows if row["head"] == REFERENCE}

    def ratio(row, key):
        base = reference[row["side"]].get(key)
        return f"{row[key] / base:.2f}" if key in row and base else ""

    lines = [
        f"# Segmentation heads, TF backend, CPU ({os.cpu_count()} cores), batch 1, "
        f"{args.channels} input channels, head width {args.head_channels}",
        "",
        "Median forward latency (ms, of {args.repeats}) and peak resident memory above the "
        "pre-forward level (MiB), each measurement in a fresh process; ratios against DANet's "
        "head (dense position attention over all S x S positions). One run on a shared "
        "machine: latencies are indicative, the memory ratios are the point.".replace(
            "{args.repeats}", str(args.repeats)
        ),
        "",
        "| side | head | parameters | ms | MiB | ms / DANet | MiB / DANet |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['side']} | {row['head']} | | {row['error'][:60]} | | | |")
            continue
        lines.append(
            f"| {row['side']} | {row['head']} | {row['params']:,} | {row['ms']:.1f} | "
            f"{row['peak_mib']:.1f} | {ratio(row, 'ms')} | {ratio(row, 'peak_mib')} |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
