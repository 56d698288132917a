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

from serving.errors import CODE_NUMBERS, ServingError
from serving.handlers import Handlers
from serving.metrics import status_of
from serving.tensor_proto import INT32_MAX

log = logging.getLogger("serving")

MAX_MESSAGE_OPTIONS = [
    ("grpc.max_receive_message_length", INT32_MAX),
    ("grpc.max_send_message_length", INT32_MAX),
]
INTERNAL_MESSAGE = "Internal error while processing the request; see the server log"


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
                first = (
                    request.tasks[0].model_spec
                    if api == "MultiInference" and request.tasks
                    else None
                )
                name = first.name if first is not None else getattr(request, "model_spec", None)
                name = name if isinstance(name, str) else getattr(name, "name", "")
                self._handlers.metrics.record(
                    name, api, "GRPC", status_of(failure), time.perf_counter() - started
                )

    return method


def _servicers():
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def __init__(self, handlers):
            self._handlers = handlers

        Predict = _wrap(Handlers.predict, "Predict")
        Classify = _wrap(Handlers.classify, "Classify")
        Regress = _wrap(Handlers.regress, "Regress")
        MultiInference = _wrap(Handlers.multi_inference, "MultiInference")
        GetModelMetadata = _wrap(Handlers.metadata)

    class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
        def __init__(self, handlers):
            self._handlers = handlers

        GetModelStatus = _wrap(Handlers.status)

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
                response.status.error_code = CODE_NUMBERS.get(error.code, CODE_NUMBERS["UNKNOWN"])
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

    services = {
        "",
        "ModelService",
        "PredictionService",
        "tensorflow.serving.ModelService",
        "tensorflow.serving.PredictionService",
    }

    def check(request, context):
        if request.service not in services:
            context.abort(grpc.StatusCode.NOT_FOUND, "service name not registered")
        return HealthCheckResponse(status=1 if serving() else 2)

    return grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health",
        {
            "Check": grpc.unary_unary_rpc_method_handler(
                check,
                request_deserializer=HealthCheckRequest.FromString,
                response_serializer=HealthCheckResponse.SerializeToString,
            )
        },
    )


def make_grpc_server(
    manager,
    host="0.0.0.0",
    port=8500,
    workers=8,
    metrics=None,
    socket_path=None,
    channel_arguments=(),
    health_check=None,
    tensor_content=False,
):
    """A started `grpc.Server` serving `manager`; returns (server, bound TCP port or None).

    `port=None` opens no TCP port; `socket_path` also serves on that Unix socket (as
    `--grpc_socket_path`); `channel_arguments`: extra server options (see
    `parse_channel_arguments`); `health_check`: a callable "is serving" that turns on the
    standard health service; `tensor_content`: Predict outputs in `tensor_content` bytes."""
    prediction, model, prediction_grpc, model_grpc = _servicers()
    handlers = Handlers(manager, metrics, tensor_content=tensor_content)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="serving-grpc"),
        options=MAX_MESSAGE_OPTIONS + list(channel_arguments),
    )
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
