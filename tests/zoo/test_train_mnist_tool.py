"""tools/train_mnist_models.py: runs trained in parallel do not erase each other's results."""

import json

from tools import train_mnist_models as tool


def test_save_results_keeps_entries_written_since_the_run_started(tmp_path, monkeypatch):
    path = tmp_path / "mnist_models.json"
    monkeypatch.setattr(tool, "RESULTS_JSON", path)
    path.write_text(json.dumps({"ram:cluttered_mnist": {"error": 0.05},
                                "mnist_cnn:cluttered_mnist": {"error": 0.045}}))
    at_start = tool.load_results()  # what a run reads when it starts
    assert at_start[("ram", "cluttered_mnist")] == {"error": 0.05}
    # meanwhile a parallel run finishes and writes its own entry
    tool.save_results({("mnist_cnn", "cluttered_mnist"): {"error": 0.03}})
    merged = tool.save_results({("ram", "cluttered_mnist"): {"error": 0.038}})
    expected = {"ram:cluttered_mnist": {"error": 0.038}, "mnist_cnn:cluttered_mnist": {"error": 0.03}}
    assert json.loads(path.read_text()) == expected
    assert merged == {tuple(k.split(":")): v for k, v in expected.items()}
    assert [p.name for p in tmp_path.iterdir()] == ["mnist_models.json"]  # no partial file left


def test_load_results_without_a_file(tmp_path, monkeypatch):
    monkeypatch.setattr(tool, "RESULTS_JSON", tmp_path / "absent.json")
    assert tool.load_results() == {}
