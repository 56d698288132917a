"""Train the zoo's MNIST classifier CNN with and without GAIN on cluttered MNIST; measure
test accuracy and how much of its Grad-CAM mass falls inside the digit's box.

One fixed recipe for both sides (`RECIPE`), training seeds 0, 1, 2 each: the baseline is the
same `zoo.gain.GAIN` wrapper with `alpha=0` (so the same code trains both, and the same seed
gives both the same initial weights and batches), GAIN uses the paper's `alpha=1`, `w=10`,
`s=0.5`, Grad-CAM at `conv3`. Training: the 4,000 training digits of
`zoo.datasets.mnist_subset` as cluttered MNIST (`TASK`), fresh clutter and placements every
epoch (task seeds 1, 2, ...); test: the 1,000 held-out digits, task seed 0. On held-out
digits it measures the accuracy and, per image, the share of the Grad-CAM map of the true
class (ReLU'd, bilinearly upsampled to the image) inside the box of the digit's own ink
(`zoo.tasks.ink_boxes`).

Writes `benchmarks/results/gain.{json,md}` and the seed-0 GAIN weights
`zoo/data/weights/gain_mnist_cnn.cluttered_mnist.weights.h5` (printing its sha256). CPU,
TensorFlow, one thread; from the repository root:
`python tools/train_gain.py [--epochs N] [--seeds 0 1 2] [--no-write]`.
"""

import argparse
import json
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
from tools.experiments import mean_sd, sha256  # noqa: E402
from zoo import tasks  # noqa: E402
from zoo.gain import gain_mnist_cnn, mass_in_box  # noqa: E402

WEIGHTS = ROOT / "zoo" / "data" / "weights" / "gain_mnist_cnn.cluttered_mnist.weights.h5"
RESULTS_JSON = ROOT / "benchmarks" / "results" / "gain.json"
RESULTS_MD = ROOT / "benchmarks" / "results" / "gain.md"

# 40x40 (not RAM's 60x60) so that both sides' three seeds fit the CPU budget.
TASK = {"size": 40, "num_clutter": 4, "clutter_size": 8}
RECIPE = {"epochs": 10, "learning_rate": 1e-3, "batch_size": 64, "alpha": 1.0}
EVAL_SEED = 0
EVAL_BATCH = 100
# the reload test's slice: the first held-out images
CHECK_IMAGES = 100
SIDES = ("baseline", "gain")
# GAIN plus the paper's pixel-level supervision (GAIN_ext) with the digit's ink box as the
# mask H: not part of the verdict (it is told where the digit is), run only when asked for.
BOX_SUPERVISED = "gain_box_supervised"
ALPHA_E = 1.0


def task_data(split, seed):
    """Images, labels and ink boxes of cluttered MNIST (`TASK`)."""
    images, labels, metadata = tasks.cluttered_mnist(split, seed=seed, return_boxes=True, **TASK)
    return images, labels, metadata["boxes"]


def build(alpha, alpha_e=0.0):
    return gain_mnist_cnn(
        (TASK["size"], TASK["size"], 1),
        10,
        classifier_activation=None,
        alpha=alpha,
        alpha_e=alpha_e,
    )


def box_masks(boxes, size):
    """`(N, size, size)` float masks: 1 inside each box, 0 outside."""
    rows = np.arange(size)[None, :, None]
    cols = np.arange(size)[None, None, :]
    top, left, bottom, right = (boxes[:, i, None, None] for i in range(4))
    inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    return inside.astype("float32")


def evaluate(model, images, labels, boxes):
    """Per-image correctness and Grad-CAM mass-in-box share (true class) on held-out data."""
    correct, shares = [], []
    for start in range(0, len(labels), EVAL_BATCH):
        part = slice(start, start + EVAL_BATCH)
        logits = keras.ops.convert_to_numpy(model(images[part], training=False))
        correct.append(np.argmax(logits, axis=-1) == labels[part])
        cam = keras.ops.convert_to_numpy(model.grad_cam(images[part], labels[part]))
        shares.append(mass_in_box(cam, boxes[part]))
    return np.concatenate(correct), np.concatenate(shares)


def summary(correct, shares):
    """Accuracy and mean mass-in-box share with their test-set standard errors."""
    accuracy = float(np.mean(correct))
    valid = shares[~np.isnan(shares)]
    return {
        "accuracy": accuracy,
        "accuracy_se": float(np.sqrt(accuracy * (1 - accuracy) / len(correct))),
        "mass_in_box": float(np.mean(valid)),
        "mass_in_box_se": float(np.std(valid, ddof=1) / np.sqrt(len(valid))),
        "maps_without_mass": int(np.isnan(shares).sum()),
    }


def train_one(side, seed, epochs, log=print):
    keras.utils.set_random_seed(seed)
    if side == BOX_SUPERVISED:
        model = build(RECIPE["alpha"], ALPHA_E)
    else:
        model = build(RECIPE["alpha"] if side == "gain" else 0.0)
    batch = RECIPE["batch_size"]
    steps = epochs * -(-4000 // batch)
    model.compile(
        optimizer=keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(RECIPE["learning_rate"], steps, alpha=0.05)
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    start, cpu = time.time(), time.process_time()
    for epoch in range(epochs):
        x, y, boxes = task_data("train", seed=1 + epoch)
        if side == BOX_SUPERVISED:
            x = {"image": x, "mask": box_masks(boxes, TASK["size"])}
        history = model.fit(x, y, batch_size=batch, epochs=1, shuffle=True, verbose=0)
        log(
            f"  {side} seed {seed} epoch {epoch + 1}/{epochs} loss "
            f"{history.history['loss'][-1]:.4f} ({time.time() - start:.0f} s)",
            flush=True,
        )
    return model, time.time() - start, time.process_time() - cpu


def verdict(gain_runs, base_runs, key):
    """`(word, gap, larger seed SD, test SE)` of GAIN against the baseline on `key`, the test
    SE being the largest of the runs' own."""
    se = max(r[f"{key}_se"] for r in gain_runs + base_runs)
    values, baseline = [r[key] for r in gain_runs], [r[key] for r in base_runs]
    word, gap, _ = experiments.verdict(values, baseline, se)
    return word, gap, max(mean_sd(values)[1], mean_sd(baseline)[1]), se


def write_markdown(results):
    runs = results["runs"]
    lines = [
        "# GAIN on cluttered MNIST",
        "",
        f"Written by `tools/train_gain.py` (TensorFlow, CPU, one thread). Task: cluttered MNIST "
        f"{TASK['size']}x{TASK['size']}, {TASK['num_clutter']} clutter pieces of "
        f"{TASK['clutter_size']}x{TASK['clutter_size']} (`zoo.tasks.cluttered_mnist`); training "
        "on the 4,000 training digits of `zoo.datasets.mnist_subset` with fresh clutter every "
        "epoch, test on the 1,000 held-out digits (task seed 0). Classifier: the zoo's "
        "`mnist_cnn` (`zoo.stn_cnn.build_mnist_cnn`); both sides are `zoo.gain.GAIN` around it, "
        f"the baseline with `alpha=0`. Recipe: {results['recipe']}. Mass in box: per held-out "
        "image, the share of the Grad-CAM map of the true class (at `conv3`, ReLU'd, "
        "bilinearly upsampled) inside the box of the digit's own ink; the box covers "
        f"{100 * results['box_area_share']:.1f}% of the image on average (a uniform map's "
        "share).",
        "",
        "| side | seed | test accuracy | mass in box | train time (wall / CPU) |",
        "|---|---|---|---|---|",
    ]
    for side in SIDES + (BOX_SUPERVISED,):
        for r in (r for r in runs if r["side"] == side):
            lines.append(
                f"| {side} | {r['seed']} | {100 * r['accuracy']:.2f}% ± {100 * r['accuracy_se']:.2f} | "
                f"{r['mass_in_box']:.3f} ± {r['mass_in_box_se']:.3f} | "
                f"{r['seconds']:.0f} s / {r['cpu_seconds']:.0f} s |"
            )
    lines += ["", "± on one run: the test set's standard error.", ""]
    for key, words in (("accuracy", "test accuracy"), ("mass_in_box", "Grad-CAM mass in box")):
        summary_line = []
        for side in SIDES:
            mean, sd = mean_sd([r[key] for r in runs if r["side"] == side])
            scale, unit = (100, "%") if key == "accuracy" else (1, "")
            summary_line.append(f"{side} {scale * mean:.3f}{unit} ± {scale * sd:.3f}")
        lines.append(
            f"- {words}, mean ± sample SD over seeds 0-2: " + "; ".join(summary_line) + "."
        )
    for key, words in (("mass_in_box", "Grad-CAM mass in box"), ("accuracy", "test accuracy")):
        v = results["verdicts"][key]
        lines.append(
            f"- Verdict on {words}: GAIN **{v['verdict']}** the baseline (gap {v['gap']:+.4f}, "
            f"largest seed SD {v['seed_sd']:.4f}, largest test-set SE {v['test_se']:.4f})."
        )
    supervised = [r for r in runs if r["side"] == BOX_SUPERVISED]
    if supervised:
        seeds = ", ".join(str(r["seed"]) for r in supervised)
        mass = np.mean([r["mass_in_box"] for r in supervised])
        accuracy = 100 * np.mean([r["accuracy"] for r in supervised])
        lines.append(
            f"- `{BOX_SUPERVISED}` (not in the verdicts): GAIN plus the paper's pixel-level "
            f"supervision, alpha_e {ALPHA_E:g}, with the digit's ink box as the mask, training "
            f"seed(s) {seeds}: mass in box {mass:.3f}, accuracy {accuracy:.2f}%. It is told "
            "where the digit is, so it is no test of GAIN's attention mining alone."
        )
    if "weights" in results:
        w = results["weights"]
        lines += [
            "",
            f"Shipped: seed-0 GAIN weights `{w['file']}` ({w['bytes']:,} bytes, sha256 "
            f"`{w['sha256']}`); on the first {CHECK_IMAGES} held-out images: accuracy "
            f"{w['check_accuracy']:.2f}, mass in box {w['check_mass_in_box']:.4f}.",
        ]
    RESULTS_MD.write_text("\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=RECIPE["epochs"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--sides", nargs="+", default=list(SIDES), choices=SIDES + (BOX_SUPERVISED,)
    )
    parser.add_argument("--no-write", action="store_true", help="write no weights or results")
    args = parser.parse_args()

    x_test, y_test, boxes = task_data("test", seed=EVAL_SEED)
    runs = []
    if not args.no_write and RESULTS_JSON.exists():
        # runs of other invocations (other seeds / sides) are kept
        runs = json.loads(RESULTS_JSON.read_text())["runs"]
    for seed in args.seeds:
        for side in args.sides:
            model, seconds, cpu = train_one(side, seed, args.epochs)
            correct, shares = evaluate(model, x_test, y_test, boxes)
            entry = {
                "side": side,
                "seed": seed,
                "epochs": args.epochs,
                "seconds": seconds,
                "cpu_seconds": cpu,
                **summary(correct, shares),
                "check_accuracy": float(np.mean(correct[:CHECK_IMAGES])),
                "check_mass_in_box": float(np.nanmean(shares[:CHECK_IMAGES])),
            }
            print(json.dumps(entry), flush=True)
            runs = [r for r in runs if (r["side"], r["seed"]) != (side, seed)] + [entry]
            if args.no_write:
                continue
            if side == "gain" and seed == 0:
                WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
                model.save_weights(WEIGHTS)
                print(f"wrote {WEIGHTS} sha256 {sha256(WEIGHTS)}", flush=True)
            RESULTS_JSON.write_text(json.dumps({"runs": runs}, indent=1) + "\n")
            keras.backend.clear_session()
    if args.no_write:
        return
    area = np.mean((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])) / TASK["size"] ** 2
    results = {
        "task": TASK,
        "recipe": (
            f"{RECIPE['epochs']} epochs, Adam lr {RECIPE['learning_rate']:g} cosine to 5%, "
            f"batch {RECIPE['batch_size']}; GAIN alpha {RECIPE['alpha']:g}, w 10, s 0.5, "
            "Grad-CAM at conv3, target class = true label"
        ),
        "box_area_share": float(area),
        "runs": sorted(runs, key=lambda r: (r["side"], r["seed"])),
    }
    gain_runs = [r for r in runs if r["side"] == "gain"]
    base_runs = [r for r in runs if r["side"] == "baseline"]
    if gain_runs and base_runs:
        results["verdicts"] = {}
        for key in ("mass_in_box", "accuracy"):
            word, gap, sd, se = verdict(gain_runs, base_runs, key)
            results["verdicts"][key] = {"verdict": word, "gap": gap, "seed_sd": sd, "test_se": se}
    if WEIGHTS.exists():
        shipped = next((r for r in gain_runs if r["seed"] == 0), None)
        if shipped is not None:
            results["weights"] = {
                "file": WEIGHTS.name,
                "bytes": WEIGHTS.stat().st_size,
                "sha256": sha256(WEIGHTS),
                "check_accuracy": shipped["check_accuracy"],
                "check_mass_in_box": shipped["check_mass_in_box"],
            }
    RESULTS_JSON.write_text(json.dumps(results, indent=1) + "\n")
    if "verdicts" in results:
        write_markdown(results)
        print(f"wrote {RESULTS_MD}")


if __name__ == "__main__":
    main()
