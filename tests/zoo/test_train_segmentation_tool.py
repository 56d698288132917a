"""tools/train_segmentation.py: one run recorded, runs merged, the table's verdicts; the
shipped digit-scenes weights: their registry numbers are the recorded runs', and they reload
to their mIoU on the held-out scenes (the first 32 quickly, all 333 in a slow test)."""

import numpy as np
import pytest

import zoo
from tests.zoo.test_train_segmentation import tiny_segmenter
from tools import experiments
from tools import train_segmentation as tool
from zoo import catalog, registry, scenes, weights
from zoo.train import segmentation


def entry(model, seed, miou):
    return {
        "model": model,
        "seed": seed,
        "mean_iou": miou,
        "pixel_accuracy": 0.9,
        "params": 1234,
        "seconds": 10.0,
        "recipe": "2 epochs",
    }


def test_train_one_records_the_held_out_miou():
    _, recorded = tool.train_one(
        lambda shape, classes: tiny_segmenter(shape, classes),
        "tiny",
        seed=1,
        epochs=1,
        size=48,
        batch_size=8,
        background_weight=0.5,
        num_scenes=8,
    )
    assert recorded["model"] == "tiny" and recorded["seed"] == 1 and recorded["epochs"] == 1
    assert 0.0 <= recorded["mean_iou"] <= 1.0 and len(recorded["class_iou"]) == 11
    assert recorded["recipe"].startswith("1 epochs of fresh 48x48 training scenes, adamw lr 0.0025")
    assert recorded["recipe"].endswith("batch 8, background loss weight 0.5")


@pytest.mark.parametrize(
    "values, baseline, expected",
    [
        ([0.60, 0.62, 0.61], [0.50, 0.52, 0.51], "beats"),
        ([0.40, 0.42, 0.41], [0.50, 0.52, 0.51], "trails"),
        # difference 0.01, standard error sqrt(2 * 0.01**2 / 3) = 0.0082: within twice it
        ([0.51, 0.53, 0.52], [0.50, 0.52, 0.51], "ties"),
        ([0.505], [0.50], "beats"),  # one seed each: any difference counts
    ],
)
def test_verdict(values, baseline, expected):
    assert tool.verdict(values, baseline) == expected


def test_table_gives_mean_spread_and_verdict(tmp_path):
    results = {
        f"{m}:seed{s}": entry(m, s, v)
        for m, values in (("fcn_small", (0.5, 0.52, 0.51)), ("ccnet_small", (0.6, 0.62, 0.61)))
        for s, v in enumerate(values)
    }
    results["ccnet_small:seed0"].update(file="ccnet_small.seed0.weights.h5", sha256="ab" * 32)
    text = tool.write_table(results, tmp_path / "t.md").read_text()
    assert (
        "| ccnet_small | 1,234 | 2 epochs | 0.610 ± 0.010 (3 seeds) | 0.900 | beats | 10 s |"
        in text
    )
    assert "| fcn_small | 1,234 | 2 epochs | 0.510 ± 0.010 (3 seeds) | 0.900 | baseline |" in text
    assert f"| `ccnet_small.seed0.weights.h5` | `{'ab' * 32}` |" in text
    assert np.isclose(np.std([0.6, 0.62, 0.61], ddof=1), 0.01)


# ------------------------------------------------------------ the shipped weights

SHIPPED = sorted(catalog.SEGMENTATION_RESULTS)


def _held_out_scenes():
    # the recorded numbers are on the default held-out set; its first scenes are the quick
    # check (`digit_scenes(num_scenes=32)` would draw other scenes)
    images, labels, _ = scenes.digit_scenes("test", seed=segmentation.EVAL_SEED)
    return images, labels


def test_registry_records_the_runs_of_the_shipped_weights():
    recorded = tool.RESULTS_FILE.load()
    assert {"fcn_small", "danet_small"} <= set(SHIPPED)
    for name in SHIPPED:
        results = catalog.SEGMENTATION_RESULTS[name]
        run = recorded[f"{name}:seed0"]
        spec = registry.get_spec(name).weights_for("digit_scenes")
        assert spec.sha256 == run["sha256"] == experiments.sha256(weights.fetch(name, spec))
        assert results["mean_iou"].value == round(run["mean_iou"], 4)
        assert results["mean_iou_standard_error"].value == round(run["mean_iou_standard_error"], 4)
        seeds = [recorded[f"{name}:seed{s}"]["mean_iou"] for s in (0, 1, 2)]
        assert results["mean_iou_seeds_mean"].value == round(np.mean(seeds), 4)
        assert results["mean_iou_seeds_std"].value == round(np.std(seeds, ddof=1), 4)
        assert f"mIoU {results['mean_iou'].value:.3f} on the 333 held-out" in spec.metric


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_reproduce_their_miou_on_the_check_scenes(name):
    images, labels = _held_out_scenes()
    count = catalog.SEGMENTATION_CHECK_SCENES
    model = zoo.load(name, weights="digit_scenes")
    result = segmentation.evaluate_segmentation(model, images[:count], labels[:count])
    # recorded to 4 decimals; 0.001 leaves room for a few pixels flipped by another
    # thread count's summation order
    expected = catalog.SEGMENTATION_RESULTS[name]["mean_iou_check_scenes"].value
    assert result["mean_iou"] == pytest.approx(expected, abs=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_reproduce_their_recorded_miou_on_all_held_out_scenes(name):
    images, labels = _held_out_scenes()
    model = zoo.load(name, weights="digit_scenes")
    result = segmentation.evaluate_segmentation(model, images, labels)
    expected = catalog.SEGMENTATION_RESULTS[name]["mean_iou"].value
    assert result["mean_iou"] == pytest.approx(expected, abs=1e-3)
