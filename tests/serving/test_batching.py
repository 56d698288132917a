"""Dynamic batching: BatchingParameters text files, merged model calls, queue limits."""

import threading
import time

import numpy as np
import pytest

from serving import Client, ServingError
from tests.serving.conftest import tfs_testdata


def options(text):
    from google.protobuf import text_format

    from serving.batching import BatchingOptions
    from serving.config_protos import BatchingParameters

    return BatchingOptions(text_format.Parse(text, BatchingParameters()))


def test_shipped_batching_and_monitoring_configs_parse():
    from serving.batching import read_batching_options
    from serving.config_protos import read_batching_parameters, read_monitoring_config

    params = read_batching_parameters(tfs_testdata("batching_config.txt"))
    assert params.max_batch_size.value == 128 and params.num_batch_threads.value == 8
    assert params.HasField("batch_timeout_micros") and params.batch_timeout_micros.value == 0
    assert params.max_enqueued_batches.value == 1000000 and not params.HasField("thread_pool_name")
    opts = read_batching_options(tfs_testdata("batching_config.txt"))
    assert (
        opts.max_batch_size,
        opts.batch_timeout_s,
        opts.max_enqueued_batches,
        opts.num_batch_threads,
    ) == (128, 0.0, 1000000, 8)
    assert opts.allowed_batch_sizes == [] and opts.thread_pool_name == "batch_threads"
    monitoring = read_monitoring_config(tfs_testdata("monitoring_config.txt"))
    assert (
        monitoring.prometheus_config.enable
        and monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"
    )


def test_batching_parameters_defaults_and_all_fields():
    opts = options("")
    assert (opts.max_batch_size, opts.batch_timeout_s, opts.max_enqueued_batches) == (1000, 0.0, 10)
    opts = options(
        "max_batch_size { value: 8 } batch_timeout_micros { value: 2500 } "
        'thread_pool_name { value: "p" } allowed_batch_sizes: [2, 4, 8] '
        "pad_variable_length_inputs: true num_batch_threads { value: 3 }"
    )
    assert (
        opts.max_batch_size,
        opts.batch_timeout_s,
        opts.thread_pool_name,
        opts.num_batch_threads,
    ) == (8, 0.0025, "p", 3)
    assert opts.allowed_batch_sizes == [2, 4, 8] and opts.pad_variable_length_inputs
    opts = options(
        "max_batch_size { value: 8 } enable_large_batch_splitting { value: true } "
        "max_execution_batch_size { value: 4 } allowed_batch_sizes: [2, 4]"
    )
    assert opts.enable_large_batch_splitting and opts.execution_size == 4


@pytest.mark.parametrize(
    "text,message",
    [
        (
            "max_batch_size { value: 8 } allowed_batch_sizes: [2, 4]",
            "Last entry in allowed_batch_sizes must match max_batch_size; "
            "last entry was 4; expected 8",
        ),
        (
            "max_batch_size { value: 8 } allowed_batch_sizes: [4, 2, 8]",
            "allowed_batch_sizes entries must be monotonically increasing",
        ),
        ("max_batch_size { value: 0 }", "max_batch_size must be positive"),
        ("num_batch_threads { value: -1 }", "num_batch_threads must be positive"),
    ],
)
def test_bad_batching_parameters_are_clear_errors(text, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        options(text)


def test_batching_file_flags(tmp_path):
    from serving.server import batching_from_args
    from tests.serving.test_model_config import serve_args

    good = tmp_path / "batching.config"
    good.write_text("max_batch_size { value: 4 } allowed_batch_sizes: 4")
    assert (
        batching_from_args(
            serve_args("--enable_batching", "--batching_parameters_file", str(good))
        ).max_batch_size
        == 4
    )
    assert batching_from_args(serve_args("--enable_batching")).max_batch_size == 1000
    assert batching_from_args(serve_args()) is None
    bad = tmp_path / "bad.config"
    bad.write_text(
        "max_batch_size: 4"
    )  # a wrapper message, not a scalar: parse error like the real server
    with pytest.raises(
        SystemExit, match="--batching_parameters_file: .*not a valid BatchingParameters"
    ):
        batching_from_args(serve_args("--enable_batching", "--batching_parameters_file", str(bad)))
    bad.write_text("max_batch_size { value: 4 } allowed_batch_sizes: 2")
    with pytest.raises(
        SystemExit, match="Last entry in allowed_batch_sizes must match max_batch_size"
    ):
        batching_from_args(serve_args("--enable_batching", "--batching_parameters_file", str(bad)))


# -- the scheduler with a plain numpy "model" ------------------------------------------------------


class FakeModel:
    def __init__(self, delay=0.0):
        self.calls, self.delay, self.lock = [], delay, threading.Lock()

    def __call__(self, feeds):
        with self.lock:
            self.calls.append({k: v.copy() for k, v in feeds.items()})
        time.sleep(self.delay)
        return {"y": feeds["x"] * 2.0, "n": np.arange(len(feeds["x"]))}


def concurrently(fn, args_list, timeout=30):
    results = [None] * len(args_list)
    barrier = threading.Barrier(len(args_list))

    def worker(i, args):
        barrier.wait(timeout)
        try:
            results[i] = fn(*args)
        except Exception as error:  # recorded for the assertion
            results[i] = error

    threads = [threading.Thread(target=worker, args=(i, a)) for i, a in enumerate(args_list)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive()
    return results


@pytest.fixture
def batcher_factory():
    from serving.batching import Batcher

    made = []

    def make(text):
        made.append(Batcher(options(text)))
        return made[-1]

    yield make
    for batcher in made:
        batcher.stop()


def test_scheduler_merges_pads_and_splits_back(batcher_factory):
    batcher = batcher_factory(
        "max_batch_size { value: 16 } batch_timeout_micros { value: 300000 } "
        "allowed_batch_sizes: [8, 16] num_batch_threads { value: 1 }"
    )
    model = FakeModel()
    requests = [np.full((1 + i % 2, 3), float(i), np.float32) for i in range(6)]  # 9 rows
    results = concurrently(
        lambda x: batcher.run("s", "serving_default", None, {"x": x}, None, model),
        [(x,) for x in requests],
    )
    for x, result in zip(requests, results):
        np.testing.assert_array_equal(result["y"], x * 2.0)
    assert len(model.calls) == 1 and batcher.batches_run == 1
    assert model.calls[0]["x"].shape == (16, 3)  # 9 rows padded to the next allowed size
    np.testing.assert_array_equal(
        model.calls[0]["x"][9:], np.repeat(model.calls[0]["x"][:1], 7, axis=0)
    )


def test_scheduler_other_trailing_shapes_run_apart_or_padded(batcher_factory):
    text = (
        "max_batch_size { value: 8 } batch_timeout_micros { value: 200000 } "
        "num_batch_threads { value: 2 }"
    )
    batcher, model = batcher_factory(text), FakeModel()
    inputs = [np.ones((1, 2), np.float32), np.ones((1, 3), np.float32), np.ones((1, 2), np.float32)]
    results = concurrently(
        lambda x: batcher.run("s", "k", None, {"x": x}, None, model), [(x,) for x in inputs]
    )
    assert [r["y"].shape for r in results] == [(1, 2), (1, 3), (1, 2)]
    assert sorted(c["x"].shape for c in model.calls) == [(1, 3), (2, 2)]
    batcher, model = batcher_factory(text + " pad_variable_length_inputs: true"), FakeModel()
    inputs = [np.array([[1.0, 2.0]], np.float32), np.array([[5.0, 6.0, 7.0]], np.float32)]
    results = concurrently(
        lambda x: batcher.run("s", "k", None, {"x": x}, None, model), [(x,) for x in inputs]
    )
    assert len(model.calls) == 1 and model.calls[0]["x"].shape == (2, 3)
    assert sorted(model.calls[0]["x"].tolist()) == [
        [1.0, 2.0, 1.0],
        [5.0, 6.0, 7.0],
    ]  # padded with the first value
    assert sorted(r["y"].tolist() for r in results) == [[[2.0, 4.0, 2.0]], [[10.0, 12.0, 14.0]]]


def test_scheduler_input_errors_and_large_batch_splitting(batcher_factory):
    batcher, model = batcher_factory("max_batch_size { value: 4 }"), FakeModel()
    with pytest.raises(
        ServingError, match="Task size 5 is larger than maximum input batch size 4"
    ) as info:
        batcher.run("s", "k", None, {"x": np.ones((5, 1))}, None, model)
    assert info.value.code == "INVALID_ARGUMENT"
    with pytest.raises(ServingError, match="must have equal 0th-dimension size"):
        batcher.run("s", "k", None, {"x": np.ones((2, 1)), "z": np.ones((3, 1))}, None, model)
    with pytest.raises(ServingError, match="must have at least one dimension"):
        batcher.run("s", "k", None, {"x": np.float32(1)}, None, model)
    batcher = batcher_factory(
        "max_batch_size { value: 4 } enable_large_batch_splitting { value: true } "
        "max_execution_batch_size { value: 2 }"
    )
    model = FakeModel()
    x = np.arange(5, dtype=np.float32).reshape(5, 1)
    result = batcher.run("s", "k", None, {"x": x}, None, model)
    np.testing.assert_array_equal(result["y"], x * 2.0)
    assert result["n"].tolist() == [0, 1, 0, 1, 0] and [len(c["x"]) for c in model.calls] == [
        2,
        2,
        1,
    ]


def test_scheduler_wakes_a_worker_for_full_and_newly_opened_batches(batcher_factory):
    # Requests joining an open batch wake no worker; these are the cases that must.
    # A full batch runs at once although its timeout is an hour away.
    batcher, model = (
        batcher_factory(
            "max_batch_size { value: 3 } batch_timeout_micros { value: 3600000000 } "
            "num_batch_threads { value: 2 }"
        ),
        FakeModel(),
    )
    results = concurrently(
        lambda x: batcher.run("s", "k", None, {"x": x}, None, model),
        [(np.full((1, 1), float(i), np.float32),) for i in range(3)],
    )
    assert sorted(float(r["y"][0, 0]) for r in results) == [0.0, 2.0, 4.0] and len(model.calls) == 1

    # A batch opened in a second queue runs on the other worker while the first worker is busy:
    # the first queue's model call waits until the second request has its answer.
    batcher = batcher_factory(
        "max_batch_size { value: 4 } batch_timeout_micros { value: 1000 } "
        "num_batch_threads { value: 2 }"
    )
    first_running, second_done, first_waited = threading.Event(), threading.Event(), []

    def slow(feeds):
        first_running.set()
        first_waited.append(second_done.wait(30))
        return {"y": feeds["x"]}

    first = threading.Thread(
        target=lambda: batcher.run("s", "a", None, {"x": np.ones((1, 1))}, None, slow)
    )
    first.start()
    assert first_running.wait(30)
    second = batcher.run("s", "b", None, {"x": np.full((1, 2), 5.0)}, None, FakeModel())
    second_done.set()
    first.join(30)
    np.testing.assert_array_equal(second["y"], np.full((1, 2), 10.0))
    assert first_waited == [True]


def test_scheduler_model_error_reaches_every_request(batcher_factory):
    batcher = batcher_factory("max_batch_size { value: 8 } batch_timeout_micros { value: 200000 }")

    def broken(feeds):
        raise ServingError("INVALID_ARGUMENT", "boom")

    results = concurrently(
        lambda: batcher.run("s", "k", None, {"x": np.ones((1, 1))}, None, broken), [()] * 3
    )
    assert all(isinstance(r, ServingError) and r.message == "boom" for r in results)


# -- the server -----------------------------------------------------------------------------------


def batching_server(text, **kwargs):
    from serving.models import single_model_config
    from serving.server import Server

    return Server(
        single_model_config("half_plus_two", str(tfs_testdata("saved_model_half_plus_two_cpu"))),
        rest_api_port=0,
        port=0,
        host="127.0.0.1",
        poll_wait_seconds=0,
        batching=options(text),
        **kwargs,
    )


def test_concurrent_rest_and_grpc_requests_share_model_calls():
    server = batching_server(
        "max_batch_size { value: 32 } batch_timeout_micros { value: 300000 } "
        "num_batch_threads { value: 1 }"
    )
    with server:
        servable = server.manager.resolve("half_plus_two")
        original, calls = servable.run_direct, []

        def counting(signature, feeds, *args, **kwargs):
            calls.append(len(feeds["x"]))
            return original(signature, feeds, *args, **kwargs)

        servable.run_direct = counting
        rest = Client(rest=f"127.0.0.1:{server.rest_api_port}", timeout=20, retries=0)
        grpc_client = Client(grpc=f"127.0.0.1:{server.port}", timeout=20, retries=0)
        for client in (rest, grpc_client):
            client.metadata("half_plus_two")
        calls.clear()
        values = [[float(i)] * (1 + i % 3) for i in range(12)]
        jobs = [(rest if i % 2 else grpc_client, v) for i, v in enumerate(values)]
        results = concurrently(lambda c, v: c.predict("half_plus_two", v)["y"].tolist(), jobs)
        assert results == [[0.5 * x + 2 for x in v] for v in values]
        assert sum(calls) == sum(len(v) for v in values)
        assert len(calls) < len(values)  # merged: fewer model calls than requests
        assert server.batcher.batches_run == len(calls)
        grpc_client.close()


def test_queue_full_is_resource_exhausted():
    import grpc  # noqa: F401  (the gRPC client maps the status code)

    server = batching_server(
        "max_batch_size { value: 1 } max_enqueued_batches { value: 1 } "
        "num_batch_threads { value: 1 }"
    )
    with server:
        servable = server.manager.resolve("half_plus_two")
        original, entered, release = servable.run_direct, threading.Event(), threading.Event()

        def blocking(*args, **kwargs):
            entered.set()
            assert release.wait(20)
            return original(*args, **kwargs)

        rest = Client(rest=f"127.0.0.1:{server.rest_api_port}", timeout=20, retries=0)
        grpc_client = Client(grpc=f"127.0.0.1:{server.port}", timeout=20, retries=0)
        for client in (rest, grpc_client):
            client.metadata("half_plus_two")
        servable.run_direct = blocking
        results = {}

        def call(name):
            results[name] = rest.predict("half_plus_two", [2.0])["y"].tolist()

        running = threading.Thread(target=call, args=("running",))
        running.start()
        assert entered.wait(20)  # the first batch runs and blocks the only worker
        queued = threading.Thread(target=call, args=("queued",))
        queued.start()
        deadline = time.monotonic() + 20
        while (
            not any(q.batches for q in list(server.batcher._queues.values()))
            and time.monotonic() < deadline
        ):
            time.sleep(0.01)
        for client in (rest, grpc_client):
            with pytest.raises(ServingError) as info:
                client.predict("half_plus_two", [2.0])
            assert info.value.code == "RESOURCE_EXHAUSTED"
            assert (
                "The batch scheduling queue to which this task was submitted is full"
                in info.value.message
            )
        from tests.serving.test_rest import call_json

        status, body = call_json(server, "/v1/models/half_plus_two:predict", {"instances": [2.0]})
        assert status == 429 and "queue" in body["error"]
        release.set()
        running.join(20)
        queued.join(20)
        assert results == {"running": [3.0], "queued": [3.0]}
        grpc_client.close()
