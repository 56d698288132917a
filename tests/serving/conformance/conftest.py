"""Shared helpers of the ports of TF Serving's own test suites (tensorflow/serving 9d981c5):
a server started like the C++ tests start theirs, and raw HTTP calls that keep status,
headers and body exactly as the server sent them."""

import http.client

import pytest

from tests.serving.conftest import tfs_testdata

HANDLER_MODEL = "saved_model_half_plus_two_2_versions"


def start_server(config_text, **options):
    """A `serving.server.Server` on ephemeral loopback ports for a text-format ModelServerConfig."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from serving.server import Server

    config = text_format.Parse(config_text, model_server_config_pb2.ModelServerConfig())
    options = {
        "rest_api_port": 0,
        "port": None,
        "host": "127.0.0.1",
        "poll_wait_seconds": 0,
        **options,
    }
    return Server(config, **options).start(timeout=120)


def call(server, method, path, body=None, headers=None, timeout=60):
    """(status, headers, body text) of one raw HTTP request; `path` is sent as given."""
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_api_port, timeout=timeout)
    try:
        data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
        connection.request(method, path, body=data, headers=headers or {})
        response = connection.getresponse()
        return (
            response.status,
            dict(response.getheaders()),
            response.read().decode("utf-8", "replace"),
        )
    finally:
        connection.close()


@pytest.fixture(scope="module")
def handler_server():
    """The server of `http_rest_api_handler_test.cc`: the 2-version half_plus_two model with
    the specific version policy {123}, label `Version_Label` -> 123, no request timeout."""
    server = start_server(
        f"""
model_config_list {{ config {{
  name: "{HANDLER_MODEL}" base_path: "{tfs_testdata(HANDLER_MODEL)}" model_platform: "tensorflow"
  model_version_policy {{ specific {{ versions: 123 }} }}
  version_labels {{ key: "Version_Label" value: 123 }}
}} }}""",
        rest_api_timeout_in_ms=-1,
    )
    yield server
    server.stop()
