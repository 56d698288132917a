"""A client for TF Serving (the real `tensorflow_model_server` or this project's server).

    client = Client(rest="http://localhost:8501")     # or Client(grpc="localhost:8500")
    client.predict("resnet", {"image": batch})        # -> {"output_0": np.ndarray}

Numpy arrays in and out; `bytes` values (encoded images) travel as `{"b64": ...}` over REST
and as DT_STRING over gRPC. Every call takes `version=` or `label=` and `timeout=` (seconds,
a deadline for the whole call, retries included). Only UNAVAILABLE is retried (REST 503 or
a refused connection; gRPC UNAVAILABLE), with exponential backoff. Over REST each thread keeps
one HTTP/1.1 connection open and reuses it; a connection the server closed while idle is
reopened once, at no cost to the retry budget. Failures raise
`ServingError` with `.code` (canonical name, e.g. "NOT_FOUND"), `.message` (the server's
message) and `.http_status`. Over REST the code is derived from the HTTP status (400 reads
as INVALID_ARGUMENT even when the server's code was FAILED_PRECONDITION).

The REST side needs only the standard library, numpy and orjson; the gRPC side imports
`tensorflow_serving.apis` (and with it TensorFlow's protos).
"""

import base64
import dataclasses
import http.client
import json
import os
import threading
import time
import urllib.parse

import numpy as np
import orjson

from serving import dtypes
from serving.errors import CODE_NAMES, HTTP_STATUS, ServingError

_CODE_FOR_HTTP = {400: "INVALID_ARGUMENT", 409: "ABORTED", 500: "INTERNAL"}
for _code, _status in HTTP_STATUS.items():
    _CODE_FOR_HTTP.setdefault(_status, _code)


def _leaf(value):
    while isinstance(value, (list, tuple)) and value:
        value = value[0]
    return value


def _as_array(value):
    """A numpy array; bytes and str (nested lists of them) become object arrays of bytes."""
    if isinstance(value, np.ndarray) and value.dtype.kind not in "SUO":
        return value
    if isinstance(value, (bytes, str)):
        value = [value]  # one encoded image is a batch of one
    if isinstance(_leaf(value), (bytes, str)) and not isinstance(value, np.ndarray):
        array = np.array(value, dtype=object)  # exact bytes (numpy's "S" dtype drops trailing NULs)
    else:
        array = np.asarray(value)
    if array.dtype.kind in "SUO":
        out = np.empty(array.shape, dtype=object)
        for index, item in np.ndenumerate(array):
            out[index] = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        array = out
    return array


def _json_value(array):
    """What `_dumps` writes for `array`: nested lists for JSON; bytes become {"b64": ...}.

    Numeric arrays stay numpy arrays, which orjson writes directly, float32 as its shortest
    round-trip text: 12-16x faster than Python floats through json.dumps, in about half the
    bytes (benchmarks/rest_encoding.py)."""
    if array.ndim and array.dtype.kind in "biuf" and array.dtype.itemsize <= 8:
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            # orjson writes NaN / Infinity as null; keep the tokens json.dumps writes, which
            # TF Serving's parser accepts.
            return orjson.Fragment(json.dumps(array.astype(np.float64).tolist()))
        return np.ascontiguousarray(array)
    if array.dtype == object:

        def walk(a):
            if not isinstance(a, np.ndarray):
                return {"b64": base64.b64encode(a).decode("ascii")}
            if a.ndim == 0:
                return walk(a[()])
            return [walk(a[i]) for i in range(a.shape[0])]

        return walk(array)
    if array.dtype.kind == "f":
        return array.astype(np.float64).tolist()
    return array.tolist()


def _dumps(body):
    """A JSON request body (bytes) holding `_json_value` results."""
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def _from_json(value, dtype=None):
    """A numpy array from a JSON value; {"b64": ...} leaves become bytes."""

    def decode(v):
        if isinstance(v, dict) and set(v) == {"b64"}:
            return base64.b64decode(v["b64"])
        if isinstance(v, list):
            return [decode(x) for x in v]
        return v

    decoded = decode(value)
    array = np.asarray(decoded)
    if array.dtype.kind in "SU":
        array = np.asarray(decoded, dtype=object)
    if array.dtype == object:
        return array
    target = _cast_target(dtype)
    if target is not None and array.dtype != target:
        return array.astype(target)
    return array


def _feature_json(value):
    values = value if isinstance(value, (list, tuple, np.ndarray)) else [value]
    out = []
    for v in (
        np.asarray(values, dtype=object).reshape(-1) if isinstance(values, np.ndarray) else values
    ):
        if isinstance(v, bytes):
            out.append({"b64": base64.b64encode(v).decode("ascii")})
        elif isinstance(v, (np.floating, float)):
            out.append(float(v))
        elif isinstance(v, (np.integer, int)) and not isinstance(v, bool):
            out.append(int(v))
        else:
            out.append(v)
    return out


class Client:
    """TF Serving client over REST (`rest="http://host:8501"`) or gRPC (`grpc="host:8500"`).

    Args:
        rest: base URL of the REST API.
        grpc: `host:port` of the gRPC API (exactly one of `rest` and `grpc`).
        timeout: default deadline in seconds for each call (retries included).
        retries: how many times an UNAVAILABLE call is retried.
        backoff: first retry delay in seconds; doubles each retry, capped at `max_backoff`.
        channel_options: extra gRPC channel options (the 4 MB message limits are already raised).
    """

    def __init__(
        self,
        rest=None,
        grpc=None,
        timeout=30.0,
        retries=3,
        backoff=0.1,
        max_backoff=2.0,
        channel_options=(),
    ):
        if (rest is None) == (grpc is None):
            raise ValueError("give exactly one of rest='http://host:8501' or grpc='host:8500'")
        self.timeout, self.retries = timeout, retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self._signatures = {}
        if rest is not None:
            self.protocol = "rest"
            self._transport = _RestTransport(rest, self._with_retries)
            self.url = self._transport.url
        else:
            self.protocol, self.target = "grpc", grpc
            self._transport = _GrpcTransport(grpc, self._with_retries, channel_options)

    def _with_retries(self, attempt, timeout):
        """`attempt(remaining seconds)`, retried on UNAVAILABLE with exponential backoff while
        the deadline (`timeout`, or the client's) allows."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        delay = self.backoff
        for retry in range(self.retries + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServingError("DEADLINE_EXCEEDED", "Deadline Exceeded")
            try:
                return attempt(remaining)
            except ServingError as error:
                if error.code != "UNAVAILABLE" or retry == self.retries:
                    raise
                if deadline - time.monotonic() <= delay:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, self.max_backoff)

    def _signature(self, model, version, label, signature_name, timeout):
        """(input dtypes, output dtypes) of a signature, from metadata (cached)."""
        key = (model, version, label, signature_name or "serving_default")
        if key not in self._signatures:
            meta = self.metadata(model, version=version, label=label, timeout=timeout)
            defs = meta["metadata"]["signature_def"]["signature_def"]
            if key[3] not in defs:
                raise ServingError(
                    "FAILED_PRECONDITION", f'Serving signature key "{key[3]}" not found.'
                )
            sig = defs[key[3]]
            self._signatures[key] = tuple(
                {n: info.get("dtype") for n, info in sig.get(side, {}).items()}
                for side in ("inputs", "outputs")
            )
        return self._signatures[key]

    # ------------------------------------------------------------------ API
    def predict(
        self,
        model,
        inputs,
        version=None,
        label=None,
        signature_name=None,
        output_filter=None,
        timeout=None,
        dequantize=True,
    ):
        """Run a predict signature; returns {output name: np.ndarray}.

        `inputs` is one array (single-input signatures) or {input name: array}; `bytes` values
        (encoded images) are sent as `{"b64": ...}` (REST) or DT_STRING (gRPC). Numeric arrays
        are cast to the signature's input dtypes. `output_filter` (gRPC only) limits the outputs.
        With `dequantize` (default), the uint8 attention maps of an attention signature
        (`attention/<layer>` with its `/scale` and `/offset`, see `serving.attention`) come
        back as float32 maps, `offset + scale * map`, without their scale and offset.
        """
        _check_version(version, label)
        input_dtypes, output_dtypes = self._signature(
            model, version, label, signature_name, timeout
        )
        if not isinstance(inputs, dict):
            if len(input_dtypes) != 1:
                raise ValueError(
                    f"this signature takes several inputs {sorted(input_dtypes)}: pass a dict"
                )
            inputs = {next(iter(input_dtypes)): inputs}
        arrays = {}
        for name, value in inputs.items():
            array = _as_array(value)
            target = _cast_target(input_dtypes.get(name))
            if target is not None and array.dtype != object and array.dtype != target:
                array = array.astype(target)
            arrays[name] = array
        call = _Call(model, version, label, signature_name, timeout)
        outputs = self._transport.predict(call, arrays, output_dtypes, output_filter)
        return dequantize_attention(outputs) if dequantize else outputs

    def classify(
        self,
        model,
        examples,
        version=None,
        label=None,
        signature_name=None,
        context=None,
        timeout=None,
    ):
        """Classify `examples` (a list of {feature: value or list}); returns, per example,
        a list of (label, score) pairs."""
        _check_version(version, label)
        call = _Call(model, version, label, signature_name, timeout)
        results = self._transport.examples("classify", call, examples, context)
        return [[(str(lab), float(score)) for lab, score in row] for row in results]

    def regress(
        self,
        model,
        examples,
        version=None,
        label=None,
        signature_name=None,
        context=None,
        timeout=None,
    ):
        """Regress `examples` (a list of {feature: value or list}); returns a float32 array."""
        _check_version(version, label)
        call = _Call(model, version, label, signature_name, timeout)
        results = self._transport.examples("regress", call, examples, context)
        return np.asarray(results, dtype=np.float32)

    def metadata(self, model, version=None, label=None, timeout=None):
        """The model's metadata as TF Serving's REST API writes it (`model_spec`,
        `metadata.signature_def.signature_def`), over either protocol."""
        _check_version(version, label)
        return self._transport.metadata(_Call(model, version, label, None, timeout))

    def status(self, model, version=None, label=None, timeout=None):
        """[{"version": int, "state": "AVAILABLE", "error_code": "OK", "error_message": ""}, ...]"""
        _check_version(version, label)
        return self._transport.status(_Call(model, version, label, None, timeout))

    def close(self):
        self._transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def dequantize_attention(outputs):
    """`outputs` with each uint8 attention map (`attention/<layer>` beside float
    `attention/<layer>/scale` and `/offset`, one value per sample) replaced by the float32
    map `offset + scale * map`, and its scale and offset removed; other outputs unchanged."""
    from serving.attention import KEY_PREFIX, OFFSET_SUFFIX, SCALE_SUFFIX

    outputs = dict(outputs)
    for key in [k for k in outputs if k.startswith(KEY_PREFIX)]:
        scale_key, offset_key = key + SCALE_SUFFIX, key + OFFSET_SUFFIX
        if key not in outputs or scale_key not in outputs or offset_key not in outputs:
            continue  # a scale or offset itself (removed already), or not quantised
        quantised = np.asarray(outputs[key])
        if quantised.dtype != np.uint8:
            continue
        expand = (-1,) + (1,) * (quantised.ndim - 1)
        scale = np.asarray(outputs.pop(scale_key), np.float32).reshape(expand)
        offset = np.asarray(outputs.pop(offset_key), np.float32).reshape(expand)
        outputs[key] = offset + scale * quantised.astype(np.float32)
    return outputs


def _check_version(version, label):
    if version is not None and label is not None:
        raise ValueError("give version or label, not both")


def _cast_target(dtype_name):
    """The numpy dtype numeric inputs are cast to for a signature dtype (as REST metadata
    spells it, "DT_FLOAT"); None for strings and types numpy lacks (bfloat16)."""
    row = dtypes.by_name(dtype_name)
    if row is None or row.numpy is None or row.numpy.kind not in "biuf":
        return None
    return row.numpy


@dataclasses.dataclass(frozen=True)
class _Call:
    """What every call names: the model, its version or label, the signature, the deadline."""

    model: str
    version: int | None
    label: str | None
    signature_name: str | None
    timeout: float | None


class _RestTransport:
    """TF Serving's REST API over one keep-alive HTTP/1.1 connection per thread."""

    def __init__(self, rest, with_retries):
        self.url = rest.rstrip("/")
        if "://" not in self.url:
            self.url = "http://" + self.url
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"rest must be an http:// or https:// URL, got {rest!r}")
        self._http_class = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        self._netloc, self._path_prefix = parts.netloc, parts.path
        self._with_retries = with_retries
        self._local = threading.local()
        self._connections, self._connections_lock = set(), threading.Lock()

    def _connection(self):
        """This thread's keep-alive connection (a process forked from ours, or a thread whose
        connection `close` shut, opens a new one)."""
        connection = getattr(self._local, "connection", None)
        if (
            connection is None
            or self._local.pid != os.getpid()
            or connection not in self._connections
        ):
            connection = self._http_class(self._netloc)
            self._local.connection, self._local.pid = connection, os.getpid()
            with self._connections_lock:
                self._connections.add(connection)
        return connection

    def _drop_connection(self, connection):
        connection.close()
        self._local.connection = None
        with self._connections_lock:
            self._connections.discard(connection)

    def _request(self, method, path, body=None, timeout=None):
        url = self.url + path
        # bytes: a body already encoded (predict's, by `_dumps`)
        if body is None or isinstance(body, bytes):
            data = body
        else:
            data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"} if data is not None else {}

        def exchange(remaining):
            connection = self._connection()
            reused = connection.sock is not None
            connection.timeout = remaining
            if reused:
                connection.sock.settimeout(remaining)
            try:
                connection.request(method, self._path_prefix + path, body=data, headers=headers)
                response = connection.getresponse()
                return response.status, response.reason, response.read()
            except (
                http.client.RemoteDisconnected,
                ConnectionResetError,
                BrokenPipeError,
                ConnectionAbortedError,
            ):
                self._drop_connection(connection)
                if not reused:
                    raise
                # The server closed the idle connection before our request reached it: TF
                # Serving's calls have no side effects, so send it again on a new connection.
                return exchange(remaining)
            except BaseException:
                self._drop_connection(connection)  # a half-read response would desync the stream
                raise

        def attempt(remaining):
            try:
                status, reason, payload = exchange(remaining)
            except (TimeoutError, OSError, http.client.HTTPException) as error:
                if isinstance(error, TimeoutError) or "timed out" in str(error):
                    raise ServingError("DEADLINE_EXCEEDED", "Deadline Exceeded") from None
                raise ServingError("UNAVAILABLE", f"{url}: {error}") from None
            if status < 400:
                return json.loads(payload)
            text = payload.decode("utf-8", "replace")
            try:
                message = json.loads(text)["error"]
            except (ValueError, KeyError, TypeError):
                message = text or reason
            raise ServingError(_CODE_FOR_HTTP.get(status, "UNKNOWN"), message, http_status=status)

        return self._with_retries(attempt, timeout)

    @staticmethod
    def _model_path(call):
        path = "/v1/models/" + urllib.parse.quote(call.model, safe="")
        if call.version is not None:
            path += f"/versions/{int(call.version)}"
        elif call.label is not None:
            path += "/labels/" + urllib.parse.quote(call.label, safe="")
        return path

    def predict(self, call, arrays, output_dtypes, output_filter):
        if output_filter:
            raise ValueError(
                "output_filter is a gRPC feature; TF Serving's REST API has no equivalent"
            )
        body = {"inputs": {name: _json_value(a) for name, a in arrays.items()}}
        if call.signature_name:
            body["signature_name"] = call.signature_name
        path = self._model_path(call) + ":predict"
        outputs = self._request("POST", path, _dumps(body), call.timeout)["outputs"]
        if isinstance(outputs, dict) and len(output_dtypes) != 1:
            return {
                name: _from_json(value, output_dtypes.get(name)) for name, value in outputs.items()
            }
        name = next(iter(output_dtypes))
        return {name: _from_json(outputs, output_dtypes[name])}

    def examples(self, verb, call, examples, context):
        body = {"examples": [{k: _feature_json(v) for k, v in e.items()} for e in examples]}
        if context:
            body["context"] = {k: _feature_json(v) for k, v in context.items()}
        if call.signature_name:
            body["signature_name"] = call.signature_name
        path = self._model_path(call) + ":" + verb
        return self._request("POST", path, body, call.timeout)["results"]

    def metadata(self, call):
        return self._request("GET", self._model_path(call) + "/metadata", None, call.timeout)

    def status(self, call):
        doc = self._request("GET", self._model_path(call), None, call.timeout)
        return [
            {
                "version": int(s["version"]),
                "state": s["state"],
                "error_code": s["status"]["error_code"],
                "error_message": s["status"]["error_message"],
            }
            for s in doc["model_version_status"]
        ]

    def close(self):
        with self._connections_lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            connection.close()


class _GrpcTransport:
    """TF Serving's gRPC API (`PredictionService`, `ModelService`) over one channel."""

    def __init__(self, target, with_retries, channel_options=()):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        from serving.grpc_api import MAX_MESSAGE_OPTIONS

        self._with_retries = with_retries
        self._channel = grpc.insecure_channel(
            target, options=MAX_MESSAGE_OPTIONS + list(channel_options)
        )
        self._predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._model_stub = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def _call(self, method, request, timeout=None):
        import grpc

        def attempt(remaining):
            try:
                return method(request, timeout=remaining)
            except grpc.RpcError as error:
                raise ServingError(error.code().name, error.details() or "") from None

        return self._with_retries(attempt, timeout)

    @staticmethod
    def _spec(spec, call, with_signature=True):
        spec.name = call.model
        if call.version is not None:
            spec.version.value = int(call.version)
        elif call.label is not None:
            spec.version_label = call.label
        if with_signature and call.signature_name:
            spec.signature_name = call.signature_name

    def predict(self, call, arrays, output_dtypes, output_filter):
        from tensorflow_serving.apis import predict_pb2

        from serving.tensor_proto import make_ndarray, make_tensor_proto

        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, call)
        for name, array in arrays.items():
            make_tensor_proto(array, request.inputs[name])
        request.output_filter.extend(output_filter or [])
        response = self._call(self._predict_stub.Predict, request, call.timeout)
        return {name: make_ndarray(proto, name) for name, proto in response.outputs.items()}

    def examples(self, verb, call, examples, context):
        from tensorflow_serving.apis import classification_pb2, regression_pb2

        if verb == "classify":
            request = classification_pb2.ClassificationRequest()
        else:
            request = regression_pb2.RegressionRequest()
        self._spec(request.model_spec, call)
        if context:
            target = request.input.example_list_with_context
            _fill_example(target.context, context)
        else:
            target = request.input.example_list
        for example in examples:
            _fill_example(target.examples.add(), example)
        method = self._predict_stub.Classify if verb == "classify" else self._predict_stub.Regress
        result = self._call(method, request, call.timeout).result
        if verb == "classify":
            return [[[c.label, c.score] for c in row.classes] for row in result.classifications]
        return [r.value for r in result.regressions]

    def metadata(self, call):
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, call, with_signature=False)
        response = self._call(self._predict_stub.GetModelMetadata, request, call.timeout)
        sigmap = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(sigmap)
        options = dict(always_print_fields_with_no_presence=True, preserving_proto_field_name=True)
        return {
            "model_spec": json_format.MessageToDict(response.model_spec, **options),
            "metadata": {"signature_def": json_format.MessageToDict(sigmap, **options)},
        }

    def status(self, call):
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, call, with_signature=False)
        response = self._call(self._model_stub.GetModelStatus, request, call.timeout)
        state_name = get_model_status_pb2.ModelVersionStatus.State.Name
        return [
            {
                "version": s.version,
                "state": state_name(s.state),
                "error_code": CODE_NAMES.get(s.status.error_code, "UNKNOWN"),
                "error_message": s.status.error_message,
            }
            for s in response.model_version_status
        ]

    def close(self):
        if self._channel is not None:
            self._channel.close()
            self._channel = None


def _fill_example(example, features):
    for name, value in features.items():
        feature = example.features.feature[name]
        for v in _feature_json(value):
            if isinstance(v, dict):
                feature.bytes_list.value.append(base64.b64decode(v["b64"]))
            elif isinstance(v, str):
                feature.bytes_list.value.append(v.encode("utf-8"))
            elif isinstance(v, (bool, int)):
                feature.int64_list.value.append(int(v))
            else:
                feature.float_list.value.append(float(v))
