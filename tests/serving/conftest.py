import contextlib
import os
import pathlib
import subprocess
import sys
import time

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


@contextlib.contextmanager
def serve_command(model_base_path, *flags, wait_s=60):
    """`python -m zoo.cli serve` on ephemeral loopback ports in a subprocess (output and errors
    in one pipe); yields (process, the lines it printed up to the REST API's, the REST port).
    Killed on exit if still running."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    loopback = ["--port", "0", "--rest_api_port", "0", "--rest_api_host", "127.0.0.1"]
    loopback += ["--grpc_host", "127.0.0.1", "--file_system_poll_wait_seconds", "0"]
    command = [sys.executable, "-m", "zoo.cli", "serve", *loopback]
    command += ["--model_base_path", str(model_base_path), *flags]
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        lines = []
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Exporting HTTP/REST API at:"):
                break
        yield process, lines, int(lines[-1].rsplit(":", 1)[1].split()[0])
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


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
  config {{ name: "default"
            base_path: "{tfs_testdata("saved_model_half_plus_two_cpu")}"
            model_platform: "tensorflow" }}
  config {{ name: "saved_model_half_plus_two_2_versions"
            base_path: "{tfs_testdata("saved_model_half_plus_two_2_versions")}"
            model_platform: "tensorflow"
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
