import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
# TF Serving's own test models sit beside every checkout and CI run (../shared); they are the
# oracle of these tests, so a missing folder fails loudly rather than skipping the suite.
TESTDATA = pathlib.Path(
    os.environ.get("TFSERVING_TESTDATA", REPO.parent / "shared" / "tfserving_testdata")
)


def tfs_testdata(name):
    path = TESTDATA / name
    if not path.exists():
        pytest.fail(
            f"TF Serving test models not found at {path}: the checkout needs ../shared beside it "
            "(or set TFSERVING_TESTDATA)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def tf_server():
    """One server for the session: half_plus_two_cpu as `default`, the 2-version model with all
    versions and labels, started in-process on an ephemeral loopback port."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from serving.server import Server

    config = text_format.Parse(
        f"""
model_config_list {{
  config {{ name: "default" base_path: "{tfs_testdata("saved_model_half_plus_two_cpu")}" model_platform: "tensorflow" }}
  config {{ name: "saved_model_half_plus_two_2_versions"
            base_path: "{tfs_testdata("saved_model_half_plus_two_2_versions")}" model_platform: "tensorflow"
            model_version_policy {{ all {{}} }}
            version_labels {{ key: "stable" value: 123 }}
            version_labels {{ key: "canary" value: 124 }} }}
}}""",
        model_server_config_pb2.ModelServerConfig(),
    )
    server = Server(config, rest_api_port=0, port=0, host="127.0.0.1", poll_wait_seconds=0)
    server.start(timeout=60)
    yield server
    server.stop()
