"""Train the two-level attention pipeline (`zoo.two_level`) on cluttered MNIST and measure
each level's held-out accuracy against the same CNN classifying the whole image.

    taskset -c 0 python tools/train_two_level.py --seeds 0 1 2

One fixed recipe (`RECIPE`), stage by stage, for training seed S:

1. FilterNet = baseline: the zoo's MNIST classifier CNN on whole 40x40 cluttered images
   (`TASK`), 10 epochs of fresh clutter (task seeds 1-10; GAIN's baseline recipe,
   tools/train_gain.py). Its held-out accuracy is the baseline's.
2. DomainNet: the same CNN, started from the FilterNet's weights, fine-tuned on the `top_k`
   windows the FilterNet keeps of each training image (label: the image's), 3 epochs over
   the windows kept of one fresh cluttering (task seed 11).
3. Part detectors: the DomainNet's `conv2` filters grouped by spectral clustering of the
   cosine similarity of their activations over 500 kept training patches (k-means seed S).
4. Part classifier: softmax regression on the part features of those kept patches (the
   DomainNet frozen).

Held out: the 1,000 held-out digits (task seed 0). Recorded per run (entry
`two_level_mnist:seed<S>` of `benchmarks/results/two_level.json`): the accuracy of the
object level alone, the part level alone, both (the pipeline's output) and the baseline;
and how well the kept windows cover the digit: the share of the box of the digit's own ink
(`zoo.tasks.ink_boxes`) inside each kept window, against the same for all windows.
`benchmarks/results/two_level.md` is rewritten after each run; the seed-0 weights go to
`zoo/data/weights/two_level_mnist.cluttered_mnist.weights.h5` (sha256 printed). TensorFlow,
CPU, one thread; from the repository root.
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
from tools.experiments import ResultsFile, binomial_standard_error, mean_sd  # noqa: E402
from zoo import tasks  # noqa: E402
from zoo.two_level import activation_affinity, build_two_level_mnist, spectral_clustering  # noqa: E402

NAME = "two_level_mnist"
TAG = "cluttered_mnist"
WEIGHTS = ROOT / "zoo" / "data" / "weights" / f"{NAME}.{TAG}.weights.h5"
RESULTS_FILE = ResultsFile(ROOT / "benchmarks" / "results" / "two_level.json")
RESULTS_MD = ROOT / "benchmarks" / "results" / "two_level.md"

TASK = {"size": 40, "num_clutter": 4, "clutter_size": 8}
RECIPE = {
    "filter_epochs": 10,
    "filter_learning_rate": 1e-3,
    "domain_epochs": 3,
    "domain_learning_rate": 5e-4,
    "batch_size": 64,
    "cluster_patches": 500,
    "part_epochs": 20,
    "part_learning_rate": 1e-3,
    "part_batch_size": 128,
}
EVAL_SEED = 0
EVAL_BATCH = 100
# the reload test's slice: the first held-out images
CHECK_IMAGES = 100
LEVELS = ("object", "part", "combined", "baseline")


def describe_recipe(recipe=RECIPE):
    return (
        f"FilterNet (= baseline) {recipe['filter_epochs']} epochs on whole images, Adam lr "
        f"{recipe['filter_learning_rate']:g} cosine to 5%; DomainNet from the FilterNet, "
        f"{recipe['domain_epochs']} epochs on the windows kept of one fresh pass, lr "
        f"{recipe['domain_learning_rate']:g} cosine to 5%; batch {recipe['batch_size']}; "
        f"conv2 filters clustered over {recipe['cluster_patches']} patches; part classifier "
        f"{recipe['part_epochs']} epochs, Adam lr {recipe['part_learning_rate']:g}, batch "
        f"{recipe['part_batch_size']}"
    )


def task_data(split, seed):
    images, labels, metadata = tasks.cluttered_mnist(split, seed=seed, return_boxes=True, **TASK)
    return images, labels, metadata["boxes"]


def _adam(learning_rate, steps):
    return keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.05)
    )


def _fit(model, examples, epochs_total, learning_rate, batch_size, data, log, what):
    """Compile `model` (logits) once and fit one epoch on each `data(epoch)` (`examples`
    pairs each)."""
    steps = epochs_total * -(-examples // batch_size)
    model.compile(
        _adam(learning_rate, steps),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    start = time.time()
    for epoch in range(epochs_total):
        x, y = data(epoch)
        loss = model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=True, verbose=0)
        log(
            f"  {what} epoch {epoch + 1}/{epochs_total} loss {loss.history['loss'][-1]:.4f} "
            f"({time.time() - start:.0f} s)",
            flush=True,
        )


def kept_patches(model, images, labels, chunk=500):
    """The FilterNet's kept windows of `images`, `(N * top_k, p, p, C)`, with their
    images' labels: `model.levels`' object level, batched through `predict`."""
    kept = []
    for start in range(0, len(images), chunk):
        patches = keras.ops.convert_to_numpy(model.window_patches(images[start : start + chunk]))
        flat = patches.reshape((-1,) + patches.shape[2:])
        logits = model.filter_net.predict(flat, batch_size=chunk, verbose=0)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        scores = (probs.max(-1) / probs.sum(-1)).reshape(patches.shape[:2])
        best = np.argsort(-scores, axis=1, kind="stable")[:, : model.top_k]
        kept.append(np.take_along_axis(patches, best[:, :, None, None, None], axis=1))
    kept = np.concatenate(kept)
    return kept.reshape((-1,) + kept.shape[2:]), np.repeat(labels, model.top_k)


def train_one(seed, recipe=RECIPE, log=print):
    """Build the pipeline with `seed` and train it stage by stage; returns the model."""
    keras.utils.set_random_seed(seed)
    model = build_two_level_mnist((TASK["size"], TASK["size"], 1), 10)
    batch = recipe["batch_size"]

    def whole_images(epoch):
        images, labels, _ = task_data("train", seed=1 + epoch)
        return images, labels

    _fit(
        model.filter_net, 4000, recipe["filter_epochs"],
        recipe["filter_learning_rate"], batch, whole_images, log, "FilterNet",
    )  # fmt: skip
    domain = model.domain_net
    for source, target in zip(model.filter_net.layers[1:], domain.layers[1:]):
        target.set_weights(source.get_weights())
    domain_logits = keras.Model(domain.input, domain.outputs[0])
    # one pass of the FilterNet over fresh images; the DomainNet's epochs reuse its windows
    images, labels, _ = task_data("train", seed=1 + recipe["filter_epochs"])
    patches, labels = kept_patches(model, images, labels)
    _fit(
        domain_logits, len(labels), recipe["domain_epochs"],
        recipe["domain_learning_rate"], batch, lambda epoch: (patches, labels), log, "DomainNet",
    )  # fmt: skip
    _, part_maps, _ = domain.predict(patches[: recipe["cluster_patches"]], verbose=0)
    model.set_part_clusters(
        spectral_clustering(activation_affinity(part_maps), model.num_parts, seed=seed)
    )
    log(f"  part sizes {np.bincount(model.part_clusters(), minlength=model.num_parts)}")
    features = []
    for start in range(0, len(patches), 500):
        _, maps, feature_maps = domain(patches[start : start + 500])
        features.append(keras.ops.convert_to_numpy(model.part_features(maps, feature_maps)))
    features = np.concatenate(features)
    inputs = keras.Input(features.shape[1:])
    part_head = keras.Model(inputs, model.part_classifier(inputs))
    part_head.compile(
        keras.optimizers.Adam(recipe["part_learning_rate"]),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = part_head.fit(
        features,
        labels,
        batch_size=recipe["part_batch_size"],
        epochs=recipe["part_epochs"],
        shuffle=True,
        verbose=0,
    )
    log(f"  part classifier loss {history.history['loss'][-1]:.4f}", flush=True)
    return model


def box_coverage(windows, boxes):
    """`(N, W)` share of each box's area inside each window (`(W, 4)` and `(N, 4)`, both
    `(top, left, bottom, right)`, bottom and right exclusive)."""
    top = np.maximum(boxes[:, None, 0], windows[None, :, 0])
    left = np.maximum(boxes[:, None, 1], windows[None, :, 1])
    bottom = np.minimum(boxes[:, None, 2], windows[None, :, 2])
    right = np.minimum(boxes[:, None, 3], windows[None, :, 3])
    inside = np.clip(bottom - top, 0, None) * np.clip(right - left, 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inside / np.maximum(area, 1)[:, None]


def evaluate(model, images, labels, boxes):
    """Per-image correctness of each level and of the baseline, and the kept windows."""
    predictions = {level: [] for level in LEVELS}
    kept = []
    for start in range(0, len(labels), EVAL_BATCH):
        x = images[start : start + EVAL_BATCH]
        levels = model.levels(x)
        for level in ("object", "part", "combined"):
            predictions[level].append(np.argmax(keras.ops.convert_to_numpy(levels[level]), -1))
        baseline = model.filter_net(x)
        predictions["baseline"].append(np.argmax(keras.ops.convert_to_numpy(baseline), -1))
        kept.append(keras.ops.convert_to_numpy(levels["kept"]))
    correct = {level: np.concatenate(p) == labels for level, p in predictions.items()}
    return correct, np.concatenate(kept)


def measure(model, images, labels, boxes):
    correct, kept = evaluate(model, images, labels, boxes)
    coverage = box_coverage(model.windows, boxes)
    kept_coverage = np.take_along_axis(coverage, kept, axis=1)
    entry = {}
    for level in LEVELS:
        value = float(np.mean(correct[level]))
        key = "accuracy" if level == "combined" else f"{level}_accuracy"
        entry[key] = value
        entry[f"{key}_standard_error"] = binomial_standard_error(value, len(labels))
        entry[f"{key}_check_images"] = float(np.mean(correct[level][:CHECK_IMAGES]))
    entry.update(
        kept_box_coverage=float(kept_coverage.mean()),
        all_windows_box_coverage=float(coverage.mean()),
        kept_half_box_share=float(np.mean(kept_coverage >= 0.5)),
        all_windows_half_box_share=float(np.mean(coverage >= 0.5)),
        top_window_half_box_share=float(np.mean(kept_coverage[:, 0] >= 0.5)),
    )
    return entry


def runs_of(results):
    return sorted(
        (e for k, e in results.items() if k.startswith(f"{NAME}:seed")), key=lambda e: e["seed"]
    )


def _pm(values, scale=100, digits=1):
    mean, sd = mean_sd(values)
    return f"{scale * mean:.{digits}f} ± {scale * sd:.{digits}f}"


def write_markdown(results, path=RESULTS_MD):
    runs = runs_of(results)
    keys = {
        "object": "object_accuracy",
        "part": "part_accuracy",
        "combined": "accuracy",
        "baseline": "baseline_accuracy",
    }
    lines = [
        "# Two-level attention on cluttered MNIST",
        "",
        "Written by `tools/train_two_level.py` (TensorFlow, CPU, one thread). Task: cluttered "
        f"MNIST {TASK['size']}x{TASK['size']}, {TASK['num_clutter']} clutter pieces of "
        f"{TASK['clutter_size']}x{TASK['clutter_size']} (`zoo.tasks.cluttered_mnist`), training "
        "on the 4,000 training digits of `zoo.datasets.mnist_subset` with fresh clutter every "
        "epoch, test on the 1,000 held-out digits (task seed 0). Pipeline `zoo.two_level` "
        "(`two_level_mnist`): 18 candidate windows (24x24 and 32x32, 3x3 positions each, "
        "resized to 28x28; sliding windows instead of the paper's selective search), "
        "FilterNet keeps the 3 most confident, DomainNet classifies them (object level); the "
        "DomainNet's 64 conv2 filters clustered spectrally into 4 part detectors, conv3 "
        "features at each part's peak, softmax regression (part level); the output adds the "
        "two levels' probabilities. Baseline: the FilterNet itself on the whole image (the "
        "zoo's MNIST CNN, GAIN's baseline recipe). Recipe: "
        f"{describe_recipe(RECIPE)}. The pipeline trains {RECIPE['domain_epochs']} more "
        "epochs (the DomainNet's) than the baseline, on top of it.",
        "",
        "| seed | object level | part level | both | baseline (whole image) | kept windows: "
        "box share inside | train time (wall / CPU) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        cells = [str(r["seed"])]
        cells += [f"{100 * r[keys[level]]:.1f}" for level in LEVELS]
        cells.append(f"{r['kept_box_coverage']:.3f}")
        cells.append(f"{r['seconds']:.0f} s / {r['cpu_seconds']:.0f} s")
        lines.append("| " + " | ".join(cells) + " |")
    se = max(r[f"{keys[level]}_standard_error"] for r in runs for level in LEVELS)
    lines += [
        "",
        f"Accuracy (%) on the 1,000 held-out images; the largest test-set standard error of "
        f"any run and level is {100 * se:.1f} points (the verdicts' test SE).",
        "",
    ]
    baseline = [r["baseline_accuracy"] for r in runs]
    for level in LEVELS:
        values = [r[keys[level]] for r in runs]
        line = f"- {level}: {_pm(values)}% (mean ± sample SD over seeds)"
        if level != "baseline" and len(runs) > 1:
            word, margin, noise = experiments.verdict(values, baseline, se)
            line += (
                f"; **{word}** the baseline ({100 * margin:+.1f} points, noise {100 * noise:.1f})"
            )
        lines.append(line + ".")
    lines += [
        f"- Attention: the share of the digit's ink box inside a kept window is "
        f"{_pm([r['kept_box_coverage'] for r in runs], 1, 3)} (any of the 18 windows: "
        f"{runs[0]['all_windows_box_coverage']:.3f}); kept windows holding at least half the "
        f"box: {_pm([r['kept_half_box_share'] for r in runs])}% (any window: "
        f"{100 * runs[0]['all_windows_half_box_share']:.1f}%; the most confident window "
        f"alone: {_pm([r['top_window_half_box_share'] for r in runs])}%).",
    ]
    shipped = results.get(f"{NAME}:seed0", {})
    if "sha256" in shipped:
        lines += [
            "",
            f"Shipped: seed-0 weights `{shipped['file']}` ({shipped['bytes']:,} bytes, sha256 "
            f"`{shipped['sha256']}`); on the first {CHECK_IMAGES} held-out images: both "
            f"{shipped['accuracy_check_images']:.2f}, baseline "
            f"{shipped['baseline_accuracy_check_images']:.2f}.",
        ]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--filter-epochs", type=int, default=RECIPE["filter_epochs"])
    parser.add_argument("--domain-epochs", type=int, default=RECIPE["domain_epochs"])
    parser.add_argument("--no-write", action="store_true", help="write no weights or results")
    args = parser.parse_args(argv)
    recipe = {**RECIPE, "filter_epochs": args.filter_epochs, "domain_epochs": args.domain_epochs}
    images, labels, boxes = task_data("test", seed=EVAL_SEED)
    for seed in args.seeds:
        start, cpu = time.time(), time.process_time()
        model = train_one(seed, recipe)
        entry = {
            "seed": seed,
            "recipe": describe_recipe(recipe),
            "seconds": time.time() - start,
            "cpu_seconds": time.process_time() - cpu,
            "part_clusters": model.part_clusters().tolist(),
            **measure(model, images, labels, boxes),
        }
        print(
            f"seed {seed}: "
            + ", ".join(f"{k} {v:.4f}" for k, v in entry.items() if k.endswith("accuracy"))
            + f" ({entry['cpu_seconds']:.0f} CPU s)",
            flush=True,
        )
        if args.no_write:
            continue
        if seed == 0 and recipe == RECIPE:
            WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
            # weights only (the compiled FilterNet's file would hold its optimizer's variables)
            entry.update(
                experiments.save_weights_only(
                    model, build_two_level_mnist((TASK["size"], TASK["size"], 1), 10), WEIGHTS
                )
            )
            print(f"wrote {WEIGHTS} sha256 {entry['sha256']}", flush=True)
        merged = RESULTS_FILE.save({f"{NAME}:seed{seed}": entry})
        write_markdown(merged)
        keras.backend.clear_session()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
