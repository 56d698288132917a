"""Notebooks run top to bottom in a fresh kernel; they are committed without outputs.

Each notebook's first code cell is tagged `parameters`; the run adds `SMALL = True` after it
(small sizes, so all notebooks together take well under three minutes on two cores) and sets
`MPLBACKEND=Agg` for the kernel, since the notebooks leave the backend to Jupyter (inline).
The notebooks are written by `tools/make_notebooks.py`.
"""

import pathlib

import nbformat
import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))

# what each notebook must print (stream or result text) once it has run to the end
EXPECTED = {
    "00_quickstart.ipynb": ["test accuracy after one epoch", "(8, 14, 14, 1)"],
    "01_attention_maps.ipynb": [
        "hard: TopKHardAttention",
        "'CrissCrossAttention': (None, 28, 28, 56)",
    ],
    "02_train_and_watch.ipynb": ["TensorBoard logs in", "'attention/cbam1'", "(6, 8, 2)"],
    "03_serve_and_query.ipynb": [
        "saved_model.pb",
        "'AVAILABLE'",
        "raw stub predictions",
        "stopped",
    ],
}


def test_every_notebook_has_expectations():
    assert sorted(EXPECTED) == [path.name for path in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, path.name
            assert "matplotlib.use(" not in cell.source, "leave the backend to Jupyter"


def _with_small_sizes(notebook):
    index = next(
        i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])
    )
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell("SMALL = True"))
    return notebook


def _printed(notebook):
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", ""))
            texts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(texts)


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient", reason="needs the `notebooks` extra")
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = _with_small_sizes(nbformat.read(path, as_version=4))
    nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    printed = _printed(notebook)
    for expected in EXPECTED[path.name]:
        assert expected in printed, (path.name, expected)
