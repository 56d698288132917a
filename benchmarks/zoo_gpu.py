"""Inference throughput of zoo models on an accelerator (JAX backend, mixed_bfloat16)
against timm on the same card, in one call.

For each model: the zoo's jitted forward (`model.stateless_call` under `jax.jit`, data on
the device), `model.predict_on_batch` (the Keras path users take), and timm's same
architecture in PyTorch (eager, bf16 autocast, channels_last, `inference_mode`), each timed
after a warm-up that includes compilation, median of repeats, with device synchronisation.
Figure to beat (BENCHMARKS.md): timm seresnet50 bf16 inference at batch 256 on an H200,
11,914 img/s.

Usage (GPU): `KERAS_BACKEND=jax python benchmarks/zoo_gpu.py`; CPU check at a tiny size:
`KERAS_BACKEND=jax python benchmarks/zoo_gpu.py --tiny`. Writes `<output>.md` / `.json`
(default benchmarks/results/zoo_gpu; `--output $OUT/zoo_gpu` on the lent machine).
"""

import argparse
import json
import os
import pathlib
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

try:  # timm before anything TensorFlow-related (ARCHITECTURE.md); optional on the device
    import timm
    import torch
except ImportError:  # pragma: no cover
    timm = torch = None

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import zoo  # noqa: E402

RESULTS = pathlib.Path(__file__).parent / "results"


def median_seconds(fn, repeats, sync):
    sync(fn())  # compile / warm up
    sync(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def zoo_variants(name, batch, size, repeats):
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = zoo.build(name, input_shape=(size, size, 3))
    keras.config.set_dtype_policy("float32")
    x = jax.device_put(
        np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype("float32")
    )
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    @jax.jit
    def forward(trainable, non_trainable, x):
        outputs, _ = model.stateless_call(trainable, non_trainable, x, training=False)
        return outputs

    jitted = median_seconds(
        lambda: forward(trainable, non_trainable, x), repeats, jax.block_until_ready
    )
    predict = median_seconds(
        lambda: model.predict_on_batch(x), repeats, lambda out: np.asarray(out)
    )
    return {"zoo jitted forward": batch / jitted, "zoo predict_on_batch": batch / predict}


def timm_variant(name, batch, size, repeats):
    if torch is None:
        return {}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = timm.create_model(name, pretrained=False).eval().to(device)
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size, device=device).to(memory_format=torch.channels_last)

    def run():
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16):
            return model(x)

    def sync(_):
        if device == "cuda":
            torch.cuda.synchronize()

    return {"timm eager bf16": batch / median_seconds(run, repeats, sync)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", default=["seresnet50", "ecaresnet50d", "gcresnet50t"]
    )
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--tiny", action="store_true", help="CPU check: batch 2, 64x64, 2 repeats")
    parser.add_argument("--output", default=str(RESULTS / "zoo_gpu"))
    args = parser.parse_args()
    if args.tiny:
        args.batch, args.size, args.repeats = 2, 64, 2
    device = jax.devices()[0].device_kind
    rows = []
    for name in args.models:
        row = {
            "model": name,
            **zoo_variants(name, args.batch, args.size, args.repeats),
            **timm_variant(name, args.batch, args.size, args.repeats),
        }
        if "timm eager bf16" in row:
            row["zoo jitted / timm"] = row["zoo jitted forward"] / row["timm eager bf16"]
            row["zoo predict / timm"] = row["zoo predict_on_batch"] / row["timm eager bf16"]
        rows.append(row)
        print(row, flush=True)
        keras.backend.clear_session()
    header = (
        f"{device}; batch {args.batch}, {args.size}x{args.size}, bf16 (Keras "
        f"mixed_bfloat16 on JAX {jax.__version__}, Keras {keras.__version__}; timm "
        f"{getattr(timm, '__version__', '-')} autocast bf16 channels_last, torch "
        f"{getattr(torch, '__version__', '-')}); images/s, median of {args.repeats}."
    )
    lines = [
        "# Zoo inference throughput on an accelerator",
        "",
        header,
        "",
        "| model | zoo jitted forward | zoo predict_on_batch | timm eager bf16 | "
        "jitted / timm | predict / timm |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['zoo jitted forward']:,.0f} | "
            f"{row['zoo predict_on_batch']:,.0f} | {row.get('timm eager bf16', float('nan')):,.0f} | "
            f"{row.get('zoo jitted / timm', float('nan')):.2f} | "
            f"{row.get('zoo predict / timm', float('nan')):.2f} |"
        )
    output = pathlib.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    output.with_suffix(".json").write_text(
        json.dumps({"header": header, "rows": rows}, indent=1) + "\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
