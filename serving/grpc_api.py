"""TF Serving's gRPC API: `tensorflow.serving.PredictionService` and `ModelService`.

The servicers subclass the base classes shipped in `tensorflow_serving.apis` and share the
REST server's `ModelManager`. Codes and messages follow TF Serving: unknown model or version
NOT_FOUND, unknown label INVALID_ARGUMENT, unknown signature FAILED_PRECONDITION, bad inputs
INVALID_ARGUMENT; messages are truncated at 1024 characters. Inputs are read from
`tensor_content` or the typed `*_val` fields; outputs are written to the typed fields.
"""

import logging
import time
from concurrent import futures

import grpc
import numpy as np

from serving.errors import CODE_NAMES, ServingError, invalid
from serving.metrics import Metrics, status_of

log = logging.getLogger("serving")

INT32_MAX = 2**31 - 1
MAX_MESSAGE_OPTIONS = [("grpc.max_receive_message_length", INT32_MAX),
                       ("grpc.max_send_message_length", INT32_MAX)]
CODE_NUMBERS = {name: number for number, name in CODE_NAMES.items()}
INT64_MAX = 2**63 - 1
MAX_RANK = 64  # numpy's limit (TensorFlow's is 254): deeper tensors are INVALID_ARGUMENT
# a request tensor may be given by fewer values than its shape holds (the last one repeats):
# its decoded size is capped like the biggest message gRPC takes here
MAX_TENSOR_BYTES = INT32_MAX
INTERNAL_MESSAGE = "Internal error while processing the request; see the server log"

# TF DataType enum -> (numpy dtype, typed TensorProto field, TF type name)
DTYPES = {
    1: (np.float32, "float_val", "float"), 2: (np.float64, "double_val", "double"),
    3: (np.int32, "int_val", "int32"), 4: (np.uint8, "int_val", "uint8"),
    5: (np.int16, "int_val", "int16"), 6: (np.int8, "int_val", "int8"),
    7: (object, "string_val", "string"), 9: (np.int64, "int64_val", "int64"),
    10: (np.bool_, "bool_val", "bool"), 17: (np.uint16, "int_val", "uint16"),
    19: (np.float16, "half_val", "half"), 22: (np.uint32, "uint32_val", "uint32"),
    23: (np.uint64, "uint64_val", "uint64"),
}
_NUMPY_TO_ENUM = {np.dtype(v[0]): k for k, v in DTYPES.items() if v[0] is not object}
# DT_FLOAT / DT_DOUBLE -> (TensorProto field number of float_val / double_val, wire dtype)
_PACKED_FIXED = {1: (5, "<f4"), 2: (6, "<f8")}


def _bfloat16():
    try:
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    except ImportError:  # pragma: no cover - ml_dtypes comes with TensorFlow
        return None


def dtype_enum(array):
    """The TF DataType enum of a numpy array (strings/bytes/objects are DT_STRING)."""
    if array.dtype.kind in "OSU":
        return 7
    if array.dtype == _bfloat16():
        return 14
    if array.dtype not in _NUMPY_TO_ENUM:
        raise ServingError("UNIMPLEMENTED", f"Unsupported output type: {array.dtype}")
    return _NUMPY_TO_ENUM[array.dtype]


def make_tensor_proto(array, proto=None, tensor_content=False):
    """A TensorProto with the values of `array` in its typed `*_val` field (like `AsProtoField`),
    or with `tensor_content`, in `tensor_content` bytes for non-string types (like
    `AsProtoTensorContent`, `--enable_serialization_as_tensor_content`)."""
    from tensorflow.core.framework import tensor_pb2

    proto = proto if proto is not None else tensor_pb2.TensorProto()
    array = np.asarray(array)
    enum = dtype_enum(array)
    proto.dtype = enum
    for dim in array.shape:
        proto.tensor_shape.dim.add().size = dim
    flat = array.reshape(-1)
    if tensor_content and enum != 7:
        proto.tensor_content = flat.astype(flat.dtype.newbyteorder("<"), copy=False).tobytes()
    elif enum == 7:
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode("utf-8") for v in flat)
    elif enum in (14, 19):
        proto.half_val.extend(flat.view(np.uint16).astype(np.int32).tolist())
    elif enum in _PACKED_FIXED and flat.size >= 64:
        # float_val/double_val are packed fixed-width fields: their wire bytes are the
        # little-endian values, so merging them is a memcpy instead of a Python float per value
        field_number, wire_dtype = _PACKED_FIXED[enum]
        raw = flat.astype(wire_dtype, copy=False).tobytes()
        proto.MergeFromString(_varint((field_number << 3) | 2) + _varint(len(raw)) + raw)
    else:
        getattr(proto, DTYPES[enum][1]).extend(flat.tolist())
    return proto


def _varint(value):
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def make_ndarray(proto, name=""):
    """A numpy array from a TensorProto (`tensor_content` or typed fields, like `Tensor::FromProto`)."""
    error = invalid(f"tensor parsing error: {name}")
    if proto.dtype == 14:
        numpy_dtype, field = _bfloat16(), "half_val"
    elif proto.dtype in DTYPES:
        numpy_dtype, field, _ = DTYPES[proto.dtype]
    else:
        raise error
    if proto.tensor_shape.unknown_rank or any(d.size < 0 for d in proto.tensor_shape.dim):
        raise error
    if len(proto.tensor_shape.dim) > MAX_RANK:
        raise invalid(f"tensor parsing error: {name}: {len(proto.tensor_shape.dim)} dimensions, "
                      f"this server takes at most {MAX_RANK}")
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    count = 1
    for size in shape:  # Python integers: [2**62, 4] must not wrap around
        count *= size
    if count > INT64_MAX:
        raise error  # TensorShape refuses more than 2**63 - 1 elements
    itemsize = np.dtype(numpy_dtype).itemsize if proto.dtype != 7 else 8
    if count * itemsize > MAX_TENSOR_BYTES:
        raise invalid(f"tensor parsing error: {name}: shape {list(shape)} needs {count * itemsize} bytes, "
                      f"more than the {MAX_TENSOR_BYTES} bytes a request tensor may take")
    if proto.tensor_content:
        if proto.dtype == 7:
            raise error
        if len(proto.tensor_content) != count * itemsize:
            raise error
        return np.frombuffer(proto.tensor_content, dtype=numpy_dtype).reshape(shape).copy()
    values = getattr(proto, field)
    n = len(values)
    if n > count:
        raise error
    if proto.dtype == 7:
        flat = np.empty(count, dtype=object)
        flat[:n] = list(values)
        if n < count:
            flat[n:] = values[-1] if n else b""
        return flat.reshape(shape)
    # numpy reads the repeated scalar container directly (no per-value Python objects)
    if proto.dtype in (14, 19):
        raw = np.array(values, dtype=np.int64).astype(np.uint16)
        flat = raw.view(numpy_dtype)
    else:
        flat = np.array(values, dtype=numpy_dtype)
    if n == 0:
        flat = np.zeros(count, dtype=numpy_dtype)
    elif n < count:
        flat = np.concatenate([flat, np.repeat(flat[-1:], count - n)])
    return flat.reshape(shape)


def _model_spec(spec):
    """(name, version, label) from a request's ModelSpec."""
    if not spec.name:
        raise invalid("Missing ModelSpec")
    choice = spec.WhichOneof("version_choice")
    version = spec.version.value if choice == "version" else None
    label = spec.version_label if choice == "version_label" else None
    return spec.name, version, label


def _fill_spec(target, servable, signature_key=None):
    target.name = servable.name
    target.version.value = servable.version
    if signature_key is not None:
        target.signature_name = signature_key


def _examples(input_proto):
    """Serialized tf.train.Examples from a `tensorflow.serving.Input` (context merged in)."""
    from tensorflow.core.example import example_pb2

    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in input_proto.example_list.examples]
    if kind == "example_list_with_context":
        lwc = input_proto.example_list_with_context
        out = []
        for example in lwc.examples:
            merged = example_pb2.Example()
            merged.CopyFrom(lwc.context)
            merged.MergeFrom(example)
            out.append(merged.SerializeToString())
        return out
    raise invalid("Input is empty")


def _classification_result(outputs, result):
    scores, classes = outputs.get("scores"), outputs.get("classes")
    rows = (scores if scores is not None else classes).shape[0]
    for i in range(rows):
        classification = result.classifications.add()
        width = (scores if scores is not None else classes).shape[1]
        for j in range(width):
            entry = classification.classes.add()
            if classes is not None:
                label = classes[i][j]
                entry.label = label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
            if scores is not None:
                entry.score = float(scores[i][j])


def _regression_result(outputs, result):
    for value in outputs["outputs"]:
        result.regressions.add().value = float(value)


class _Handlers:
    """The request logic, independent of gRPC plumbing; errors are ServingErrors."""

    def __init__(self, manager, metrics=None, tensor_content=False):
        self.manager = manager
        self.metrics = metrics if metrics is not None else Metrics()
        self.tensor_content = tensor_content

    def predict(self, request):
        name, version, label = _model_spec(request.model_spec)
        with self.manager.use(name, version, label) as servable:
            return self._predict(request, servable)

    def _predict(self, request, servable):
        from tensorflow_serving.apis import predict_pb2

        key, signature = servable.signature(request.model_spec.signature_name, grpc_message=True)
        sent, expected = set(request.inputs), set(signature.inputs)
        if sent != expected:
            raise invalid(
                f"input size does not match signature: {len(sent)}!={len(expected)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
                f"Missing but required: {{{','.join(sorted(expected - sent))}}}.")
        feeds = {}
        for index, alias in enumerate(sorted(signature.inputs)):
            tensor = request.inputs[alias]
            want = signature.inputs[alias].dtype
            if tensor.dtype != want:
                got_name = DTYPES.get(tensor.dtype, (None, None, str(tensor.dtype)))[2]
                want_name = DTYPES.get(want, (None, None, str(want)))[2]
                raise invalid(f"Expects arg[{index}] to be {want_name} but {got_name} is provided")
            feeds[alias] = make_ndarray(tensor, alias)
        output_names = list(request.output_filter) or None
        if output_names:
            for alias in output_names:
                if alias not in signature.outputs:
                    raise invalid(f"output tensor alias not found in signature: {alias} Outputs expected "
                                  f"to be in the set {{{','.join(sorted(signature.outputs))}}}.")
            if len(set(output_names)) != len(output_names):
                raise invalid("duplicate output tensor name in output_filter")
        outputs = servable.run(signature, feeds, output_names, key=key)
        response = predict_pb2.PredictResponse()
        _fill_spec(response.model_spec, servable, key)
        for alias, value in outputs.items():
            make_tensor_proto(value, response.outputs[alias], tensor_content=self.tensor_content)
        return response

    def _examples_call(self, request, verb):
        name, version, label = _model_spec(request.model_spec)
        with self.manager.use(name, version, label) as servable:
            key, signature = servable.signature(request.model_spec.signature_name, grpc_message=True)
            outputs = servable.run_examples(key, signature, verb, _examples(request.input))
        return servable, key, outputs

    def classify(self, request):
        from tensorflow_serving.apis import classification_pb2

        servable, key, outputs = self._examples_call(request, "classify")
        response = classification_pb2.ClassificationResponse()
        _fill_spec(response.model_spec, servable, key)
        _classification_result(outputs, response.result)
        return response

    def regress(self, request):
        from tensorflow_serving.apis import regression_pb2

        servable, key, outputs = self._examples_call(request, "regress")
        response = regression_pb2.RegressionResponse()
        _fill_spec(response.model_spec, servable, key)
        _regression_result(outputs, response.result)
        return response

    def multi_inference(self, request):
        if not request.tasks:
            raise invalid("Tasks is empty")
        first = request.tasks[0].model_spec
        keys = set()
        for task in request.tasks:
            if task.model_spec.name != first.name or task.model_spec.WhichOneof("version_choice") != \
                    first.WhichOneof("version_choice") or task.model_spec.version != first.version or \
                    task.model_spec.version_label != first.version_label:
                raise invalid("All ModelSpecs in a MultiInferenceRequest must access the same model name "
                              "and version")
            if task.model_spec.signature_name in keys:
                raise invalid(f"Duplicate evaluation of signature: {task.model_spec.signature_name}")
            keys.add(task.model_spec.signature_name)
        name, version, label = _model_spec(first)
        with self.manager.use(name, version, label) as servable:
            return self._multi_inference(request, servable)

    def _multi_inference(self, request, servable):
        from tensorflow_serving.apis import inference_pb2

        serialized = _examples(request.input)
        response = inference_pb2.MultiInferenceResponse()
        for task in request.tasks:
            key, signature = servable.signature(task.model_spec.signature_name, grpc_message=True)
            verbs = {"tensorflow/serving/classify": "classify", "tensorflow/serving/regress": "regress"}
            if task.method_name not in verbs:
                raise invalid(f"Unsupported signature method_name: {task.method_name}")
            verb = verbs[task.method_name]
            outputs = servable.run_examples(key, signature, verb, serialized)
            result = response.results.add()
            _fill_spec(result.model_spec, servable, key)
            if verb == "classify":
                _classification_result(outputs, result.classification_result)
            else:
                _regression_result(outputs, result.regression_result)
        return response

    def metadata(self, request):
        from tensorflow_serving.apis import get_model_metadata_pb2

        name, version, label = _model_spec(request.model_spec)
        if not request.metadata_field:
            raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise invalid(f"Metadata field {field} is not supported")
        servable = self.manager.resolve(name, version, label)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        _fill_spec(response.model_spec, servable)
        sigmap = get_model_metadata_pb2.SignatureDefMap()
        for key, sig in servable.signatures.items():
            sigmap.signature_def[key].CopyFrom(sig)
        response.metadata["signature_def"].Pack(sigmap)
        return response

    def status(self, request):
        from tensorflow_serving.apis import get_model_status_pb2

        name, version, label = _model_spec(request.model_spec)
        response = get_model_status_pb2.GetModelStatusResponse()
        for v, state, code, message in self.manager.status(name, version, label):
            entry = response.model_version_status.add()
            entry.version = v
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(state)
            entry.status.error_code = CODE_NUMBERS.get(code, 2)
            entry.status.error_message = message
        return response

    def reload(self, request):
        from tensorflow_serving.apis import model_management_pb2

        response = model_management_pb2.ReloadConfigResponse()
        self.manager.reload(request.config)
        response.status.error_code = 0
        return response


def _abort(context, error):
    code = getattr(grpc.StatusCode, error.code, grpc.StatusCode.UNKNOWN)
    context.abort(code, error.message[:1024])


def _wrap(handler, api=None):
    """A servicer method; with `api` ("Predict", ...) it counts in the request metrics."""

    def method(self, request, context):
        started, failure = time.perf_counter(), None
        try:
            return handler(self._handlers, request)
        except ServingError as error:
            failure = error
            _abort(context, error)
        except Exception:  # never crash on bad input, never show Python internals to a client
            log.exception("gRPC request failed")
            failure = ServingError("INTERNAL", INTERNAL_MESSAGE)
            _abort(context, failure)
        finally:
            if api is not None:
                first = request.tasks[0].model_spec if api == "MultiInference" and request.tasks else None
                name = first.name if first is not None else getattr(request, "model_spec", None)
                name = name if isinstance(name, str) else getattr(name, "name", "")
                self._handlers.metrics.record(name, api, "GRPC", status_of(failure), time.perf_counter() - started)

    return method


def _servicers():
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def __init__(self, handlers):
            self._handlers = handlers

        Predict = _wrap(_Handlers.predict, "Predict")
        Classify = _wrap(_Handlers.classify, "Classify")
        Regress = _wrap(_Handlers.regress, "Regress")
        MultiInference = _wrap(_Handlers.multi_inference, "MultiInference")
        GetModelMetadata = _wrap(_Handlers.metadata)

    class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
        def __init__(self, handlers):
            self._handlers = handlers

        GetModelStatus = _wrap(_Handlers.status)

        def HandleReloadConfigRequest(self, request, context):
            from tensorflow_serving.apis import model_management_pb2

            try:
                try:
                    return self._handlers.reload(request)
                except ServingError:
                    raise
                except Exception:  # never show Python internals to a client
                    log.exception("HandleReloadConfigRequest failed")
                    raise ServingError("INTERNAL", INTERNAL_MESSAGE) from None
            except ServingError as error:
                response = model_management_pb2.ReloadConfigResponse()
                response.status.error_code = CODE_NUMBERS.get(error.code, 2)
                response.status.error_message = error.message[:1024]
                context.set_code(getattr(grpc.StatusCode, error.code, grpc.StatusCode.UNKNOWN))
                context.set_details(error.message[:1024])
                return response

    return PredictionServicer, ModelServicer, prediction_service_pb2_grpc, model_service_pb2_grpc


def parse_channel_arguments(text):
    """`--grpc_channel_arguments` ("k=v,k2=v2") as gRPC server options; values that read as
    int32 are passed as integers, like tensorflow_model_server does. ValueError if malformed."""
    options = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--grpc_channel_arguments: expected key=value, got {item!r}")
        try:
            number = int(value)
            options.append((key, number if -(2**31) <= number < 2**31 else value))
        except ValueError:
            options.append((key, value))
    return options


def _health_handler(serving):
    """The standard `grpc.health.v1.Health` service (Check): SERVING for the whole server and
    for "ModelService" / "PredictionService" (the names TF Serving registers) while `serving()`."""
    from serving.config_protos import HealthCheckRequest, HealthCheckResponse

    services = {"", "ModelService", "PredictionService",
                "tensorflow.serving.ModelService", "tensorflow.serving.PredictionService"}

    def check(request, context):
        if request.service not in services:
            context.abort(grpc.StatusCode.NOT_FOUND, "service name not registered")
        return HealthCheckResponse(status=1 if serving() else 2)

    return grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": grpc.unary_unary_rpc_method_handler(check, request_deserializer=HealthCheckRequest.FromString,
                                                     response_serializer=HealthCheckResponse.SerializeToString)})


def make_grpc_server(manager, host="0.0.0.0", port=8500, workers=8, metrics=None, socket_path=None,
                     channel_arguments=(), health_check=None, tensor_content=False):
    """A started `grpc.Server` serving `manager`; returns (server, bound TCP port or None).

    `port=None` opens no TCP port; `socket_path` also serves on that Unix socket (as
    `--grpc_socket_path`); `channel_arguments`: extra server options (see
    `parse_channel_arguments`); `health_check`: a callable "is serving" that turns on the
    standard health service; `tensor_content`: Predict outputs in `tensor_content` bytes."""
    prediction, model, prediction_grpc, model_grpc = _servicers()
    handlers = _Handlers(manager, metrics, tensor_content=tensor_content)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="serving-grpc"),
                         options=MAX_MESSAGE_OPTIONS + list(channel_arguments))
    prediction_grpc.add_PredictionServiceServicer_to_server(prediction(handlers), server)
    model_grpc.add_ModelServiceServicer_to_server(model(handlers), server)
    if health_check is not None:
        server.add_generic_rpc_handlers((_health_handler(health_check),))
    bound = None
    if port is not None:
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError:
            bound = 0
        if not bound:
            raise OSError(f"could not bind the gRPC port {address}")
    if socket_path:
        try:
            if not server.add_insecure_port(f"unix:{socket_path}"):
                raise RuntimeError
        except RuntimeError:
            raise OSError(f"could not listen on the gRPC socket {socket_path}") from None
    server.start()
    return server, bound
