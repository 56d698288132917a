"""SavedModel warmup records, written at export and replayed at load, as TF Serving does them.

A version folder may hold `assets.extra/tf_serving_warmup_requests`: a TFRecord file of
`tensorflow.serving.PredictionLog` protos (at most 1000). When a version loads, the server
replays every record (predict, classify, regress and multi-inference logs) through the
servable before the version becomes AVAILABLE, so lazy initialisation (graph optimisation,
kernel selection, XLA compilation) happens at load time, not on the first user request. A
record that cannot be read or fails makes the load fail: the version is reported in status
with the error and never served. The wall time of each replay goes into
`:tensorflow:serving:model_warmup_latency{model_path,status}`.
"""

import logging
import os
import time

import numpy as np

from serving.errors import ServingError, from_tf_error

log = logging.getLogger("serving")

ASSETS_EXTRA = "assets.extra"
REQUESTS_FILE = "tf_serving_warmup_requests"
MAX_RECORDS = 1000  # TF Serving's WarmupConsts::kMaxNumRecords


def warmup_path(version_dir):
    return os.path.join(os.fspath(version_dir), ASSETS_EXTRA, REQUESTS_FILE)


# -- export -----------------------------------------------------------------------------------


def _is_prediction_log(value):
    return type(value).__name__ == "PredictionLog" and hasattr(value, "SerializeToString")


def _is_encoded_images(value):
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(isinstance(v, (bytes, bytearray)) for v in value)
    )


def _tensor_proto(value, spec, where, tf):
    """`value` as a TensorProto of the signature input `spec` (dtype converted, shape checked)."""
    if spec.dtype == tf.string:
        items = [value] if isinstance(value, (bytes, bytearray, str)) else value
        array = np.empty(
            np.shape(items) if not isinstance(items, np.ndarray) else items.shape, dtype=object
        )
        # an object array keeps trailing NUL bytes that numpy's fixed-width 'S' dtype would drop
        array.reshape(-1)[:] = [
            bytes(v) if isinstance(v, bytearray) else v
            for v in np.asarray(items, dtype=object).reshape(-1)
        ]
    else:
        try:
            array = np.asarray(value, dtype=spec.dtype.as_numpy_dtype)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: cannot convert to {spec.dtype.name}: {error}") from None
    if not spec.shape.is_compatible_with(array.shape):
        raise ValueError(
            f"{where}: shape {array.shape} does not fit the signature input shape "
            f"{tuple(spec.shape.as_list())}"
        )
    return tf.make_tensor_proto(array, dtype=spec.dtype)


def build_warmup_logs(requests, model_name, signatures, image_signature_name=None):
    """Serialized `PredictionLog`s (predict logs) for `export(..., warmup_requests=...)`.

    Args:
        requests: a list of warmup requests (see `serving.export`).
        model_name: written to each request's `model_spec.name`.
        signatures: {signature name: {input name: tf.TensorSpec}} of the exported signatures.
        image_signature_name: the encoded-image signature's name, if one is exported.

    Returns:
        A list of serialized PredictionLog protos.

    Raises:
        ValueError: more than 1000 requests, or a request that does not fit its signature.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    if isinstance(requests, (dict, np.ndarray)) or not isinstance(requests, (list, tuple)):
        raise ValueError(
            "warmup_requests must be a list of requests (one model call each), "
            f"got {type(requests).__name__}"
        )
    if len(requests) > MAX_RECORDS:
        raise ValueError(
            f"warmup_requests has {len(requests)} requests; TF Serving reads at most "
            f"{MAX_RECORDS} warmup records"
        )
    logs = []
    for index, request in enumerate(requests):
        where = f"warmup_requests[{index}]"
        if _is_prediction_log(request):
            logs.append(request.SerializeToString())
            continue
        if isinstance(request, dict) and "signature_name" in request:
            unknown = set(request) - {"signature_name", "inputs"}
            if unknown or "inputs" not in request:
                raise ValueError(
                    f"{where}: a request with 'signature_name' takes exactly the keys "
                    f"'signature_name' and 'inputs', got {sorted(request)}"
                )
            signature_name, inputs = request["signature_name"], request["inputs"]
        elif _is_encoded_images(request):
            if image_signature_name is None:
                raise ValueError(
                    f"{where}: encoded images need the image signature (image_signature=True)"
                )
            signature_name, inputs = image_signature_name, {"images": list(request)}
        else:
            signature_name, inputs = "serving_default", request
        if signature_name not in signatures:
            raise ValueError(
                f"{where}: no signature {signature_name!r} in the export; "
                f"exported: {sorted(signatures)}"
            )
        specs = signatures[signature_name]
        if not isinstance(inputs, dict):
            if len(specs) != 1:
                raise ValueError(
                    f"{where}: signature {signature_name!r} has inputs {sorted(specs)}: "
                    "give a dict {input name: array}"
                )
            inputs = {next(iter(specs)): inputs}
        if set(inputs) != set(specs):
            raise ValueError(
                f"{where}: signature {signature_name!r} takes inputs {sorted(specs)}, "
                f"got {sorted(inputs)}"
            )
        predict = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name)
        )
        for name in sorted(inputs):
            predict.inputs[name].CopyFrom(
                _tensor_proto(inputs[name], specs[name], f"{where}[{name!r}]", tf)
            )
        record = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=predict)
        )
        logs.append(record.SerializeToString())
    return logs


def write_warmup_file(version_dir, logs):
    """Write serialized PredictionLogs as `assets.extra/tf_serving_warmup_requests` (TFRecord)."""
    import tensorflow as tf

    path = warmup_path(version_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for record in logs:
            writer.write(record)
    return path


# -- load -------------------------------------------------------------------------------------


def _records(path):
    """Yield the raw records of a TFRecord file; a corrupt file raises DATA_LOSS."""
    import tensorflow as tf

    try:
        for record in tf.data.TFRecordDataset(path):
            yield bytes(record.numpy())
    except tf.errors.OpError as error:
        error = from_tf_error(error)
        if error.code == "DATA_LOSS":
            raise ServingError(
                "DATA_LOSS",
                f"{error.message}. Please verify your warmup data is in TFRecord format.",
            ) from None
        raise error from None


def replay(servable, record):
    """Run one `PredictionLog` through `servable`, as the matching API call would."""
    from serving.handlers import Handlers, examples

    kind = record.WhichOneof("log_type")
    if kind == "predict_log":
        Handlers(None).predict_on(servable, record.predict_log.request)
    elif kind in ("classify_log", "regress_log"):
        request = getattr(record, kind).request
        key, signature = servable.signature(request.model_spec.signature_name, grpc_message=True)
        servable.run_examples(key, signature, kind[: -len("_log")], examples(request.input))
    elif kind == "multi_inference_log":
        request = record.multi_inference_log.request
        if not request.tasks:
            raise ServingError("INVALID_ARGUMENT", "Tasks is empty")
        Handlers(None).multi_inference_on(servable, request)
    elif kind is not None:  # session_run_log and log types this server does not run
        number = record.DESCRIPTOR.fields_by_name[kind].number
        raise ServingError("UNIMPLEMENTED", f"Unsupported log_type for warmup: {number}")


def run_saved_model_warmup(servable):
    """Replay the version's warmup records through `servable`; returns how many were read.

    Nothing happens without a warmup file. Raises a ServingError (the load then fails) for a
    file that is not a TFRecord file (DATA_LOSS), a record that is not a PredictionLog or more
    than 1000 records (INVALID_ARGUMENT), or the error of a record that fails."""
    from tensorflow_serving.apis import prediction_log_pb2

    from serving import metrics

    path = warmup_path(servable.path)
    if not os.path.exists(path):
        log.info("No warmup data file found at %s", path)
        return 0
    log.info("Reading warmup data for model at %s", path)
    started, count, failure = time.monotonic(), 0, None
    try:
        for raw in _records(path):
            record = prediction_log_pb2.PredictionLog()
            try:
                record.ParseFromString(raw)
            except Exception:  # protobuf's DecodeError
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"Failed to parse warmup record: {raw.decode('utf-8', 'replace')} from {path}",
                ) from None
            replay(servable, record)
            count += 1
            if count > MAX_RECORDS:
                raise ServingError(
                    "INVALID_ARGUMENT",
                    f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}",
                )
    except ServingError as error:
        failure = error
        raise
    except Exception as error:  # anything else a record raised: the load fails with it
        failure = ServingError("UNKNOWN", f"{type(error).__name__}: {error}")
        raise failure from error
    finally:
        elapsed = time.monotonic() - started
        status = "OK" if failure is None else f"{failure.code}: {failure.message}"
        metrics.record_warmup(servable.path, status, elapsed)
    log.info(
        "Finished warmup of the model at %s: %d warmup records in %d microseconds",
        path,
        count,
        int(elapsed * 1e6),
    )
    return count
