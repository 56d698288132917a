"""Every model with pretrained weights keeps the exact architecture its weights were made for
(tools/pin_architectures.py wrote the pins)."""

import json

import keras
import pytest

import zoo
from tools.pin_architectures import TARGET
from zoo.models import architecture_summary

PINS = json.loads(TARGET.read_text())


def test_every_pretrained_model_is_pinned():
    assert sorted(PINS) == sorted(zoo.list_models(pretrained=True))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PINS))
def test_architecture_matches_its_pin(name):
    actual = architecture_summary(zoo.build(name))
    expected = PINS[name]
    for index, (got, want) in enumerate(zip(actual, expected)):
        assert got == want, f"{name}: weight-holding layer {index} is {got!r}, pinned {want!r}"
    assert len(actual) == len(expected), (
        f"{name}: {len(actual)} weight-holding layers, pinned {len(expected)}"
    )
    keras.backend.clear_session()
