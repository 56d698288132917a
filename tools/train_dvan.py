"""Train DVAN and its uniform-attention baseline on cluttered MNIST and record their held-out
accuracy and how their attention spreads over the steps.

    taskset -c 0 python tools/train_dvan.py dvan_mnist --seed 0

Builds `zoo.build(NAME)` (40x40 cluttered MNIST, `TASK`), trains it with the fixed `RECIPE`
on fresh clutter of the 4,000 training digits every epoch (task seeds 1000 * (seed + 1) +
epoch) and measures on the 1,000 held-out digits (task seed 0) its accuracy and the
overlap of consecutive steps' attention (`zoo.dvan.diversity_penalty`, 1 for the uniform
baseline). Each run is recorded in `benchmarks/results/dvan.json` under `NAME:seed<S>`
(merged with what other runs wrote meanwhile), its weights written to `--weights-dir` with
their sha256, and `benchmarks/results/dvan.md` rewritten: each model's accuracy over its
training seeds (mean ± sample standard deviation) and the verdict of DVAN against the
baseline. TensorFlow on one CPU thread; run from the repository root.
"""

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `tools.experiments` when run as a script

from tools import experiments  # noqa: E402
from tools.experiments import (  # noqa: E402
    ResultsFile,
    binomial_standard_error,
    format_mean_sd,
    mean_sd,
    seed_values,
)
from zoo import tasks  # noqa: E402
from zoo.catalog import DVAN_CHECK, DVAN_TASK  # noqa: E402

RESULTS_FILE = ResultsFile(ROOT / "benchmarks" / "results" / "dvan.json")
RESULTS = ROOT / "benchmarks" / "results" / "dvan.md"
WEIGHTS_DIR = ROOT / "runs" / "dvan"
BASELINE = "dvan_uniform_mnist"
MODELS = ("dvan_uniform_mnist", "dvan_mnist")
TAG = "cluttered_mnist"
TASK = DVAN_TASK
# The first images of the held-out set: the reload test's quick check.
CHECK_IMAGES = DVAN_CHECK[1]
RECIPE = {"epochs": 6, "batch_size": 32, "learning_rate": 2e-3}


def describe_recipe(recipe=RECIPE):
    return (
        f"{recipe['epochs']} epochs of fresh clutter (4,000 digits each), Adam lr "
        f"{recipe['learning_rate']:g} cosine to 0, batch {recipe['batch_size']}"
    )


def training_images(seed, epoch):
    """The training images of `epoch` of the run with training seed `seed` (task seeds
    1000 * (seed + 1) + epoch: never the held-out set's seed 0)."""
    images, labels, _ = tasks.cluttered_mnist("train", seed=1000 * (seed + 1) + epoch, **TASK)
    return images, labels


def test_images():
    images, labels, _ = tasks.cluttered_mnist("test", seed=0, **TASK)
    return images, labels


def evaluate(model, images, labels, batch_size=100):
    """`(per-image correctness, per-image mean overlap of consecutive steps' attention)`."""
    from zoo import dvan

    attention = dvan.attention_model(model)
    correct, overlaps = [], []
    for start in range(0, len(labels), batch_size):
        part = slice(start, start + batch_size)
        scores = keras.ops.convert_to_numpy(model(images[part], training=False))
        correct.append(np.argmax(scores, axis=-1) == labels[part])
        weights = keras.ops.convert_to_numpy(attention(images[part], training=False))
        overlaps.append(np.minimum(weights[:, 1:], weights[:, :-1]).sum(-1).mean(-1))
    return np.concatenate(correct), np.concatenate(overlaps)


def variant(name, diversity_weight=None):
    """The results' name of `name` trained with another penalty weight than its default."""
    return name if diversity_weight is None else f"{name}@diversity_weight={diversity_weight:g}"


def train_one(name, seed, recipe=RECIPE, log=print, diversity_weight=None):
    """Build `name` with `seed` (and `diversity_weight` when given), train it by `recipe`;
    returns `(model, entry)`."""
    import zoo

    keras.utils.set_random_seed(seed)
    options = {} if diversity_weight is None else {"diversity_weight": diversity_weight}
    model = zoo.build(name, classifier_activation=None, **options)
    epochs, batch_size = recipe["epochs"], recipe["batch_size"]
    steps = epochs * -(-4000 // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(recipe["learning_rate"], steps)
    model.compile(
        keras.optimizers.Adam(schedule),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start, cpu = time.time(), time.process_time()
    for epoch in range(epochs):
        images, labels = training_images(seed, epoch)
        history = model.fit(
            images, labels, batch_size=batch_size, epochs=1, shuffle=True, verbose=0
        ).history
        log(
            f"{name} seed {seed} epoch {epoch + 1}/{epochs}: loss {history['loss'][-1]:.4f} "
            f"accuracy {history['accuracy'][-1]:.4f} ({time.time() - start:.0f} s)",
            flush=True,
        )
    seconds, cpu_seconds = time.time() - start, time.process_time() - cpu
    images, labels = test_images()
    correct, overlaps = evaluate(model, images, labels)
    test_accuracy = float(np.mean(correct))
    entry = {
        "model": variant(name, diversity_weight),
        "seed": seed,
        "test_accuracy": test_accuracy,
        "test_accuracy_standard_error": binomial_standard_error(test_accuracy, len(labels)),
        "test_accuracy_check_images": float(np.mean(correct[:CHECK_IMAGES])),
        "attention_overlap": float(np.mean(overlaps)),
        "train_accuracy_last_epoch": float(history["accuracy"][-1]),
        "params": model.count_params(),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "recipe": describe_recipe(recipe),
        "backend": keras.backend.backend(),
    }
    return model, entry


def verdict(values, baseline, n):
    """The verdict against the baseline, the test SE taken at the baseline's mean accuracy
    on `n` images."""
    return experiments.verdict(values, baseline, binomial_standard_error(mean_sd(baseline)[0], n))


def write_table(results, path=None):
    path = pathlib.Path(path or RESULTS)
    grouped = seed_values(results, "test_accuracy")
    overlaps = seed_values(results, "attention_overlap")
    n = 1000
    lines = [
        "# DVAN on cluttered MNIST",
        "",
        "Written by `tools/train_dvan.py` (TensorFlow, CPU, one thread). Accuracy (%) on "
        f"`zoo.tasks.cluttered_mnist('test', seed=0)` at {TASK['size']}x{TASK['size']} with "
        f"{TASK['num_clutter']} clutter pieces of {TASK['clutter_size']}x{TASK['clutter_size']} "
        "(the 1,000 held-out digits), mean ± sample standard deviation over training seeds; "
        "test SE: the binomial standard error of one run's accuracy on the 1,000 images. "
        "Verdict: the margin of the means against the largest of the two seed spreads and "
        "the test SE. Overlap: the mean over held-out images of sum_i min(a_t,i, a_t-1,i) "
        "between consecutive steps' attention over the 14 regions (1: the same distribution "
        "at every step, as the uniform baseline's; 0: disjoint).",
        "",
        "| model | params | recipe | seeds | accuracy (%) | per seed | test SE | vs uniform | "
        "overlap | train time per run (wall / CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, values in grouped.items():
        runs = sorted((e for e in results.values() if e["model"] == name), key=lambda e: e["seed"])
        se = np.mean([e["test_accuracy_standard_error"] for e in runs])
        against = "baseline"
        if "@" in name:
            against = "not in the verdict"
        elif name != BASELINE and BASELINE in grouped:
            word, margin, noise = verdict(values, grouped[BASELINE], n)
            against = f"{word} ({100 * margin:+.1f} points; noise {100 * noise:.1f})"
        cells = [
            name,
            f"{runs[0]['params']:,}",
            runs[0]["recipe"],
            ", ".join(str(e["seed"]) for e in runs),
            format_mean_sd(values),
            " / ".join(f"{100 * v:.1f}" for v in values),
            f"{100 * se:.1f}",
            against,
            format_mean_sd(overlaps[name], scale=1, digits=3),
            f"{np.mean([e['seconds'] for e in runs]):.0f} s / "
            f"{np.mean([e['cpu_seconds'] for e in runs]):.0f} s",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += experiments.weights_table(results)
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=MODELS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights-dir", default=str(WEIGHTS_DIR))
    parser.add_argument(
        "--diversity-weight",
        type=float,
        help="train dvan_mnist with this penalty weight instead (recorded outside the verdict)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    experiments.use_one_cpu_thread()
    import zoo

    model, entry = train_one(args.name, args.seed, diversity_weight=args.diversity_weight)
    name = entry["model"]
    print(
        f"{name} seed {args.seed}: test accuracy {entry['test_accuracy']:.4f} "
        f"(SE {entry['test_accuracy_standard_error']:.4f}; first {CHECK_IMAGES} images "
        f"{entry['test_accuracy_check_images']:.4f}), attention overlap "
        f"{entry['attention_overlap']:.3f} in {entry['seconds']:.0f} s"
    )
    if args.no_write:
        return 0
    weights_dir = pathlib.Path(args.weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    path = weights_dir / f"{name}.{TAG}.seed{args.seed}.weights.h5"
    # weights only (a compiled model's file would hold the optimizer's variables too)
    entry.update(experiments.save_weights_only(model, zoo.build(args.name), path))
    merged = RESULTS_FILE.save({f"{name}:seed{args.seed}": entry})
    print(f"weights {path} (sha256 {entry['sha256']}); table {write_table(merged)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
