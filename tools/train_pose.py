"""Train the stick-figure pose estimators and record their held-out PCK@0.2.

    taskset -c 1 python tools/train_pose.py hourglass_pose mca_hourglass_pose --seeds 0 1 2

Builds `zoo.build(NAME, intermediate_outputs=True)` (64x64 images, 16x16 heatmaps of the
nine joints of `zoo.pose_data.JOINTS`), trains it with the fixed `RECIPE` (mean squared
error of every stack's heatmaps against Gaussian bumps at the joints: intermediate
supervision) on `zoo.pose_data.stick_figures("train", seed=0)` (the same figures for every
run; the training seed sets the initial weights and the order of the batches) and measures
PCK@0.2 on `stick_figures("test", seed=0)` (500 figures): a joint is correct when the
decoded heatmap peak lies within 0.2 x the figure's torso length (neck to pelvis) of the
truth. Each run is recorded in `benchmarks/results/pose_mca.json` under `NAME:seed<S>`
(merged with what other runs wrote meanwhile), its weights written to `--weights-dir` with
their sha256, and `benchmarks/results/pose_mca.md` rewritten: each model's PCK over its
training seeds (mean ± sample standard deviation) and the verdict of the attention model
against the hourglass baseline. TensorFlow on one CPU thread; run from the repository root.
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
from tools.experiments import ResultsFile, binomial_standard_error, format_mean_sd, seed_values  # noqa: E402
from zoo import pose_data  # noqa: E402

RESULTS_FILE = ResultsFile(ROOT / "benchmarks" / "results" / "pose_mca.json")
RESULTS = ROOT / "benchmarks" / "results" / "pose_mca.md"
WEIGHTS_DIR = ROOT / "runs" / "pose"
BASELINE = "hourglass_pose"
MODELS = ("hourglass_pose", "mca_hourglass_pose")
TAG = "stick_figures"
# The first figures of the held-out set: the reload test's quick check.
CHECK_FIGURES = 50
RECIPE = {
    "train_figures": 3000,
    "epochs": 2,
    "batch_size": 16,
    "learning_rate": 2e-3,
}


def describe_recipe(recipe=RECIPE):
    return (
        f"{recipe['epochs']} epochs of {recipe['train_figures']:,} training figures, Adam lr "
        f"{recipe['learning_rate']:g} cosine to 0, batch {recipe['batch_size']}, MSE on both "
        "stacks' heatmaps"
    )


def training_figures(recipe=RECIPE):
    images, joints, _ = pose_data.stick_figures("train", seed=0, count=recipe["train_figures"])
    return images, pose_data.heatmaps(joints)


def test_figures():
    images, joints, meta = pose_data.stick_figures("test", seed=0)
    return images, joints, meta["torso"]


def evaluate(model, images, joints, torso, batch_size=100):
    """`(PCK@0.2, (N, K) correct array)` of `model`'s final heatmaps."""
    maps = model.predict(images, batch_size=batch_size, verbose=0)
    if isinstance(maps, list):
        maps = maps[-1]
    return pose_data.pck(pose_data.decode(maps), joints, torso)


def train_one(name, seed, data, recipe=RECIPE, log=print):
    """Build `name` with `seed`, train it by `recipe` on `data` (images, heatmaps);
    returns `(model, entry)`."""
    import zoo

    keras.utils.set_random_seed(seed)
    model = zoo.build(name, intermediate_outputs=True, classifier_activation=None)
    images, maps = data
    epochs, batch_size = recipe["epochs"], recipe["batch_size"]
    steps = epochs * -(-len(images) // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(recipe["learning_rate"], steps)
    outputs = len(model.outputs)
    model.compile(keras.optimizers.Adam(schedule), ["mse"] * outputs)
    start = time.time()
    for epoch in range(epochs):
        history = model.fit(
            images, [maps] * outputs, batch_size=batch_size, epochs=1, shuffle=True, verbose=0
        ).history
        log(
            f"{name} seed {seed} epoch {epoch + 1}/{epochs}: loss {history['loss'][-1]:.5f} "
            f"({time.time() - start:.0f} s)"
        )
    seconds = time.time() - start
    images, joints, torso = test_figures()
    value, correct = evaluate(model, images, joints, torso)
    entry = {
        "model": name,
        "seed": seed,
        "test_pck": value,
        # joints of one figure are not independent; the binomial SE over all joints is the
        # optimistic bound, the SE over figures (per-figure PCK) the honest one: both kept
        "test_pck_standard_error": figure_standard_error(correct),
        "test_pck_binomial_standard_error": binomial_standard_error(value, correct.size),
        "test_pck_check_figures": float(correct[:CHECK_FIGURES].mean()),
        "test_pck_per_joint": dict(zip(pose_data.JOINTS, correct.mean(axis=0).tolist())),
        "train_loss_last_epoch": float(history["loss"][-1]),
        "params": model.count_params(),
        "seconds": seconds,
        "recipe": describe_recipe(recipe),
        "backend": keras.backend.backend(),
    }
    return model, entry


def figure_standard_error(correct):
    """The standard error of PCK over figures: the sample SD of the per-figure PCK over
    sqrt(figures) (a figure's joints are correlated, so this is wider than the binomial
    SE over joints)."""
    per_figure = np.asarray(correct, float).mean(axis=1)
    return float(per_figure.std(ddof=1) / np.sqrt(len(per_figure)))


def verdict(values, baseline, runs):
    """The verdict against the baseline, the test SE taken as the mean over-figures SE of
    the baseline's runs."""
    se = float(np.mean([e["test_pck_standard_error"] for e in runs]))
    return experiments.verdict(values, baseline, se)


def write_table(results, path=None):
    path = pathlib.Path(path or RESULTS)
    grouped = seed_values(results, "test_pck")
    runs_of = {
        name: sorted((e for e in results.values() if e["model"] == name), key=lambda e: e["seed"])
        for name in grouped
    }
    lines = [
        "# Multi-context attention in a small stacked hourglass, on stick figures",
        "",
        "Written by `tools/train_pose.py`. PCK@0.2 (%) on `zoo.pose_data.stick_figures("
        "'test', seed=0)` (500 figures, 9 joints each): a joint is correct when its decoded "
        "heatmap peak (argmax cell, a quarter cell towards the larger neighbour) lies within "
        "0.2 x the figure's torso length (neck to pelvis, 14-20 pixels) of the truth. Mean ± "
        "sample standard deviation over training seeds; test SE: the standard error over "
        "figures (SD of per-figure PCK / sqrt(500)), wider than the binomial SE over the "
        "4,500 joints (also in the JSON). Verdict: the margin of the means against the "
        "largest of the two seed spreads and the test SE.",
        "",
        "| model | params | recipe | seeds | PCK@0.2 (%) | per seed | test SE | vs hourglass | "
        "train time per run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, values in grouped.items():
        runs = runs_of[name]
        se = np.mean([e["test_pck_standard_error"] for e in runs])
        against = "baseline"
        if name != BASELINE and BASELINE in grouped:
            word, margin, noise = verdict(values, grouped[BASELINE], runs_of[BASELINE])
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
    lines += ["", "PCK per joint (%), mean over seeds:", ""]
    lines += ["| model | " + " | ".join(pose_data.JOINTS) + " |"]
    lines += ["|---" * (len(pose_data.JOINTS) + 1) + "|"]
    for name, runs in runs_of.items():
        cells = [
            f"{100 * np.mean([e['test_pck_per_joint'][j] for e in runs]):.1f}"
            for j in pose_data.JOINTS
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += experiments.weights_table(results)
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", choices=MODELS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--weights-dir", default=str(WEIGHTS_DIR))
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    experiments.use_one_cpu_thread()
    import zoo

    data = training_figures()
    for seed in args.seeds:
        for name in args.names:
            model, entry = train_one(name, seed, data)
            print(
                f"{name} seed {seed}: PCK@0.2 {entry['test_pck']:.4f} (SE "
                f"{entry['test_pck_standard_error']:.4f}; first {CHECK_FIGURES} figures "
                f"{entry['test_pck_check_figures']:.4f}) in {entry['seconds']:.0f} s",
                flush=True,
            )
            if args.no_write:
                continue
            weights_dir = pathlib.Path(args.weights_dir)
            weights_dir.mkdir(parents=True, exist_ok=True)
            path = weights_dir / f"{name}.{TAG}.seed{seed}.weights.h5"
            # weights only, into the registered single-output model
            entry.update(experiments.save_weights_only(model, zoo.build(name), path))
            merged = RESULTS_FILE.save({f"{name}:seed{seed}": entry})
            print(f"weights {path} (sha256 {entry['sha256']}); table {write_table(merged)}")
            keras.backend.clear_session()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
