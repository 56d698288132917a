"""serving.Client over REST and gRPC against the in-process server: answers, errors, retries."""

import socket
import threading
import time

import numpy as np
import pytest

from serving import Client, ServingError
from tests.serving.conftest import tfs_testdata

TWO = "saved_model_half_plus_two_2_versions"


@pytest.fixture(params=["rest", "grpc"])
def client(request, tf_server):
    if request.param == "rest":
        c = Client(rest=f"http://127.0.0.1:{tf_server.rest_api_port}", timeout=20)
    else:
        c = Client(grpc=f"127.0.0.1:{tf_server.port}", timeout=20)
    yield c
    c.close()


def test_predict_known_answer(client):
    got = client.predict("default", [2, 3, 4])  # ints are cast to the float input
    assert list(got) == ["y"] and got["y"].dtype == np.float32
    np.testing.assert_array_equal(got["y"], [3.0, 3.5, 4.0])
    got = client.predict("default", {"x": np.array([[1.0], [2.0]])})
    np.testing.assert_array_equal(got["y"], [[2.5], [3.0]])


def test_versions_labels_classify_regress(client):
    assert client.predict(TWO, [1.0], version=123)["y"].tolist() == [2.5]
    assert client.predict(TWO, [1.0], label="canary")["y"].tolist() == [2.5]
    assert client.classify("default", [{"x": 2.0}], signature_name="classify_x_to_y") == [
        [("", 3.0)]
    ]
    np.testing.assert_array_equal(
        client.regress("default", [{"x": 2.0}, {"x": 4.0}], signature_name="regress_x_to_y"),
        [3.0, 4.0],
    )
    np.testing.assert_array_equal(
        client.regress("default", [{}], context={"x": 2.0}, signature_name="regress_x_to_y"), [3.0]
    )


def test_metadata_and_status(client):
    import json

    meta = client.metadata(TWO, version=123)
    expected = json.loads(
        tfs_testdata("saved_model_half_plus_two_2_versions_metadata.json").read_text()
    )
    assert meta == expected  # the same document over both protocols
    assert client.status(TWO) == [
        {"version": 124, "state": "AVAILABLE", "error_code": "OK", "error_message": ""},
        {"version": 123, "state": "AVAILABLE", "error_code": "OK", "error_message": ""},
    ]
    assert [s["version"] for s in client.status(TWO, label="stable")] == [123]


def test_errors(client):
    with pytest.raises(ServingError) as info:
        client.predict("foo", [1.0])
    assert info.value.code == "NOT_FOUND" and info.value.http_status == 404
    assert info.value.message == "Servable not found for request: Latest(foo)"
    with pytest.raises(ServingError) as info:
        client.predict(TWO, [1.0], version=99)
    assert (
        info.value.code == "NOT_FOUND"
        and "Specific(saved_model_half_plus_two_2_versions, 99)" in info.value.message
    )
    with pytest.raises(ServingError) as info:
        client.status("foo")
    assert info.value.message == "Could not find any versions of model foo"
    with pytest.raises(ServingError) as info:
        client.classify("default", [{"x": 2.0}], signature_name="regress_x_to_y")
    assert info.value.code == "INVALID_ARGUMENT" and info.value.http_status == 400
    assert (
        "Expected classification signature outputs to contain at least one of" in info.value.message
    )
    with pytest.raises(ServingError) as info:
        client.predict("default", [1.0], signature_name="nope")
    assert info.value.code == "FAILED_PRECONDITION"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_retries_until_the_server_is_up():
    from serving.models import single_model_config
    from serving.server import Server

    rest_port, grpc_port = free_port(), free_port()
    server = Server(
        single_model_config("default", str(tfs_testdata("saved_model_half_plus_two_cpu"))),
        rest_api_port=rest_port,
        port=grpc_port,
        host="127.0.0.1",
        poll_wait_seconds=0,
    )
    timer = threading.Timer(0.6, server.start)
    rest = Client(
        rest=f"http://127.0.0.1:{rest_port}", retries=10, backoff=0.05, max_backoff=0.5, timeout=30
    )
    grpc_client = Client(
        grpc=f"127.0.0.1:{grpc_port}",
        retries=10,
        backoff=0.05,
        max_backoff=0.5,
        timeout=30,
        channel_options=[
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 200),
        ],
    )
    try:
        with pytest.raises(ServingError) as info:  # no retries left: UNAVAILABLE surfaces
            Client(rest=f"http://127.0.0.1:{rest_port}", retries=0).status("default")
        assert info.value.code == "UNAVAILABLE"
        started = time.monotonic()
        timer.start()
        assert rest.predict("default", [2.0])["y"].tolist() == [3.0]
        assert time.monotonic() - started >= 0.5
        assert grpc_client.predict("default", [2.0])["y"].tolist() == [3.0]
    finally:
        timer.join()
        grpc_client.close()
        server.stop()


def test_deadline_and_no_retry_on_other_codes(tf_server):
    closed = free_port()
    started = time.monotonic()
    with pytest.raises(ServingError) as info:
        Client(rest=f"http://127.0.0.1:{closed}", retries=100, backoff=0.05, timeout=0.5).status(
            "default"
        )
    assert (
        info.value.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED") and time.monotonic() - started < 3
    )
    calls = []
    client = Client(rest=f"http://127.0.0.1:{tf_server.rest_api_port}", retries=5, backoff=1.0)
    original = client._transport._request

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    client._transport._request = counting
    started = time.monotonic()
    with pytest.raises(ServingError):
        client.status("foo")
    assert len(calls) == 1 and time.monotonic() - started < 1  # NOT_FOUND is not retried


def test_fake_unavailable_is_retried_with_backoff(monkeypatch, tf_server):
    import grpc

    client = Client(grpc=f"127.0.0.1:{tf_server.port}", retries=3, backoff=0.05)
    real = client._transport._predict_stub.GetModelMetadata
    attempts = []

    class Unavailable(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.UNAVAILABLE

        def details(self):
            return "fake"

    def flaky(request, timeout=None):
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise Unavailable()
        return real(request, timeout=timeout)

    client._transport._predict_stub.GetModelMetadata = flaky
    assert client.metadata("default")["model_spec"]["name"] == "default"
    assert len(attempts) == 3 and attempts[2] - attempts[1] >= attempts[1] - attempts[0] >= 0.04
    attempts.clear()
    client.retries = 1
    with pytest.raises(ServingError) as info:
        client.metadata("default")
    assert (info.value.code, info.value.message, len(attempts)) == ("UNAVAILABLE", "fake", 2)
    client.close()


def test_bytes_are_sent_exactly():
    from serving.client import _as_array, _json_value

    array = _as_array([b"ab\x00", "é"])
    assert array.dtype == object and array.tolist() == [b"ab\x00", "é".encode()]
    assert _json_value(_as_array(b"\x00\xff\x00")) == [{"b64": "AP8A"}]


def test_rest_predict_body_is_exact():
    """Numeric inputs go through orjson: float32 as its shortest round-trip text, float64 in
    full, non-finite values as the NaN / Infinity tokens TF Serving's parser accepts."""
    import json

    from serving.client import _dumps, _json_value

    def body(value):
        return _dumps({"inputs": {"x": _json_value(np.asarray(value))}})

    assert body(np.array([[0.1, 1 / 3]], np.float32)) == b'{"inputs":{"x":[[0.1,0.33333334]]}}'
    assert body(np.array([0.1 + 0.2])) == b'{"inputs":{"x":[0.30000000000000004]}}'
    assert body(np.array([np.nan, np.inf, -np.inf, 1.5], np.float32)) == (
        b'{"inputs":{"x":[NaN, Infinity, -Infinity, 1.5]}}'
    )
    assert (
        body(np.arange(6, dtype=np.int8).reshape(2, 3)[:, ::2]) == b'{"inputs":{"x":[[0,2],[3,5]]}}'
    )
    assert body(np.array(2.5, np.float32)) == b'{"inputs":{"x":2.5}}'
    assert body(np.array([[True, False]])) == b'{"inputs":{"x":[[true,false]]}}'
    assert body(np.zeros((0, 3), np.float32)) == b'{"inputs":{"x":[]}}'
    image = np.random.default_rng(0).random((1, 64, 64, 3)).astype(np.float32)
    sent = json.loads(body(image))["inputs"]["x"]
    np.testing.assert_array_equal(np.asarray(sent, np.float32), image)  # bit-exact
    assert len(body(image)) < len(json.dumps(image.astype(np.float64).tolist())) * 0.6


def test_rest_predict_sends_non_finite_values(tf_server):
    client = Client(rest=f"http://127.0.0.1:{tf_server.rest_api_port}", timeout=20)
    got = client.predict("default", np.array([np.nan, np.inf, 2.0], np.float32))["y"]
    np.testing.assert_array_equal(got, [np.nan, np.inf, 3.0])
    client.close()


def count_connects(monkeypatch):
    import http.client

    connects = []
    real_connect = http.client.HTTPConnection.connect

    def connect(self):
        connects.append(threading.get_ident())
        return real_connect(self)

    monkeypatch.setattr(http.client.HTTPConnection, "connect", connect)
    return connects


def test_rest_keeps_one_connection_per_thread(monkeypatch, tf_server):
    connects = count_connects(monkeypatch)
    client = Client(rest=f"http://127.0.0.1:{tf_server.rest_api_port}", timeout=20)
    assert client.predict("default", [2.0])["y"].tolist() == [3.0]
    with pytest.raises(ServingError) as info:  # an error answer leaves the connection usable
        client.predict("foo", [1.0])
    assert info.value.http_status == 404
    assert client.status("default")[0]["state"] == "AVAILABLE"
    assert client.predict("default", [4.0])["y"].tolist() == [4.0]
    assert len(connects) == 1
    worker = threading.Thread(target=lambda: client.predict("default", [0.0]))
    worker.start()
    worker.join()
    assert len(connects) == 2 and connects[1] != connects[0]
    client.close()  # closes every thread's connection; the next call opens a new one
    assert client.predict("default", [6.0])["y"].tolist() == [5.0] and len(connects) == 3
    client.close()


class _OneShotHandler:
    """HTTP/1.1 answers that keep the connection open in their headers but close it after one
    response, as a server does when its keep-alive timeout expires."""

    @staticmethod
    def serve(answer):
        import http.server

        seen = {"connections": 0, "requests": 0}

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                seen["connections"] += 1
                super().setup()

            def do_GET(self):
                seen["requests"] += 1
                if not answer:
                    self.close_connection = True
                    return  # no response at all
                body = b'{"model_version_status": []}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, seen


def test_rest_reopens_a_connection_the_server_closed():
    server, seen = _OneShotHandler.serve(answer=True)
    try:
        client = Client(rest=f"http://127.0.0.1:{server.server_address[1]}", retries=0, timeout=5)
        assert client.status("m") == []
        time.sleep(0.1)  # let the server's close reach us
        assert client.status("m") == []  # no retries allowed: the resend is not a retry
        assert seen == {"connections": 2, "requests": 2}
        client.close()
    finally:
        server.shutdown()
        server.server_close()


def test_rest_does_not_resend_on_a_new_connection():
    server, seen = _OneShotHandler.serve(answer=False)
    try:
        client = Client(rest=f"http://127.0.0.1:{server.server_address[1]}", retries=0, timeout=5)
        with pytest.raises(ServingError) as info:
            client.status("m")
        assert (
            info.value.code == "UNAVAILABLE"
            and "Remote end closed connection" in info.value.message
        )
        assert seen == {"connections": 1, "requests": 1}
    finally:
        server.shutdown()
        server.server_close()


def test_rest_url_is_checked():
    with pytest.raises(ValueError, match="rest must be an http:// or https:// URL"):
        Client(rest="ftp://host:8501")
