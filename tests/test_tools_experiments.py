"""tools/experiments.py: the verdict rule every training tool applies, and the results file
that parallel runs merge into."""

import json

import pytest

from tools import experiments


@pytest.mark.parametrize(
    "values, baseline, test_se, expected",
    [
        # margin 0.10 against noise max(0.01, 0.01, 0.02)
        ([0.60, 0.62, 0.61], [0.50, 0.52, 0.51], 0.02, "beats"),
        ([0.40, 0.42, 0.41], [0.50, 0.52, 0.51], 0.02, "behind"),
        # the same margin inside a larger test standard error
        ([0.60, 0.62, 0.61], [0.50, 0.52, 0.51], 0.11, "level"),
        # margin 0.10 inside a seed spread of 0.2
        ([0.40, 0.60, 0.80], [0.50, 0.52, 0.51], 0.02, "level"),
    ],
)
def test_verdict_needs_a_margin_outside_the_seed_spread_and_the_test_error(
    values, baseline, test_se, expected
):
    word, margin, noise = experiments.verdict(values, baseline, test_se)
    assert word == expected
    assert margin == pytest.approx(sum(values) / 3 - sum(baseline) / 3)
    assert noise == pytest.approx(max(experiments.mean_sd(values)[1], 0.01, test_se))


def test_one_seed_has_no_spread_and_the_binomial_error_is_the_closed_form():
    assert experiments.mean_sd([0.7]) == (0.7, 0.0)
    assert experiments.binomial_standard_error(0.9, 100) == pytest.approx(0.03)


def test_results_file_merges_what_other_runs_wrote_and_leaves_no_partial_file(tmp_path):
    path = tmp_path / "r.json"
    experiments.ResultsFile(path).save({"fcn_small:seed0": {"mean_iou": 0.5}})
    merged = experiments.ResultsFile(path).save({"danet_small:seed0": {"mean_iou": 0.6}})
    assert merged == {"danet_small:seed0": {"mean_iou": 0.6}, "fcn_small:seed0": {"mean_iou": 0.5}}
    assert json.loads(path.read_text()) == merged
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_weights_only_file_loads_into_a_fresh_model_and_is_recorded(tmp_path):
    import hashlib

    import keras
    import numpy as np

    def build():
        inputs = keras.Input((3,))
        return keras.Model(inputs, keras.layers.Dense(2)(inputs))

    trained = build()
    trained.compile(keras.optimizers.Adam(0.1), "mse")
    trained.fit(np.ones((4, 3)), np.zeros((4, 2)), verbose=0)
    path = tmp_path / "m.weights.h5"
    record = experiments.save_weights_only(trained, build(), path)
    assert record == {
        "file": "m.weights.h5",
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "bytes": path.stat().st_size,
    }
    reloaded = build()
    reloaded.load_weights(path)
    for got, want in zip(reloaded.get_weights(), trained.get_weights()):
        np.testing.assert_array_equal(got, want)
