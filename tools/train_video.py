"""Train the C2D video classifiers on moving-digit clips and record their held-out accuracy.

    taskset -c 0 python tools/train_video.py nonlocal_c2d_small --seed 0

Builds `zoo.build(NAME)` (8 frames of 32x32), trains it with the fixed `RECIPE` on fresh
`zoo.tasks.moving_mnist_clips("train", seed=...)` clips every epoch (the 4,000 training
digits) and measures its accuracy on `moving_mnist_clips("test", seed=0)` (the 1,000
held-out digits). Each run is recorded in `benchmarks/results/video_nonlocal.json` under
`NAME:seed<S>` (merged with what other runs wrote meanwhile), its weights written to
`--weights-dir` with their sha256, and `benchmarks/results/video_nonlocal.md` rewritten:
each model's accuracy over its training seeds (mean ± sample standard deviation) and the
verdict of the non-local model against the C2D baseline. TensorFlow on one CPU thread;
run from the repository root.
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

RESULTS_FILE = ResultsFile(ROOT / "benchmarks" / "results" / "video_nonlocal.json")
RESULTS = ROOT / "benchmarks" / "results" / "video_nonlocal.md"
WEIGHTS_DIR = ROOT / "runs" / "video"
BASELINE = "c2d_small"
MODELS = ("c2d_small", "nonlocal_c2d_small")
# The first clips of the held-out set: the reload test's quick check.
CHECK_CLIPS = 100
RECIPE = {
    "epochs": 6,
    "batch_size": 32,
    "learning_rate": 2e-3,
    "weight_decay": 1e-4,
}


def describe_recipe(recipe=RECIPE):
    return (
        f"{recipe['epochs']} epochs of fresh training clips (4,000 each), AdamW lr "
        f"{recipe['learning_rate']:g} cosine to 0, weight decay {recipe['weight_decay']:g}, "
        f"batch {recipe['batch_size']}"
    )


def training_clips(seed, epoch):
    """The training clips of `epoch` of the run with training seed `seed` (task seeds
    1000 * (seed + 1) + epoch: never the held-out set's seed 0)."""
    clips, labels, _ = tasks.moving_mnist_clips("train", seed=1000 * (seed + 1) + epoch)
    return clips, labels


def test_clips():
    clips, labels, _ = tasks.moving_mnist_clips("test", seed=0)
    return clips, labels


def accuracy(model, clips, labels, batch_size=100):
    scores = model.predict(clips, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(scores, axis=-1) == labels))


def train_one(name, seed, recipe=RECIPE, log=print):
    """Build `name` with `seed`, train it by `recipe`; returns `(model, entry)`."""
    import zoo

    keras.utils.set_random_seed(seed)
    model = zoo.build(name, classifier_activation=None)
    epochs, batch_size = recipe["epochs"], recipe["batch_size"]
    steps = epochs * -(-4000 // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(recipe["learning_rate"], steps)
    model.compile(
        keras.optimizers.AdamW(schedule, weight_decay=recipe["weight_decay"]),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=True,  # several times faster on CPU than the unfused graph
    )
    start = time.time()
    for epoch in range(epochs):
        clips, labels = training_clips(seed, epoch)
        history = model.fit(
            clips, labels, batch_size=batch_size, epochs=1, shuffle=True, verbose=0
        ).history
        log(
            f"{name} seed {seed} epoch {epoch + 1}/{epochs}: loss {history['loss'][-1]:.4f} "
            f"accuracy {history['accuracy'][-1]:.4f} ({time.time() - start:.0f} s)"
        )
    seconds = time.time() - start
    clips, labels = test_clips()
    test_accuracy = accuracy(model, clips, labels)
    entry = {
        "model": name,
        "seed": seed,
        "test_accuracy": test_accuracy,
        "test_accuracy_standard_error": binomial_standard_error(test_accuracy, len(labels)),
        "test_accuracy_check_clips": accuracy(model, clips[:CHECK_CLIPS], labels[:CHECK_CLIPS]),
        "train_accuracy_last_epoch": float(history["accuracy"][-1]),
        "params": model.count_params(),
        "seconds": seconds,
        "recipe": describe_recipe(recipe),
        "backend": keras.backend.backend(),
    }
    return model, entry


def diagnose(name, log=print):
    """How the shipped weights of `name` err on the held-out clips: the share of clips
    whose prediction is one of their two digits, and within those, the moving one. A model
    blind to motion can at best name one of the two at random (50% within the pair)."""
    import zoo

    clips, labels, meta = tasks.moving_mnist_clips("test", seed=0)
    still_labels = tasks.clip_digits("test")[1][meta["still"]]
    model = zoo.load(name, weights="moving_mnist_clips")
    predicted = np.argmax(model.predict(clips, batch_size=100, verbose=0), axis=-1)
    in_pair = (predicted == labels) | (predicted == still_labels)
    moving = float(np.mean(predicted == labels))
    log(
        f"{name}: accuracy {100 * moving:.1f}%; predicts one of the clip's two digits on "
        f"{100 * np.mean(in_pair):.1f}% of the clips, the moving one on "
        f"{100 * moving / np.mean(in_pair):.1f}% of those; the still one on "
        f"{100 * np.mean(predicted == still_labels):.1f}% of all clips"
    )


def verdict(values, baseline, n):
    """The verdict against the baseline, the test SE taken at the baseline's mean accuracy
    on `n` clips."""
    return experiments.verdict(values, baseline, binomial_standard_error(mean_sd(baseline)[0], n))


def write_table(results, path=None):
    path = pathlib.Path(path or RESULTS)
    grouped = seed_values(results, "test_accuracy")
    n = len(test_clips()[1])
    lines = [
        "# Non-local C2D on moving-digit clips",
        "",
        "Written by `tools/train_video.py`. Accuracy (%) on `zoo.tasks.moving_mnist_clips("
        "'test', seed=0)` (1,000 clips of held-out digits; two digits per clip, one moving, "
        "the label is the moving one's class), mean ± sample standard deviation over "
        "training seeds; test SE: the binomial standard error of one run's accuracy on the "
        "1,000 clips. Verdict: the margin of the means against the larger of the two "
        "seed spreads and the test SE.",
        "",
        "| model | params | recipe | seeds | accuracy (%) | per seed | test SE | vs C2D | "
        "train time per run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, values in grouped.items():
        runs = sorted((e for e in results.values() if e["model"] == name), key=lambda e: e["seed"])
        se = np.mean([e["test_accuracy_standard_error"] for e in runs])
        against = "baseline"
        if name != BASELINE and BASELINE in grouped:
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
            f"{np.mean([e['seconds'] for e in runs]):.0f} s",
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
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="evaluate the shipped weights instead: how often the prediction is the still digit",
    )
    args = parser.parse_args(argv)
    if args.diagnose:
        diagnose(args.name)
        return 0
    experiments.use_one_cpu_thread()
    import zoo

    model, entry = train_one(args.name, args.seed)
    print(
        f"{args.name} seed {args.seed}: test accuracy {entry['test_accuracy']:.4f} "
        f"(SE {entry['test_accuracy_standard_error']:.4f}; first {CHECK_CLIPS} clips "
        f"{entry['test_accuracy_check_clips']:.4f}) in {entry['seconds']:.0f} s"
    )
    if args.no_write:
        return 0
    weights_dir = pathlib.Path(args.weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    path = weights_dir / f"{args.name}.moving_mnist_clips.seed{args.seed}.weights.h5"
    # weights only (a compiled model's file would hold the optimizer's variables too)
    entry.update(experiments.save_weights_only(model, zoo.build(args.name), path))
    merged = RESULTS_FILE.save({f"{args.name}:seed{args.seed}": entry})
    print(f"weights {path} (sha256 {entry['sha256']}); table {write_table(merged)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
