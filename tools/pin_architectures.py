"""Pin the architecture of every zoo model that has pretrained weights.

Keras weight files are keyed by layer class and creation order, so a shipped or converted
checkpoint only fits the exact architecture it was made for. This writes, for each model in
`zoo.list_models(pretrained=True)`, the ordered list of weight-holding layers (name, class,
weight shapes; `zoo.models.architecture_summary`) to tests/fixtures/zoo/architectures.json;
tests/zoo/test_architecture_pins.py fails when a layer is added, removed or reordered.
Rerun deliberately, after checking the change keeps the weights loadable:

    python tools/pin_architectures.py
"""

import json
import pathlib

import zoo
from zoo.models import architecture_summary

TARGET = (
    pathlib.Path(__file__).resolve().parents[1]
    / "tests"
    / "fixtures"
    / "zoo"
    / "architectures.json"
)


def pinned_models():
    return zoo.list_models(pretrained=True)


def main():
    pins = {name: architecture_summary(zoo.build(name)) for name in pinned_models()}
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text(json.dumps(pins, indent=1) + "\n")
    print(f"pinned {len(pins)} architectures in {TARGET}")


if __name__ == "__main__":
    main()
