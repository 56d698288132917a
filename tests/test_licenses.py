"""The licence files match the package metadata, and every third-party checkpoint the
registry downloads is listed with its licence."""

import configparser
import pathlib
import re

import pytest

from zoo import registry

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _table():
    """{checkpoint: licence} from THIRD_PARTY_WEIGHTS.md's table rows."""
    rows = re.findall(
        r"^\| (\w+) \| timm/(\S+) \| (\S+) \|$",
        (ROOT / "THIRD_PARTY_WEIGHTS.md").read_text(),
        flags=re.M,
    )
    return {checkpoint: licence for _, checkpoint, licence in rows}


def _timm_checkpoints():
    return {
        entry.source.split("/", 1)[1]
        for spec in registry.all_specs().values()
        for entry in spec.weights
        if entry.source.startswith("timm/")
    }


def test_license_file_matches_the_metadata():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    assert config["metadata"]["license"] == "Apache-2.0"
    assert "LICENSE" in config["metadata"]["license_files"].split()
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text


def test_every_downloaded_checkpoint_is_listed():
    assert _timm_checkpoints() and set(_table()) == _timm_checkpoints()


@pytest.mark.oracle
def test_listed_licences_are_timms():
    import timm.models

    for checkpoint, licence in _table().items():
        assert timm.models.get_pretrained_cfg(checkpoint).license == licence, checkpoint
