"""Forward latency of the channel / spatial / mixed layers on (8, 56, 56, 256), TF backend, against timm.

Both sides run in this one process on the same input, after a warm-up, in turn in every
round; the table shows medians and the ratio ours / timm (below 1 = we are faster). Keras
runs the layer inside a `tf.function` (graph mode, as `model.predict` would) and with XLA;
timm runs eager in `torch.no_grad()` on NCHW tensors, torch using as many threads as TF.

Usage: `make benchmark` (needs the oracle extra), or
`python benchmarks/layers_cpu.py [--repeats 30] [--batch 8] [--size 56] [--channels 256]`.
Writes benchmarks/results/layers_cpu.md and .json.
"""

import argparse
import contextlib
import json
import os
import pathlib
import platform
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:  # timm/torchvision must come before TensorFlow in one process (ARCHITECTURE.md)
    import timm.layers  # noqa: F401
    import torch
except ImportError:  # pragma: no cover
    torch = None

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_attention import create_attention  # noqa: E402

RESULTS = pathlib.Path(__file__).parent / "results"
# The channel / spatial / mixed layers (factory names); the self-attention family, whose cost
# grows with (H W)^2 at this size, is measured by attention_scaling.py instead.
DEFAULT_LAYERS = [
    "se",
    "eca",
    "ceca",
    "gc",
    "gca",
    "cam",
    "channel_gate",
    "spatial_gate",
    "cbam",
    "bam",
    "residual_attention",
]


def timm_modules(channels):
    """factory name -> timm module of the same configuration (None where timm has none)."""
    if torch is None:
        return {}
    from timm.layers.cbam import CbamModule, ChannelAttn, SpatialAttn
    from timm.layers.eca import CecaModule, EcaModule
    from timm.layers.global_context import GlobalContext
    from timm.layers.squeeze_excite import SEModule

    return {
        "se": SEModule(channels),
        "eca": EcaModule(channels),
        "ceca": CecaModule(channels),
        "gc": GlobalContext(channels, fuse_add=False, fuse_scale=True),
        "gca": GlobalContext(channels, fuse_add=True, fuse_scale=False),
        "cbam": CbamModule(channels),
        "channel_gate": ChannelAttn(channels),
        "spatial_gate": SpatialAttn(),
    }


def interleaved_medians(functions, repeats, warmup=3):
    """Median milliseconds of each function, the functions run in turn in every round so
    that machine noise hits all of them alike."""
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=56)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--only", nargs="*", help="factory names to run (default: all)")
    parser.add_argument("--output", default=str(RESULTS / "layers_cpu"))
    args = parser.parse_args()

    shape = (args.batch, args.size, args.size, args.channels)
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    x_tf = tf.constant(x)
    if torch is not None:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        x_torch = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    references = timm_modules(args.channels)
    names = args.only or DEFAULT_LAYERS

    rows = []
    for name in names:
        layer = create_attention(name, args.channels)
        graph = tf.function(lambda t, layer=layer: layer(t, training=False))
        xla = tf.function(lambda t, layer=layer: layer(t, training=False), jit_compile=True)
        functions = {"keras_tf_ms": lambda: graph(x_tf), "keras_xla_ms": lambda: xla(x_tf)}
        module = references.get(name)
        if module is not None:
            module.eval()
            functions["timm_ms"] = lambda: module(x_torch)
        with torch.no_grad() if torch is not None else contextlib.nullcontext():
            row = {
                "layer": name,
                "class": type(layer).__name__,
                **interleaved_medians(functions, args.repeats),
            }
        if module is not None:
            row["ratio_tf"] = row["keras_tf_ms"] / row["timm_ms"]
            row["ratio_xla"] = row["keras_xla_ms"] / row["timm_ms"]
        rows.append(row)
        print(row, flush=True)

    meta = {
        "input_shape": shape,
        "repeats": args.repeats,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "torch": getattr(torch, "__version__", None),
        "timm": getattr(__import__("timm"), "__version__", None) if torch is not None else None,
    }
    write_results(pathlib.Path(args.output), rows, meta)


def write_results(stem, rows, meta):
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    fmt = lambda v: "" if v is None else f"{v:.2f}"  # noqa: E731
    lines = [
        f"# Layer forward latency, input {tuple(meta['input_shape'])}, CPU ({meta['cpu_count']} cores)",
        "",
        f"Medians of {meta['repeats']} interleaved rounds after warm-up, one process; TF {meta['tensorflow']}, "
        f"Keras {meta['keras']}, torch {meta['torch']}, timm {meta['timm']}. "
        "ratio = Keras / timm (below 1: Keras is faster).",
        "",
        "| layer | class | Keras tf.function ms | Keras XLA ms | timm ms | ratio tf.function | ratio XLA |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['layer']} | {r['class']} | {fmt(r['keras_tf_ms'])} | {fmt(r['keras_xla_ms'])} | "
            f"{fmt(r.get('timm_ms'))} | {fmt(r.get('ratio_tf'))} | {fmt(r.get('ratio_xla'))} |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
