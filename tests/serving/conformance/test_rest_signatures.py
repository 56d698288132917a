"""REST cases of issue #20 that need models TF Serving's testdata lacks, built here as one small
TF2 SavedModel with a signature per case: string outputs (text, and base64 for `_bytes`
names, like TF Serving's MakeJsonFromTensors), complex64 and half outputs (400 with TF
Serving's message), inputs of many dtypes, and `--rest_api_timeout_in_ms` (the model call is
what is timed, and an abandoned call stops computing)."""

import base64
import json
import threading
import time

import pytest
import tensorflow as tf

from tests.serving.conformance.conftest import call, start_server

TIMEOUT_MS = 300


class Signatures(tf.Module):
    def __init__(self):
        super().__init__()
        self.iterations = tf.Variable(0, dtype=tf.int64)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def strings(self, text):
        return {
            "upper": tf.strings.upper(text),
            "upper_bytes": tf.strings.upper(text),
            "length": tf.strings.length(text),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def complex(self, x):
        return {"z": tf.complex(x, -x)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def half(self, x):
        return {"h": tf.cast(x, tf.float16)}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.int8, name="i8"),
            tf.TensorSpec([None], tf.uint8, name="u8"),
            tf.TensorSpec([None], tf.int16, name="i16"),
            tf.TensorSpec([None], tf.int64, name="i64"),
            tf.TensorSpec([None], tf.bool, name="b"),
            tf.TensorSpec([None], tf.float64, name="d"),
            tf.TensorSpec([None], tf.string, name="s"),
        ]
    )
    def dtypes(self, i8, u8, i16, i64, b, d, s):
        return {
            "i8_out": tf.identity(i8),
            "u8_out": tf.identity(u8),
            "i16_out": tf.identity(i16),
            "i64_out": tf.identity(i64),
            "b_out": tf.identity(b),
            "d_out": tf.identity(d),
            "s_out": tf.identity(s),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="n")])
    def spin(self, n):
        """n[0] iterations of a small matmul, counted in `iterations` as they run."""

        def body(i, m):
            with tf.control_dependencies([self.iterations.assign_add(1)]):
                return i + 1, tf.tanh(tf.matmul(m, m))

        _, m = tf.while_loop(
            lambda i, m: i < n[0], body, (tf.constant(0, tf.int64), tf.eye(64) * 0.5)
        )
        return {"m": tf.reduce_sum(m, keepdims=True) * tf.ones_like(tf.cast(n, tf.float32))}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name="n")])
    def zeros(self, n):
        return {"zeros": tf.zeros([n[0]]) + 0.5}


def save_tf1_spin(path):
    """A TF1 (session) SavedModel: `n` -> n[0] matmul iterations, counted in `iterations`."""
    graph = tf.Graph()
    with graph.as_default():
        n = tf.compat.v1.placeholder(tf.int64, [None], name="n")
        iterations = tf.compat.v1.get_variable(
            "iterations", initializer=tf.constant(0, tf.int64), use_resource=True
        )

        def body(i, m):
            with tf.control_dependencies([iterations.assign_add(1)]):
                return i + 1, tf.tanh(tf.matmul(m, m))

        _, m = tf.compat.v1.while_loop(
            lambda i, m: i < n[0], body, (tf.constant(0, tf.int64), tf.eye(64) * 0.5)
        )
        out = tf.reduce_sum(m) * tf.ones_like(tf.cast(n, tf.float32))
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(str(path))
            signature = tf.compat.v1.saved_model.predict_signature_def({"n": n}, {"m": out})
            builder.add_meta_graph_and_variables(
                session, ["serve"], signature_def_map={"serving_default": signature}
            )
            builder.save()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("signatures")
    module = Signatures()
    names = ["strings", "complex", "half", "dtypes", "spin", "zeros"]
    tf.saved_model.save(
        module, str(base / "m" / "1"), signatures={n: getattr(module, n) for n in names}
    )
    save_tf1_spin(base / "tf1" / "1")
    server = start_server(
        f"""model_config_list {{
        config {{ name: "m" base_path: "{base / "m"}" model_platform: "tensorflow" }}
        config {{ name: "tf1" base_path: "{base / "tf1"}" model_platform: "tensorflow" }} }}""",
        rest_api_timeout_in_ms=TIMEOUT_MS,
    )
    yield server
    server.stop()


def predict(server, body):
    status, headers, text = call(server, "POST", "/v1/models/m:predict", json.dumps(body))
    assert headers["Content-Type"] == "application/json"
    return status, json.loads(text)


def test_string_outputs_text_and_base64_for_bytes_names(server):
    rows = predict(server, {"signature_name": "strings", "instances": ["ab", "\u00e9t\u00e9"]})
    columns = predict(
        server, {"signature_name": "strings", "inputs": {"text": ["ab", "\u00e9t\u00e9"]}}
    )
    b64 = [base64.b64encode(t.encode()).decode() for t in ("AB", "\u00e9T\u00e9")]
    assert rows == (
        200,
        {
            "predictions": [
                {"length": 2, "upper": "AB", "upper_bytes": {"b64": b64[0]}},
                {"length": 5, "upper": "\u00e9T\u00e9", "upper_bytes": {"b64": b64[1]}},
            ]
        },
    )
    assert columns == (
        200,
        {
            "outputs": {
                "length": [2, 5],
                "upper": ["AB", "\u00e9T\u00e9"],
                "upper_bytes": [{"b64": b64[0]}, {"b64": b64[1]}],
            }
        },
    )


@pytest.mark.parametrize("signature, type_name", [("complex", "complex64"), ("half", "half")])
def test_unwritable_outputs_are_400_with_tf_serving_message(server, signature, type_name):
    status, doc = predict(server, {"signature_name": signature, "instances": [1.0, 2.0]})
    assert status == 400 and doc == {
        "error": f"Failed to write JSON value for tensor type: {type_name}"
    }


def test_inputs_of_many_dtypes(server):
    instance = {"i8": 300, "u8": 255, "i16": -3, "i64": 2**62, "b": True, "d": 0.1, "s": "x"}
    status, doc = predict(server, {"signature_name": "dtypes", "instances": [instance]})
    # int8 keeps the low byte of RapidJSON's int (300 -> 44), as TF Serving's int_val does
    assert status == 200 and doc == {
        "predictions": [
            {
                "i8_out": 44,
                "u8_out": 255,
                "i16_out": -3,
                "i64_out": 2**62,
                "b_out": True,
                "d_out": 0.1,
                "s_out": "x",
            }
        ]
    }
    status, doc = predict(
        server, {"signature_name": "dtypes", "instances": [{**instance, "i64": 2**63}]}
    )
    assert status == 400 and "Type: Number is not of expected type: int64" in doc["error"]


def test_timeout_covers_the_model_call_and_stops_it(server):
    """A call outliving the deadline answers 504 and stops computing: the loop's iteration
    counter stands still afterwards, far below the requested count."""
    servable = next(iter(server.manager.servables["m"].values()))
    counter = servable._tf2.iterations
    status, doc = predict(server, {"signature_name": "spin", "instances": [10**9]})
    assert status == 504 and doc == {"error": "Deadline Exceeded"}
    time.sleep(0.3)  # let the cancellation land
    stopped_at = int(counter.numpy())
    time.sleep(0.5)
    assert int(counter.numpy()) == stopped_at < 10**9
    assert (
        predict(server, {"signature_name": "spin", "instances": [3]})[0] == 200
    )  # the model still serves


def test_timeout_stops_a_tf1_session_call(server):
    """A TF1 session call gets the timeout in its RunOptions, as TF Serving sets it: 504, and
    the session stops the loop."""
    servable = next(iter(server.manager.servables["tf1"].values()))
    status, _, text = call(
        server, "POST", "/v1/models/tf1:predict", json.dumps({"instances": [10**9]})
    )
    assert status == 504 and json.loads(text) == {"error": "Deadline Exceeded"}
    time.sleep(0.3)
    stopped_at = int(servable._session.run("iterations/Read/ReadVariableOp:0"))
    time.sleep(0.5)
    assert int(servable._session.run("iterations/Read/ReadVariableOp:0")) == stopped_at < 10**9
    status, _, text = call(server, "POST", "/v1/models/tf1:predict", json.dumps({"instances": [3]}))
    assert status == 200


def test_timeout_does_not_cover_parsing_or_formatting(server, monkeypatch):
    """TF Serving times only the model call: a request whose parsing and formatting each take
    longer than the 300 ms timeout (made slow here) but whose call is quick answers 200."""
    from serving import json_tensor

    parse, write = json_tensor.parse_json, json_tensor.predict_response_json

    def slow_parse(text):
        time.sleep(2 * TIMEOUT_MS / 1000)
        return parse(text)

    def slow_write(outputs, row):
        time.sleep(2 * TIMEOUT_MS / 1000)
        return write(outputs, row)

    monkeypatch.setattr(json_tensor, "parse_json", slow_parse)
    monkeypatch.setattr(json_tensor, "predict_response_json", slow_write)
    assert predict(server, {"signature_name": "zeros", "inputs": [3]}) == (
        200,
        {"outputs": [0.5, 0.5, 0.5]},
    )


def test_abandoned_request_never_starts_its_call():
    import asyncio

    from serving.errors import ServingError
    from serving.rest import ModelClock

    loop = asyncio.new_event_loop()
    clock = ModelClock(1.0, loop)
    ran = threading.Event()
    clock.abandon()
    with pytest.raises(ServingError) as caught:
        clock.run(ran.set)
    loop.close()
    assert caught.value.code == "DEADLINE_EXCEEDED" and not ran.is_set()
