"""Fused versus materialised self-attention on an accelerator (JAX backend, mixed_bfloat16).

`NonLocal` (embedded Gaussian) and `PositionAttention` route their attention through
`keras.ops.dot_product_attention`, which on a GPU can use the fused (flash) kernel and never
builds the (L, L) matrix. This script runs each layer's jitted forward pass twice in one
process: as shipped ("fused": Keras picks the kernel), with the flash kernel forced
(`flash_attention=True`, GPU only: shows the time or why it is refused) and with
`keras.ops.dot_product_attention` replaced by a plain softmax(QK^T)V ("materialised"), on (1, S, S, C) inputs for each side S. It reports the
median latency (`block_until_ready`, after a warm-up that includes compilation), the
attention-only TFLOP/s (4 L^2 d per head / layer latency, a lower bound since the layer also
runs its projections), XLA's compiled temporary memory of each variant, and the bf16 matmul
rate of the same device measured in the same run (the yardstick: at L >= 16,384 the fused
path should reach half of it).

Usage (GPU): `KERAS_BACKEND=jax python benchmarks/attention_gpu.py`; on CPU, for a check:
`KERAS_BACKEND=jax python benchmarks/attention_gpu.py --sides 8 16 --channels 32 --matmul 256`.
Writes `<output>.md` and `.json` (default benchmarks/results/attention_gpu).
"""

import argparse
import functools
import json
import os
import pathlib
import statistics
import time
from unittest import mock

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_attention.layers import NonLocal, PositionAttention  # noqa: E402

RESULTS = pathlib.Path(__file__).parent / "results"
ORIGINAL_ATTENTION = keras.ops.dot_product_attention
LAYERS = {
    "NonLocal": lambda: NonLocal(pairwise="embedded_gaussian", subsample=False),
    "PositionAttention": lambda: PositionAttention(),
}


def materialised_attention(
    query,
    key,
    value,
    bias=None,
    mask=None,
    scale=None,
    is_causal=False,
    flash_attention=None,
    attn_logits_soft_cap=None,
):
    """softmax(scale q k^T) v with the (B, heads, L, L) matrix built explicitly."""
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    logits = jnp.einsum("btnh,bsnh->bnts", query, key).astype("float32") * scale
    weights = jax.nn.softmax(logits, axis=-1).astype(value.dtype)
    return jnp.einsum("bnts,bsnh->btnh", weights, value)


def timed(fn, args, repeats):
    out = fn(*args)
    jax.block_until_ready(out)  # compile + first run
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_tflops(n, repeats):
    a = jnp.ones((n, n), "bfloat16")
    f = jax.jit(lambda x, y: x @ y)
    seconds = timed(f, (a, a), repeats)
    return 2 * n**3 / seconds / 1e12


def run_layer(name, side, channels, repeats, variant):
    layer = LAYERS[name]()
    shape = (1, side, side, channels)
    layer.build(shape)
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape), "bfloat16")
    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def forward(tv, ntv, inputs):
        return layer.stateless_call(tv, ntv, inputs, training=False)[0]

    implementation = {
        "default": ORIGINAL_ATTENTION,
        "flash": functools.partial(ORIGINAL_ATTENTION, flash_attention=True),
        "materialised": materialised_attention,
    }[variant]
    patch = mock.patch.object(keras.ops, "dot_product_attention", implementation)
    with patch:
        fn = jax.jit(forward)
        args = (trainable, non_trainable, x)
        try:
            compiled = fn.lower(*args).compile()
            memory = compiled.memory_analysis()
            temp_mib = getattr(memory, "temp_size_in_bytes", 0) / 2**20 if memory else None
            seconds = timed(fn, args, repeats)
        except Exception as error:  # e.g. out of memory for the materialised matrix
            return {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"}
    length = side * side
    # attention flops: QK^T and AV, one head, head widths as the layer uses them
    if name == "NonLocal":
        dqk = dv = layer.inner
    else:
        dqk, dv = max(channels // 8, 1), channels
    flops = 2 * length * length * (dqk + dv)
    return {"ms": seconds * 1e3, "tflops": flops / seconds / 1e12, "temp_mib": temp_mib}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[64, 128, 192, 256])
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--matmul", type=int, default=8192, help="side of the bf16 matmul yardstick"
    )
    parser.add_argument(
        "--max-materialised-side",
        type=int,
        default=192,
        help="largest side at which the (L, L) matrix is built",
    )
    parser.add_argument("--output", default=str(RESULTS / "attention_gpu"))
    args = parser.parse_args()

    keras.config.set_dtype_policy("mixed_bfloat16")
    device = jax.devices()[0]
    peak = matmul_tflops(args.matmul, args.repeats)
    print(
        f"device {device.device_kind}: bf16 matmul {args.matmul}^3 {peak:.1f} TFLOP/s", flush=True
    )
    rows = []
    for name in LAYERS:
        for side in args.sides:
            row = {
                "layer": name,
                "side": side,
                "L": side * side,
                "fused": run_layer(name, side, args.channels, args.repeats, "default"),
            }
            if device.platform == "gpu":
                # what forcing the flash kernel gives (or why it is refused)
                row["flash"] = run_layer(name, side, args.channels, args.repeats, "flash")
            if side <= args.max_materialised_side:
                row["materialised"] = run_layer(
                    name, side, args.channels, args.repeats, "materialised"
                )
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = {
        "device": device.device_kind,
        "platform": device.platform,
        "jax": jax.__version__,
        "keras": keras.__version__,
        "channels": args.channels,
        "matmul_tflops": peak,
        "matmul_side": args.matmul,
    }
    write(pathlib.Path(args.output), rows, meta)


def write(stem, rows, meta):
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))

    def cell(result, key, fmt="{:.2f}"):
        if result is None:
            return "not run"
        if "error" in result:
            return result["error"][:60]
        value = result.get(key)
        return "" if value is None else fmt.format(value)

    lines = [
        f"# Fused vs materialised attention, {meta['device']} ({meta['platform']}), JAX {meta['jax']}, "
        f"Keras {meta['keras']}, mixed_bfloat16, batch 1, {meta['channels']} channels",
        "",
        f"Yardstick measured in the same run: bf16 matmul {meta['matmul_side']}^3 = "
        f"{meta['matmul_tflops']:.1f} TFLOP/s. TFLOP/s below = attention flops / whole-layer latency.",
        "",
        "| layer | side | L | fused ms | fused TFLOP/s | fused / matmul | fused temp MiB "
        "| forced flash ms | materialised ms | materialised temp MiB | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        fused, dense = row["fused"], row.get("materialised")
        ratio = f"{fused['tflops'] / meta['matmul_tflops']:.2f}" if "tflops" in fused else ""
        speedup = (
            f"{dense['ms'] / fused['ms']:.2f}x" if dense and "ms" in dense and "ms" in fused else ""
        )
        lines.append(
            f"| {row['layer']} | {row['side']} | {row['L']} | {cell(fused, 'ms')} | "
            f"{cell(fused, 'tflops', '{:.1f}')} | {ratio} | {cell(fused, 'temp_mib', '{:.0f}')} | "
            f"{cell(row.get('flash'), 'ms')} | {cell(dense, 'ms')} | "
            f"{cell(dense, 'temp_mib', '{:.0f}')} | {speedup} |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
