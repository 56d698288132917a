"""Training throughput on an accelerator, JAX backend, mixed_bfloat16: the zoo's `fit` path
(what users run: `zoo.train.fit` with the model's recipe, the data in host memory, the
input pipeline placing and augmenting batches on the device ahead of the step) against the
same model's raw jitted stateless train step on device-resident data (the ceiling), and
timm's PyTorch numbers for the same architecture (eager and `torch.compile`, AMP bf16,
channels_last) measured in the same call.

For each model (default seresnet50, ecaresnet50d, gcresnet50t) at batch 128, 224x224:
- `zoo fit`: `zoo.train.fit(name, data, epochs=E, steps_per_epoch=S, mixed_precision=
  "bfloat16", jit_compile=True)`; epoch 1 compiles and warms up; the img/s is the median
  over the later epochs of S * batch / epoch time (synchronised at each epoch end).
- `zoo raw step`: `model.stateless_call` + `optimizer.stateless_apply` under `jax.jit`
  (state donated), the same optimizer and loss, on a batch already on the device.
- `timm eager` / `timm compile`: `timm.create_model(name)`, channels_last, SGD
  (Nesterov momentum), `torch.autocast(dtype=torch.bfloat16)`, cross-entropy with label
  smoothing; median over timed steps with `torch.cuda.synchronize`.
The goal (issue #6): `zoo fit` at >= 90% of `zoo raw step`, and above timm compiled.

Usage on a GPU machine: `KERAS_BACKEND=jax python benchmarks/train_gpu.py` (writes
`$OUT/train_gpu.json` when `$OUT` is set, and `--output`.md/.json).
On a CPU, for a check of the whole script at a tiny size: `python benchmarks/train_gpu.py --tiny`.
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
# torch / timm before anything that may import TensorFlow (segfault otherwise)
try:
    import timm  # noqa: F401
    import torch  # noqa: F401
except ImportError:  # timm's rows are reported as missing
    timm = None

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import zoo  # noqa: E402
import zoo.train  # noqa: E402
from zoo.train import data as data_lib  # noqa: E402

RESULTS = pathlib.Path(__file__).parent / "results"
MODELS = ("seresnet50", "ecaresnet50d", "gcresnet50t")


def synthetic(num, size, num_classes, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (num, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, num_classes, num)
    return data_lib.ImageData(
        name="synthetic",
        labels=labels,
        num_classes=num_classes,
        image_size=(size, size),
        channels=3,
        images=images,
        value_range=255.0,
        flip=True,
    )


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        jax.block_until_ready([v.value for v in self.model.trainable_variables])
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        jax.block_until_ready([v.value for v in self.model.trainable_variables])
        self.seconds.append(time.perf_counter() - self._start)


def zoo_fit(name, args):
    data = synthetic(args.batch * args.steps, args.size, args.classes)
    timer = _EpochTimer()
    start = time.perf_counter()
    model, history = zoo.train.fit(
        name,
        data,
        epochs=args.epochs,
        batch_size=args.batch,
        steps_per_epoch=args.steps,
        mixed_precision="bfloat16",
        jit_compile=True,
        validation=False,
        verbose=0,
        callbacks=[timer],
        steps_per_execution=args.steps_per_execution,
    )
    total = time.perf_counter() - start
    timed = timer.seconds[1:] or timer.seconds
    median = statistics.median(timed)
    loss = history.history["loss"][-1]
    return {
        "images_per_second": args.steps * args.batch / median,
        "first_epoch_seconds": timer.seconds[0],
        "epoch_seconds": timer.seconds,
        "total_seconds": total,
        "final_loss": loss,
        "finite": bool(np.isfinite(loss)),
    }, model


def zoo_raw_step(name, args):
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(0)
        model = zoo.build(
            name,
            input_shape=(args.size, args.size, 3),
            num_classes=args.classes,
            classifier_activation=None,
        )
    finally:
        keras.config.set_dtype_policy("float32")
    recipe = zoo.train.get_recipe(name)
    optimizer = recipe.make_optimizer(args.batch, args.steps, args.steps * args.epochs)
    optimizer.build(model.trainable_variables)
    loss_object = keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=recipe.label_smoothing
    )

    def loss_fn(trainable, non_trainable, x, y):
        logits, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        return loss_object(y, logits), non_trainable

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(trainable, non_trainable, opt_vars, x, y):
        (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x, y)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return loss, trainable, non_trainable, opt_vars

    step = jax.jit(step, donate_argnums=(0, 1, 2))
    key = jax.random.key(0)
    x = jax.random.normal(key, (args.batch, args.size, args.size, 3), "float32")
    y = jax.nn.one_hot(jax.random.randint(key, (args.batch,), 0, args.classes), args.classes)
    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
    )
    start = time.perf_counter()
    loss, *state = step(*state, x, y)
    jax.block_until_ready(loss)
    compile_seconds = time.perf_counter() - start
    for _ in range(2):
        loss, *state = step(*state, x, y)
    jax.block_until_ready(loss)
    times = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        for _ in range(args.steps):
            loss, *state = step(*state, x, y)
        jax.block_until_ready(loss)
        times.append((time.perf_counter() - start) / args.steps)
    median = statistics.median(times)
    return {
        "images_per_second": args.batch / median,
        "compile_seconds": compile_seconds,
        "seconds_per_step": times,
        "final_loss": float(loss),
        "finite": bool(np.isfinite(float(loss))),
    }


def timm_step(name, args, compiled):
    if timm is None:
        return {"error": "timm / torch not installed"}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=args.classes)
    model = model.to(device).to(memory_format=torch.channels_last).train()
    recipe = zoo.train.get_recipe(name)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=recipe.weight_decay
    )
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device).to(
        memory_format=torch.channels_last
    )
    y = torch.randint(0, args.classes, (args.batch,), device=device)

    def step():
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    if compiled:
        step = torch.compile(step)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    start = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - start
    for _ in range(2):
        step()
    sync()
    times = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        for _ in range(args.steps):
            loss = step()
        sync()
        times.append((time.perf_counter() - start) / args.steps)
    median = statistics.median(times)
    return {
        "images_per_second": args.batch / median,
        "first_step_seconds": first,
        "seconds_per_step": times,
        "final_loss": float(loss.detach()),
        "device": device,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=30, help="steps per epoch / timed round")
    parser.add_argument("--epochs", type=int, default=4, help="fit epochs (first is warm-up)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (raw step, timm)")
    parser.add_argument("--steps-per-execution", type=int, default=1)
    parser.add_argument("--no-timm", action="store_true")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="CPU check: batch 4, 32x32, 10 classes, 3 steps x 2 epochs",
    )
    parser.add_argument(
        "--output", default=None, help="default: benchmarks/results/train_gpu (--tiny: only $OUT)"
    )
    args = parser.parse_args()
    if args.tiny:
        args.batch, args.size, args.classes, args.steps, args.epochs, args.rounds = (
            4,
            32,
            10,
            3,
            2,
            2,
        )
    if args.output is None and not args.tiny:
        args.output = str(RESULTS / "train_gpu")
    if keras.backend.backend() != "jax":
        raise SystemExit("run with KERAS_BACKEND=jax")

    device = str(jax.devices()[0].device_kind)
    results = {
        "device": device,
        "backend": "jax",
        "batch": args.batch,
        "size": args.size,
        "precision": "mixed_bfloat16 / autocast bf16",
        "tiny": args.tiny,
        "jax": jax.__version__,
        "keras": keras.__version__,
        "torch": getattr(torch, "__version__", None) if timm else None,
        "timm": getattr(timm, "__version__", None),
        "models": {},
    }
    for name in args.models:
        row = {}
        print(f"[{name}] zoo fit ...", flush=True)
        row["zoo_fit"], _ = zoo_fit(name, args)
        print(f"[{name}] zoo raw step ...", flush=True)
        row["zoo_raw_step"] = zoo_raw_step(name, args)
        if not args.no_timm:
            print(f"[{name}] timm eager ...", flush=True)
            row["timm_eager"] = timm_step(name, args, compiled=False)
            if not args.no_compile:
                print(f"[{name}] timm torch.compile ...", flush=True)
                try:
                    row["timm_compile"] = timm_step(name, args, compiled=True)
                except Exception as error:  # report, keep the other numbers
                    row["timm_compile"] = {"error": f"{type(error).__name__}: {error}"[:500]}
        fit_rate = row["zoo_fit"]["images_per_second"]
        row["fit_over_raw"] = fit_rate / row["zoo_raw_step"]["images_per_second"]
        for key in ("timm_eager", "timm_compile"):
            if "images_per_second" in row.get(key, {}):
                row[f"fit_over_{key}"] = fit_rate / row[key]["images_per_second"]
        results["models"][name] = row

    def rate(row, key):
        entry = row.get(key, {})
        return f"{entry['images_per_second']:,.0f}" if "images_per_second" in entry else "-"

    lines = [
        f"# Training throughput, {device}, JAX backend, mixed_bfloat16, batch {args.batch}, "
        f"{args.size}x{args.size}" + (" (tiny CPU check)" if args.tiny else ""),
        "",
        "| model | zoo fit img/s | zoo raw jitted step img/s | fit / raw | timm eager | "
        "timm torch.compile | fit / timm compile |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in results["models"].items():
        vs = row.get("fit_over_timm_compile")
        lines.append(
            f"| {name} | {rate(row, 'zoo_fit')} | {rate(row, 'zoo_raw_step')} | "
            f"{row['fit_over_raw']:.2f} | {rate(row, 'timm_eager')} | "
            f"{rate(row, 'timm_compile')} | {f'{vs:.2f}x' if vs else '-'} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    outputs = [pathlib.Path(args.output)] if args.output else []
    if os.environ.get("OUT"):
        outputs.append(pathlib.Path(os.environ["OUT"]) / "train_gpu")
    for output in outputs:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.with_suffix(".json").write_text(json.dumps(results, indent=2))
        output.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
