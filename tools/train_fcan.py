"""Train FCAN and its random-glimpse baseline on cluttered MNIST; record their held-out
accuracy and how often the chosen glimpse locations fall on the digit.

    taskset -c 1 python tools/train_fcan.py fcan_mnist --seed 0

Builds `zoo.build(NAME)` (40x40 inputs), trains it with the fixed `RECIPE` on the 4,000
training digits as cluttered MNIST (`TASK`, fresh clutter and placements every epoch: task
seeds 1000 (seed + 1) + epoch) and measures, on the 1,000 held-out digits (task seed 0),
its accuracy and the in-box share: the share of the glimpse centres (all steps) inside the
box of the digit's own ink (`zoo.tasks.ink_boxes`). The baseline `fcan_mnist_random` is
the same network and recipe with uniformly random glimpse cells (evaluated with sampler
seed 0). Each run is recorded in `benchmarks/results/fcan.json` under `NAME:seed<S>`
(merged with what other runs wrote meanwhile) and `benchmarks/results/fcan.md` rewritten;
the weights go to `--weights-dir` with their sha256. TensorFlow on one CPU thread; run
from the repository root.
"""

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `tools.experiments` when run as a script

from tools import experiments  # noqa: E402
from tools.experiments import ResultsFile, binomial_standard_error, format_mean_sd, seed_values  # noqa: E402
from zoo import tasks  # noqa: E402

RESULTS_FILE = ResultsFile(ROOT / "benchmarks" / "results" / "fcan.json")
RESULTS = ROOT / "benchmarks" / "results" / "fcan.md"
WEIGHTS_DIR = ROOT / "runs" / "fcan"
BASELINE = "fcan_mnist_random"
MODELS = ("fcan_mnist_random", "fcan_mnist")
# 40x40 with 4 pieces of 8x8 clutter: GAIN's task (tools/train_gain.py), CPU-sized.
TASK = {"size": 40, "num_clutter": 4, "clutter_size": 8}
EVAL_SEED = 0  # the held-out task seed, and the random baseline's sampler seed
EVAL_BATCH = 100
# The first images of the held-out set: the reload test's quick check.
CHECK_IMAGES = 100
RECIPE = {"epochs": 15, "batch_size": 64, "learning_rate": 2e-3}


def describe_recipe(recipe=RECIPE):
    return (
        f"{recipe['epochs']} epochs of fresh cluttered digits (4,000 each), Adam lr "
        f"{recipe['learning_rate']:g} cosine to 5%, batch {recipe['batch_size']}"
    )


def task_data(split, seed):
    """Images, labels and ink boxes of cluttered MNIST (`TASK`)."""
    images, labels, metadata = tasks.cluttered_mnist(split, seed=seed, return_boxes=True, **TASK)
    return images, labels, metadata["boxes"]


def in_box(cells, boxes, stride=None):
    """`(N, T)` booleans: is each glimpse centre inside its image's box? `cells` are the
    `(N, T, 2)` feature-map cells the model chose, `boxes` the `(N, 4)` ink boxes `(top,
    left, bottom, right)`, bottom and right exclusive."""
    from zoo.fcan import STRIDE, cell_centres  # noqa: PLC0415

    centres = cell_centres(np.asarray(cells), stride or STRIDE)
    rows, cols = centres[..., 0], centres[..., 1]
    top, left, bottom, right = (boxes[:, i, None] for i in range(4))
    return (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)


def evaluate(model, images, labels, boxes):
    """Per-image correctness and in-box share of the glimpse centres on held-out data (the
    sampler restarted from `EVAL_SEED` first: the random baseline's draws are repeatable)."""
    model.reset_sampling(EVAL_SEED)
    correct, shares = [], []
    for start in range(0, len(labels), EVAL_BATCH):
        part = slice(start, start + EVAL_BATCH)
        scores, _, cells = model(images[part], training=False, return_attention=True)
        correct.append(np.argmax(keras.ops.convert_to_numpy(scores), axis=-1) == labels[part])
        shares.append(in_box(keras.ops.convert_to_numpy(cells), boxes[part]).mean(axis=1))
    return np.concatenate(correct), np.concatenate(shares)


def train_one(name, seed, recipe=RECIPE, log=print):
    """Build `name` with `seed`, train it by `recipe`; returns `(model, entry)`."""
    import zoo  # noqa: PLC0415

    keras.utils.set_random_seed(seed)
    model = zoo.build(name, classifier_activation=None, seed=seed)
    epochs, batch_size = recipe["epochs"], recipe["batch_size"]
    steps = epochs * -(-4000 // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(recipe["learning_rate"], steps, alpha=0.05)
    model.compile(
        keras.optimizers.Adam(schedule),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start, cpu = time.time(), time.process_time()
    for epoch in range(epochs):
        images, labels, _ = task_data("train", seed=1000 * (seed + 1) + epoch)
        history = model.fit(
            images, labels, batch_size=batch_size, epochs=1, shuffle=True, verbose=0
        ).history
        log(
            f"{name} seed {seed} epoch {epoch + 1}/{epochs}: loss {history['loss'][-1]:.4f} "
            f"accuracy {history['accuracy'][-1]:.4f} ({time.time() - start:.0f} s)",
            flush=True,
        )
    seconds, cpu_seconds = time.time() - start, time.process_time() - cpu
    images, labels, boxes = task_data("test", seed=EVAL_SEED)
    correct, shares = evaluate(model, images, labels, boxes)
    accuracy = float(np.mean(correct))
    entry = {
        "model": name,
        "seed": seed,
        "test_accuracy": accuracy,
        "test_accuracy_standard_error": binomial_standard_error(accuracy, len(labels)),
        "test_accuracy_check_images": float(np.mean(correct[:CHECK_IMAGES])),
        "in_box": float(np.mean(shares)),
        "in_box_standard_error": float(np.std(shares, ddof=1) / np.sqrt(len(shares))),
        "in_box_check_images": float(np.mean(shares[:CHECK_IMAGES])),
        "train_accuracy_last_epoch": float(history["accuracy"][-1]),
        "params": model.count_params(),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "recipe": describe_recipe(recipe),
        "backend": keras.backend.backend(),
    }
    return model, entry


def verdicts(results):
    """{key: (word, margin, noise)} of FCAN against the baseline on accuracy and in-box
    share; the test SE is the largest of the runs' own."""
    out = {}
    for key in ("test_accuracy", "in_box"):
        grouped = seed_values(results, key)
        if not all(name in grouped for name in MODELS):
            continue
        se = max(e[f"{key}_standard_error"] for e in results.values())
        out[key] = experiments.verdict(grouped["fcan_mnist"], grouped[BASELINE], se)
    return out


def write_table(results, path=None):
    path = pathlib.Path(path or RESULTS)
    box_area = np.mean(
        [
            (b[2] - b[0]) * (b[3] - b[1]) / TASK["size"] ** 2
            for b in task_data("test", seed=EVAL_SEED)[2]
        ]
    )
    lines = [
        "# FCAN on cluttered MNIST",
        "",
        "Written by `tools/train_fcan.py` (TensorFlow, CPU, one thread). Task: cluttered MNIST "
        f"{TASK['size']}x{TASK['size']}, {TASK['num_clutter']} clutter pieces of "
        f"{TASK['clutter_size']}x{TASK['clutter_size']} (`zoo.tasks.cluttered_mnist`), the "
        "4,000 training digits of `zoo.datasets.mnist_subset` with fresh clutter every epoch; "
        "test: the 1,000 held-out digits (task seed 0). `fcan_mnist`: glimpse cells from the "
        "part-score maps (argmax at inference), attention head trained by REINFORCE; "
        "`fcan_mnist_random`: the same network and recipe, glimpse cells drawn uniformly "
        "(sampler seed 0 at evaluation). Accuracy (%) and in-box share (of the 3 glimpse "
        "centres per image, those inside the box of the digit's own ink; a uniform choice "
        "lands there about as often as the box's area share, here "
        f"{100 * box_area:.1f}% of the image) as mean ± sample standard deviation over "
        "training seeds; test SE: one run's standard error on the 1,000 images (binomial for "
        "accuracy, over the images for the in-box share). Verdict: the margin of the means "
        "against the largest of the two seed spreads and the test SEs.",
        "",
        "| model | params | recipe | seeds | accuracy (%) | per seed | test SE | in-box share "
        "| per seed | test SE | train time per run (wall / CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    accuracy, box = seed_values(results, "test_accuracy"), seed_values(results, "in_box")
    for name in MODELS:
        runs = sorted((e for e in results.values() if e["model"] == name), key=lambda e: e["seed"])
        if not runs:
            continue
        cells = [
            name,
            f"{runs[0]['params']:,}",
            runs[0]["recipe"],
            ", ".join(str(e["seed"]) for e in runs),
            format_mean_sd(accuracy[name]),
            " / ".join(f"{100 * v:.1f}" for v in accuracy[name]),
            f"{100 * np.mean([e['test_accuracy_standard_error'] for e in runs]):.1f}",
            format_mean_sd(box[name], scale=1, digits=3),
            " / ".join(f"{v:.3f}" for v in box[name]),
            f"{np.mean([e['in_box_standard_error'] for e in runs]):.3f}",
            f"{np.mean([e['seconds'] for e in runs]):.0f} s / "
            f"{np.mean([e['cpu_seconds'] for e in runs]):.0f} s",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for key, (word, margin, noise) in verdicts(results).items():
        scale, unit = (100, " points") if key == "test_accuracy" else (1, "")
        what = "test accuracy" if key == "test_accuracy" else "in-box share"
        lines.append(
            f"- Verdict on {what}: `fcan_mnist` **{word}** `{BASELINE}` (margin "
            f"{scale * margin:+.{1 if scale == 100 else 3}f}{unit}; noise "
            f"{scale * noise:.{1 if scale == 100 else 3}f})."
        )
    lines += experiments.weights_table(results)
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=MODELS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=RECIPE["epochs"])
    parser.add_argument("--weights-dir", default=str(WEIGHTS_DIR))
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    experiments.use_one_cpu_thread()
    import zoo  # noqa: PLC0415

    model, entry = train_one(args.name, args.seed, {**RECIPE, "epochs": args.epochs})
    print(
        f"{args.name} seed {args.seed}: test accuracy {entry['test_accuracy']:.4f} (SE "
        f"{entry['test_accuracy_standard_error']:.4f}), in-box share {entry['in_box']:.4f}; "
        f"first {CHECK_IMAGES}: {entry['test_accuracy_check_images']:.4f}, "
        f"{entry['in_box_check_images']:.4f}; {entry['seconds']:.0f} s "
        f"({entry['cpu_seconds']:.0f} s CPU)",
        flush=True,
    )
    if args.no_write:
        return 0
    weights_dir = pathlib.Path(args.weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    path = weights_dir / f"{args.name}.cluttered_mnist.seed{args.seed}.weights.h5"
    # weights only (a compiled model's file would hold the optimizer's variables too)
    entry.update(experiments.save_weights_only(model, zoo.build(args.name), path))
    merged = RESULTS_FILE.save({f"{args.name}:seed{args.seed}": entry})
    print(f"weights {path} (sha256 {entry['sha256']}); table {write_table(merged)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
