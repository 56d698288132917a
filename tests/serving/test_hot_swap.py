"""Version hot-swap under load: no failed request while a new version replaces the old one."""

import shutil
import threading
import time

import numpy as np
import pytest

from serving import Client


def scaled_model(factor):
    import keras

    inputs = keras.Input((1,), name="x")
    dense = keras.layers.Dense(1, use_bias=False, name="scale")
    model = keras.Model(inputs, dense(inputs))
    dense.set_weights([np.array([[factor]], np.float32)])
    return model


@pytest.mark.parametrize("batching", [False, True], ids=["direct", "batching"])
def test_hot_swap_under_concurrent_load(tmp_path, batching):
    from serving.models import single_model_config
    from serving.saved_model import export
    from serving.server import Server
    from tests.serving.test_batching import options

    base = tmp_path / "m"
    old_dir = export(scaled_model(1.0), str(tmp_path), "m", version=1)
    batching_options = (
        options("max_batch_size { value: 8 } batch_timeout_micros { value: 1000 }")
        if batching
        else None
    )
    server = Server(
        single_model_config("m", str(base)),
        rest_api_port=0,
        port=0,
        host="127.0.0.1",
        poll_wait_seconds=0.1,
        batching=batching_options,
    )
    with server:
        clients = [
            Client(rest=f"127.0.0.1:{server.rest_api_port}", timeout=20, retries=0)
            if i % 2
            else Client(grpc=f"127.0.0.1:{server.port}", timeout=20, retries=0)
            for i in range(8)
        ]
        stop = threading.Event()
        answers = [[] for _ in clients]
        failures = []

        def hammer(i):
            x = np.array([[float(i + 1)]], np.float32)
            while not stop.is_set():
                try:
                    y = clients[i].predict("m", x)["output_0"]
                    answers[i].append(round(float(y[0, 0]) / (i + 1), 3))  # the model's factor
                except Exception as error:  # every failure is a test failure
                    failures.append(repr(error))

        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(len(clients))]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60

        def wait_for(condition):
            while not condition() and time.monotonic() < deadline and not failures:
                time.sleep(0.02)
            return condition()

        try:
            assert wait_for(
                lambda: all(len(a) >= 3 for a in answers)
            )  # all serving the old version
            export(scaled_model(2.0), str(tmp_path), "m", version=2)
            assert wait_for(lambda: all(a and a[-1] == 2.0 for a in answers))
            shutil.rmtree(old_dir)
            assert wait_for(lambda: [s[0] for s in server.manager.status("m")] == [2])
            counts = [len(a) for a in answers]
            assert wait_for(lambda: all(len(a) >= c + 3 for a, c in zip(answers, counts)))
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        for client in clients:
            client.close()
    assert failures == []
    for per_thread in answers:
        assert set(per_thread) == {1.0, 2.0}
        switch = per_thread.index(2.0)
        assert per_thread[:switch] == [1.0] * switch and per_thread[switch:] == [2.0] * (
            len(per_thread) - switch
        )
