"""--model_config_file with TF Serving's own good/bad config files, and its poll loop."""

import gc
import logging
import shutil
import time
import weakref

import numpy as np
import pytest

from serving import Client
from serving.models import ModelManager, single_model_config
from tests.serving.conftest import tfs_testdata


def good_config(tmp_path):
    text = tfs_testdata("good_model_config.txt").read_text()
    text = text.replace(
        "${TEST_HALF_PLUS_TWO_DIR}", str(tfs_testdata("saved_model_half_plus_two_cpu"))
    )
    text = text.replace(
        "${TEST_HALF_PLUS_THREE_DIR}", str(tfs_testdata("saved_model_half_plus_three"))
    )
    path = tmp_path / "models.config"
    path.write_text(text)
    return path


def serve_args(*flags):
    from zoo.cli import build_parser

    return build_parser().parse_args(
        [
            "serve",
            "--port",
            "0",
            "--rest_api_port",
            "0",
            "--rest_api_host",
            "127.0.0.1",
            "--grpc_host",
            "127.0.0.1",
            *flags,
        ]
    )


def test_good_model_config_file_serves_both_models(tmp_path):
    from serving.server import Server, config_from_args

    args = serve_args("--model_config_file", str(good_config(tmp_path)))
    with Server(
        config_from_args(args), rest_api_port=0, port=0, host="127.0.0.1", poll_wait_seconds=0
    ) as server:
        for client in (
            Client(rest=f"127.0.0.1:{server.rest_api_port}", timeout=20),
            Client(grpc=f"127.0.0.1:{server.port}", timeout=20),
        ):
            assert client.predict("half_plus_two", [2.0])["y"].tolist() == [3.0]
            assert client.predict("half_plus_three", [2.0])["y"].tolist() == [4.0]
            assert client.status("half_plus_three")[0]["state"] == "AVAILABLE"
            client.close()


def test_bad_model_config_file_is_a_clear_error(tmp_path, capsys):
    from serving.models import read_model_config
    from serving.server import config_from_args

    bad = tfs_testdata("bad_model_config.txt")
    with pytest.raises(
        ValueError, match="bad_model_config.txt: not a valid ModelServerConfig text proto"
    ):
        read_model_config(bad)
    with pytest.raises(
        SystemExit, match="serve: --model_config_file: .*not a valid ModelServerConfig"
    ):
        config_from_args(serve_args("--model_config_file", str(bad)))
    with pytest.raises(SystemExit, match="No such file"):
        config_from_args(serve_args("--model_config_file", str(tmp_path / "missing.config")))
    duplicate = tmp_path / "dup.config"
    duplicate.write_text(
        'model_config_list { config { name: "a" base_path: "/x" } '
        'config { name: "a" base_path: "/y" } }'
    )
    with pytest.raises(ValueError, match="Illegal to list model a 2 times"):
        read_model_config(duplicate)


def test_config_file_poll_reloads_and_survives_a_bad_file(tmp_path, caplog):
    from serving.models import read_model_config
    from serving.server import Server

    path = tmp_path / "models.config"
    two = tfs_testdata("saved_model_half_plus_two_cpu")
    path.write_text(
        f'model_config_list {{ config {{ name: "a" base_path: "{two}" '
        'model_platform: "tensorflow" } }'
    )
    server = Server(
        read_model_config(path),
        rest_api_port=0,
        port=None,
        host="127.0.0.1",
        poll_wait_seconds=0,
        model_config_file=str(path),
        model_config_file_poll_wait_seconds=0.1,
    )
    with server, caplog.at_level(logging.ERROR, logger="serving"):
        client = Client(rest=f"127.0.0.1:{server.rest_api_port}", timeout=20)
        assert client.predict("a", [2.0])["y"].tolist() == [3.0]
        path.write_text(tfs_testdata("bad_model_config.txt").read_text())
        deadline = time.monotonic() + 20
        while "keeping the current models" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "keeping the current models" in caplog.text
        assert client.predict("a", [2.0])["y"].tolist() == [3.0]  # still serving
        good_config(tmp_path)  # rewrites models.config: a new model set replaces "a"
        while time.monotonic() < deadline:
            try:
                np.testing.assert_array_equal(client.predict("half_plus_three", [2.0])["y"], [4.0])
                break
            except Exception:
                time.sleep(0.05)
        assert client.predict("half_plus_three", [2.0])["y"].tolist() == [4.0]
        with pytest.raises(Exception, match="Latest\\(a\\)"):
            client.predict("a", [2.0])


def test_freeze_gc_freezes_after_a_load_and_collects_after_an_unload(tmp_path):
    class Node:
        pass

    source = tfs_testdata("saved_model_half_plus_two_cpu") / "00000123"
    shutil.copytree(source, tmp_path / "m" / "1")
    manager = ModelManager(single_model_config("m", str(tmp_path / "m")), freeze_gc=True)
    cycle = Node()
    cycle.self = cycle  # only the cyclic collector can free it
    alive = weakref.ref(cycle)
    try:
        manager.poll()
        assert gc.get_freeze_count() > 0
        del cycle
        gc.collect()
        assert alive() is not None  # frozen with everything else when version 1 loaded
        manager.poll()  # nothing changed: no collection
        assert alive() is not None
        shutil.copytree(source, tmp_path / "m" / "2")
        shutil.rmtree(tmp_path / "m" / "1")
        manager.poll()  # loads 2, unloads 1: unfreeze, collect, freeze again
        assert sorted(manager.servables["m"]) == [2]
        assert alive() is None
    finally:
        manager.close()
        gc.unfreeze()
