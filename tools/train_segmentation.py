"""Train a zoo segmentation model on digit scenes and record its mIoU on held-out scenes.

    KERAS_BACKEND=tensorflow python tools/train_segmentation.py danet_small --seed 0

Builds `zoo.build(NAME, input_shape=(size, size, 3), num_classes=11)`, trains it with
`zoo.train.fit_segmentation` (the `SEGMENTATION_RECIPE`: fresh training scenes of the
4,000 training digits every epoch) and measures the mean IoU over the 11 classes on
`digit_scenes("test", seed=0)` (the 1,000 held-out digits only). Each run is recorded in
`benchmarks/results/segmentation_models.json` under `NAME:seed<S>` (merged with what other
runs wrote meanwhile), its weights written to `--weights-dir` with their sha256, and
`benchmarks/results/segmentation_models.md` rewritten: each model's mIoU averaged over its
training seeds (mean and standard deviation) against the FCN baseline's, and whether it
beats, ties or trails it. CPU, TensorFlow backend; run from the repository root.
"""

import argparse
import json
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
from tools.experiments import ResultsFile, seed_values  # noqa: E402
from zoo import scenes  # noqa: E402
from zoo.train import recipes, segmentation  # noqa: E402

RESULTS_FILE = ResultsFile(ROOT / "benchmarks" / "results" / "segmentation_models.json")
RESULTS = ROOT / "benchmarks" / "results" / "segmentation_models.md"
WEIGHTS_DIR = ROOT / "runs" / "segmentation"
BASELINE = "fcn_small"


def describe_recipe(recipe, epochs, batch_size, aux_weight, size, background_weight=1.0):
    """The run's recipe in words (`aux_weight` None: a model without an auxiliary head)."""
    return (
        f"{epochs} epochs of fresh {size}x{size} training scenes, {recipe.optimizer} lr "
        f"{recipe.peak_learning_rate(batch_size):g} (warmup {recipe.warmup_epochs:g} epoch, "
        f"cosine), weight decay {recipe.weight_decay:g}, batch {batch_size}"
        + (f", aux loss weight {aux_weight:g}" if aux_weight is not None else "")
        + (f", background loss weight {background_weight:g}" if background_weight != 1 else "")
    )


def train_one(
    build,
    name,
    seed,
    epochs,
    size=64,
    batch_size=None,
    aux_weight=None,
    background_weight=1.0,
    **scene,
):
    """Build (`build(input_shape, num_classes)`) with `seed`, train and evaluate one model;
    returns `(model, entry)` where `entry` is what the results file records."""
    recipe = recipes.SEGMENTATION_RECIPE
    aux_weight = segmentation.DEFAULT_AUX_WEIGHT if aux_weight is None else aux_weight
    keras.utils.set_random_seed(seed)
    model = build((size, size, 3), scenes.NUM_CLASSES)
    start = time.time()
    model, _, result = segmentation.fit_segmentation(
        model,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        aux_weight=aux_weight,
        class_weights=None
        if background_weight == 1
        else [background_weight] + [1.0] * (scenes.NUM_CLASSES - 1),
        scene_kwargs={"size": size, **scene},
        verbose=2,
    )
    entry = {
        "model": name,
        "seed": seed,
        "mean_iou": result["mean_iou"],
        "mean_iou_standard_error": result["mean_iou_standard_error"],
        "class_iou": result["class_iou"],
        "pixel_accuracy": result["pixel_accuracy"],
        "params": model.count_params(),
        "epochs": result["epochs"],
        "seconds": time.time() - start,
        "recipe": describe_recipe(
            recipe,
            result["epochs"],
            result["batch_size"],
            aux_weight if len(model.outputs) == 2 else None,
            size,
            background_weight,
        ),
        "backend": keras.backend.backend(),
    }
    return model, entry


def verdict(values, baseline):
    """ "beats", "ties" or "trails": the difference of the means against twice its standard
    error (sample standard deviations over the seeds; with one seed each, any difference
    counts)."""
    values, baseline = np.asarray(values, float), np.asarray(baseline, float)
    difference = values.mean() - baseline.mean()
    variance = sum(v.var(ddof=1) / len(v) for v in (values, baseline) if len(v) > 1)
    if abs(difference) <= 2 * np.sqrt(variance):
        return "ties"
    return "beats" if difference > 0 else "trails"


def _mean_spread(values):
    values = np.asarray(values, float)
    spread = f" ± {values.std(ddof=1):.3f}" if len(values) > 1 else ""
    return f"{values.mean():.3f}{spread} ({len(values)} seed{'s' if len(values) > 1 else ''})"


def write_table(results, path=None):
    path = pathlib.Path(path or RESULTS)
    grouped = seed_values(results, "mean_iou")
    lines = [
        "# Segmentation heads trained here on digit scenes",
        "",
        "Written by `tools/train_segmentation.py`. Mean IoU over the 11 classes (background and "
        "digits 0-9) on `zoo.datasets.digit_scenes('test', seed=0)` (held-out digits only); "
        "mean ± sample standard deviation over training seeds. Verdict against the FCN "
        f"baseline (`{BASELINE}`): the difference of means against twice its standard error.",
    ]
    # the held-out set's own noise, where the runs recorded it: the bootstrap standard error
    # of one run's mIoU over the scenes, averaged over the runs
    with_se = all("mean_iou_standard_error" in e for e in results.values())
    if with_se:
        lines[-1] += (
            " Held-out SE: the standard error of one run's mIoU from resampling the held-out "
            "scenes (bootstrap), averaged over the runs."
        )
    header = ["model", "params", "recipe", "mIoU", "pixel accuracy", "vs FCN"]
    header += ["held-out SE"] * with_se + ["train time per run"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, values in grouped.items():
        runs = [e for e in results.values() if e["model"] == name]
        accuracy = np.mean([e["pixel_accuracy"] for e in runs])
        seconds = np.mean([e["seconds"] for e in runs])
        against = "baseline" if name == BASELINE else "-"
        if name != BASELINE and BASELINE in grouped:
            against = verdict(values, grouped[BASELINE])
        cells = [name, f"{runs[0]['params']:,}", runs[0]["recipe"], _mean_spread(values)]
        cells += [f"{accuracy:.3f}", against]
        if with_se:
            cells.append(f"{np.mean([e['mean_iou_standard_error'] for e in runs]):.3f}")
        lines.append("| " + " | ".join(cells + [f"{seconds:.0f} s"]) + " |")
    lines += experiments.weights_table(results)
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="a zoo segmentation model, e.g. danet_small or fcn_small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--size", type=int, default=64, help="scene side (default: 64)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--aux-weight", type=float, default=None)
    parser.add_argument(
        "--background-weight",
        type=float,
        default=segmentation.DEFAULT_BACKGROUND_WEIGHT,
        help="loss weight of background pixels (digits: 1), below 1 against their ~92%% "
        "share (default: %(default)s)",
    )
    parser.add_argument(
        "--model-kwargs", type=json.loads, default={}, help="JSON, e.g. '{\"aux_head\": true}'"
    )
    parser.add_argument("--weights-dir", default=str(WEIGHTS_DIR))
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    import zoo

    def build(input_shape, num_classes):
        return zoo.build(
            args.name, input_shape=input_shape, num_classes=num_classes, **args.model_kwargs
        )

    model, entry = train_one(
        build,
        args.name,
        args.seed,
        args.epochs,
        args.size,
        args.batch_size,
        args.aux_weight,
        args.background_weight,
    )
    print(
        f"{args.name} seed {args.seed}: mIoU {entry['mean_iou']:.4f}, pixel accuracy "
        f"{entry['pixel_accuracy']:.4f} on the held-out scenes ({entry['seconds']:.0f} s)"
    )
    if args.no_write:
        return 0
    weights_dir = pathlib.Path(args.weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    path = weights_dir / f"{args.name}.digit_scenes.seed{args.seed}.weights.h5"
    # weights only (a compiled model's file would hold the optimizer's variables too)
    entry.update(
        experiments.save_weights_only(
            model, build((args.size, args.size, 3), scenes.NUM_CLASSES), path
        )
    )
    merged = RESULTS_FILE.save({f"{args.name}:seed{args.seed}": entry})
    print(f"weights {path} (sha256 {entry['sha256']}); table {write_table(merged)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
