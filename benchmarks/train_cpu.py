"""Train-step throughput of the zoo's `seresnet50` on the CPU, TensorFlow backend:
mixed_bfloat16 against float32, in the same run.

Both models are built with the recipe's optimizer (SGD, Nesterov momentum) and compiled
the way `zoo.train.fit` compiles them (XLA, logits and loss in float32), then trained
on one in-memory batch with `train_on_batch` (which returns the loss, so every timed step
is complete). After a warm-up (tracing, XLA compilation, first steps), the two precisions
are timed in interleaved rounds of `--steps` steps; the table reports the median
seconds per step and images per second of each, and the ratio.

Usage: `python benchmarks/train_cpu.py [--size 128 --batch 16 --steps 3 --rounds 5]`.
Writes `<output>.md` and `.json` (default benchmarks/results/train_cpu).
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import zoo  # noqa: E402
from zoo.train import recipes  # noqa: E402

RESULTS = pathlib.Path(__file__).parent / "results"
POLICIES = {"float32": "float32", "mixed_bfloat16": "mixed_bfloat16"}


def build(policy, size, batch, jit_compile):
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(0)
    try:
        model = zoo.build(
            "seresnet50", input_shape=(size, size, 3), num_classes=1000, classifier_activation=None
        )
        recipe = recipes.get_recipe("seresnet50")
        optimizer = recipe.make_optimizer(batch, 100, 10_000)
        recipes.exclude_from_weight_decay(optimizer, model)
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.CategoricalCrossentropy(
                from_logits=True, label_smoothing=recipe.label_smoothing
            ),
            jit_compile=jit_compile,
        )
    finally:
        keras.config.set_dtype_policy("float32")
    return model


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-xla", action="store_true")
    parser.add_argument("--output", default=str(RESULTS / "train_cpu"))
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, args.size, args.size, 3)).astype("float32")
    y = np.eye(1000, dtype="float32")[rng.integers(0, 1000, args.batch)]
    models, first_step = {}, {}
    for name, policy in POLICIES.items():
        models[name] = build(policy, args.size, args.batch, not args.no_xla)
        start = time.perf_counter()
        models[name].train_on_batch(x, y)
        first_step[name] = time.perf_counter() - start
        for _ in range(args.warmup):
            models[name].train_on_batch(x, y)
    times = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                loss = model.train_on_batch(x, y)
            times[name].append((time.perf_counter() - start) / args.steps)
            assert np.isfinite(loss), (name, loss)
    rows = {}
    for name in models:
        median = statistics.median(times[name])
        rows[name] = {
            "seconds_per_step": median,
            "images_per_second": args.batch / median,
            "first_step_seconds": first_step[name],
            "all": times[name],
        }
    ratio = rows["mixed_bfloat16"]["images_per_second"] / rows["float32"]["images_per_second"]
    result = {
        "model": "seresnet50",
        "backend": "tensorflow",
        "size": args.size,
        "batch": args.batch,
        "xla": not args.no_xla,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "keras": keras.__version__,
        "rows": rows,
        "bf16_over_fp32": ratio,
    }
    lines = [
        f"# Train-step throughput, zoo seresnet50, {args.size}x{args.size}, batch {args.batch}, "
        f"TensorFlow backend{' + XLA' if not args.no_xla else ''}",
        "",
        f"{result['cpu']}, {result['cores']} cores (shared machine); SGD recipe optimizer, "
        f"`train_on_batch` on one in-memory batch; median of {args.rounds} interleaved rounds "
        f"of {args.steps} steps after {args.warmup} warm-up steps.",
        "",
        "| precision | s / step | img/s | first step (trace + compile) |",
        "|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['seconds_per_step']:.3f} | {row['images_per_second']:.1f} "
            f"| {row['first_step_seconds']:.1f} s |"
        )
    lines += ["", f"mixed_bfloat16 / float32 throughput: **{ratio:.2f}x**", ""]
    text = "\n".join(lines)
    print(text)
    output = pathlib.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".md").write_text(text)
    output.with_suffix(".json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
