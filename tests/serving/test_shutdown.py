"""Graceful shutdown: in-flight REST and gRPC requests finish; SIGTERM drains and exits 0."""

import signal
import threading
import time

import pytest

from serving import Client, ServingError
from tests.serving.conftest import serve_command, tfs_testdata


def test_stop_drains_in_flight_requests():
    from serving.models import single_model_config
    from serving.server import Server

    server = Server(
        single_model_config("default", str(tfs_testdata("saved_model_half_plus_two_cpu"))),
        rest_api_port=0,
        port=0,
        host="127.0.0.1",
        poll_wait_seconds=0,
        shutdown_grace_seconds=5,
    )
    server.start()
    servable = server.manager.resolve("default")
    original = servable.run
    entered = threading.Semaphore(0)

    def slow_run(*args, **kwargs):
        entered.release()
        time.sleep(1.0)
        return original(*args, **kwargs)

    servable.run = slow_run
    results = {}
    clients = {
        "rest": Client(rest=f"127.0.0.1:{server.rest_api_port}", timeout=20, retries=0),
        "grpc": Client(grpc=f"127.0.0.1:{server.port}", timeout=20, retries=0),
    }
    for client in clients.values():
        client.metadata("default")  # cache the signature before the slow call

    def call(protocol):
        try:
            results[protocol] = clients[protocol].predict("default", [2.0])["y"].tolist()
        except Exception as error:  # recorded for the assertion
            results[protocol] = error

    threads = [threading.Thread(target=call, args=(p,)) for p in clients]
    for thread in threads:
        thread.start()
    assert entered.acquire(timeout=10) and entered.acquire(timeout=10)  # both requests are running
    started = time.monotonic()
    server.stop()
    for thread in threads:
        thread.join(timeout=20)
    assert results == {"rest": [3.0], "grpc": [3.0]}
    assert time.monotonic() - started < 5
    with pytest.raises(ServingError) as info:
        clients["rest"].status("default")
    assert info.value.code == "UNAVAILABLE"
    clients["grpc"].close()


def test_sigterm_stops_the_serve_command():
    model = tfs_testdata("saved_model_half_plus_two_cpu")
    with serve_command(model) as (process, _, port):
        got = Client(rest=f"127.0.0.1:{port}", timeout=10).predict("default", [2.0])
        assert got["y"].tolist() == [3.0]
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
        assert process.returncode == 0, out
        assert "Server stopped." in out
