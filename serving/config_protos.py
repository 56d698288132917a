"""TF Serving's `BatchingParameters` and `MonitoringConfig` messages (and gRPC's health-check
messages), built at run time.

The `tensorflow-serving-api` wheel does not ship them, so they are defined here from their
field lists (package `tensorflow.serving`, proto3, wrapper types from google.protobuf) with
protobuf's own descriptor tools: `text_format.Parse` then reads `--batching_parameters_file`
and `--monitoring_config_file` exactly as the real server does (unknown fields and bad values
are parse errors).
"""

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)

_FILE = "keras_attention_zoo/serving/tfs_batching_monitoring.proto"
_T = descriptor_pb2.FieldDescriptorProto


def _field(message, name, number, kind, type_name=None, repeated=False):
    field = message.field.add()
    field.name, field.number, field.type = name, number, kind
    field.label = _T.LABEL_REPEATED if repeated else _T.LABEL_OPTIONAL
    field.json_name = "".join(
        w if i == 0 else w.capitalize() for i, w in enumerate(name.split("_"))
    )
    if type_name:
        field.type_name = type_name


def _file_proto():
    proto = descriptor_pb2.FileDescriptorProto(
        name=_FILE, package="tensorflow.serving", syntax="proto3"
    )
    proto.dependency.append(wrappers_pb2.DESCRIPTOR.name)
    msg = _T.TYPE_MESSAGE
    batching = proto.message_type.add(name="BatchingParameters")
    _field(batching, "max_batch_size", 1, msg, ".google.protobuf.Int64Value")
    _field(batching, "batch_timeout_micros", 2, msg, ".google.protobuf.Int64Value")
    _field(batching, "max_enqueued_batches", 3, msg, ".google.protobuf.Int64Value")
    _field(batching, "num_batch_threads", 4, msg, ".google.protobuf.Int64Value")
    _field(batching, "thread_pool_name", 5, msg, ".google.protobuf.StringValue")
    _field(batching, "allowed_batch_sizes", 6, _T.TYPE_INT64, repeated=True)
    _field(batching, "pad_variable_length_inputs", 7, _T.TYPE_BOOL)
    _field(batching, "enable_large_batch_splitting", 8, msg, ".google.protobuf.BoolValue")
    _field(batching, "max_execution_batch_size", 9, msg, ".google.protobuf.Int64Value")
    prometheus = proto.message_type.add(name="PrometheusConfig")
    _field(prometheus, "enable", 1, _T.TYPE_BOOL)
    _field(prometheus, "path", 2, _T.TYPE_STRING)
    monitoring = proto.message_type.add(name="MonitoringConfig")
    _field(monitoring, "prometheus_config", 1, msg, ".tensorflow.serving.PrometheusConfig")
    return proto


def _classes():
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_FILE)
    except KeyError:
        pool.Add(_file_proto())
    return _message_classes(
        pool, "tensorflow.serving.BatchingParameters", "tensorflow.serving.MonitoringConfig"
    )


def _message_classes(pool, *full_names):
    return tuple(
        message_factory.GetMessageClass(pool.FindMessageTypeByName(name)) for name in full_names
    )


BatchingParameters, MonitoringConfig = _classes()


def _health_classes():
    """`grpc.health.v1.HealthCheckRequest` / `HealthCheckResponse` (the standard gRPC health
    service, `--enable_grpc_healthcheck_service`), in a private pool so that they never clash
    with the `grpcio-health-checking` package's."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="keras_attention_zoo/serving/grpc_health.proto",
        package="grpc.health.v1",
        syntax="proto3",
    )
    request = proto.message_type.add(name="HealthCheckRequest")
    _field(request, "service", 1, _T.TYPE_STRING)
    status = proto.enum_type.add(name="ServingStatus")
    for number, name in enumerate(["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"]):
        status.value.add(name=name, number=number)
    response = proto.message_type.add(name="HealthCheckResponse")
    _field(response, "status", 1, _T.TYPE_ENUM, ".grpc.health.v1.ServingStatus")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return _message_classes(
        pool, "grpc.health.v1.HealthCheckRequest", "grpc.health.v1.HealthCheckResponse"
    )


HealthCheckRequest, HealthCheckResponse = _health_classes()


def _read(path, message, kind):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as error:
        raise ValueError(f"{path}: not a valid {kind} text proto: {error}") from None


def read_batching_parameters(path):
    """A `BatchingParameters` parsed from a text-format file; ValueError if it is not one."""
    return _read(path, BatchingParameters(), "BatchingParameters")


def read_monitoring_config(path):
    """A `MonitoringConfig` parsed from a text-format file; ValueError if it is not one."""
    return _read(path, MonitoringConfig(), "MonitoringConfig")
