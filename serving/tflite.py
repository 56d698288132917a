"""LiteRT (TensorFlow Lite) servables: `--prefer_tflite_model`, as tensorflow_model_server has it.

With the flag, a version folder that holds `model.tflite` (beside `saved_model.pb` or instead
of it) is served through LiteRT's interpreter (`ai_edge_litert`) rather than TensorFlow,
as TF Serving's SavedModelBundleFactory does; without it, only the SavedModel is read.

Signatures come from the file's own signature table (what TFLiteConverter writes for each
signature of the SavedModel it converted: `serving_default` with the SavedModel's input and
output keys), so a `.tflite` converted from an exported SavedModel answers Predict requests
with the same keys, and its model metadata lists the same signature: method
`tensorflow/serving/predict`, the tensors' LiteRT names, dtypes and shapes (-1 for a dynamic
dimension). A file without a signature table gets a generated `serving_default` keyed by
tensor name, as TF Serving generates one. TF Serving reads the older signature metadata
format and falls back to the generated signature for files that only have the table.

One interpreter per signature, used under a lock (the interpreter is not thread-safe); the
input tensors are resized to each request's batch.
"""

import threading

import numpy as np

from serving.errors import ServingError, invalid
from serving.models import Servable

TFLITE_FILENAME = "model.tflite"  # TF Serving's kTfLiteModelFilename
PREDICT_METHOD = "tensorflow/serving/predict"


def tflite_model_found(path):
    import os

    return os.path.isfile(os.path.join(path, TFLITE_FILENAME))


def _tensor_info(info, detail):
    import tensorflow as tf

    info.name = detail["name"]
    info.dtype = tf.as_dtype(detail["dtype"]).as_datatype_enum
    for size in detail.get("shape_signature", detail["shape"]):
        info.tensor_shape.dim.add().size = int(size)


class TfLiteServable(Servable):
    """One `model.tflite` version, run by LiteRT's interpreter; the same interface as a
    SavedModel `Servable` (signatures, run, run_examples, warmup)."""

    def __init__(self, name, version, path, batcher=None, tags=("serve",), check_method_name=False):
        import os

        from ai_edge_litert.interpreter import Interpreter
        from tensorflow.core.protobuf import meta_graph_pb2

        self.name, self.version, self.path = name, version, path
        self.batcher = batcher
        self.check_method_name = check_method_name
        self.warmup_records = 0
        self._leases = 0
        self._drained = threading.Condition()
        self._session = self._tf2 = None
        self._lock = threading.Lock()
        model_path = os.path.join(path, TFLITE_FILENAME)
        try:
            self._interpreter = Interpreter(model_path=model_path)
        except (ValueError, RuntimeError) as error:
            raise ServingError(
                "INVALID_ARGUMENT", f"Cannot build Interpreter from {model_path}: {error}"
            ) from None
        self.meta_graph = meta_graph_pb2.MetaGraphDef()
        self.meta_graph.meta_info_def.tags.extend(tags)
        self._runners = {}  # signature key -> (runner, {input key: tensor detail})
        table = self._interpreter.get_signature_list()
        if table:
            for key in table:
                runner = self._interpreter.get_signature_runner(key)
                signature = self.meta_graph.signature_def[key]
                signature.method_name = PREDICT_METHOD
                inputs = runner.get_input_details()
                for input_key, detail in inputs.items():
                    _tensor_info(signature.inputs[input_key], detail)
                for output_key, detail in runner.get_output_details().items():
                    _tensor_info(signature.outputs[output_key], detail)
                self._runners[key] = (runner, inputs)
        else:
            self._interpreter.allocate_tensors()
            signature = self.meta_graph.signature_def["serving_default"]
            signature.method_name = PREDICT_METHOD
            for detail in self._interpreter.get_input_details():
                _tensor_info(signature.inputs[detail["name"].split(":")[0]], detail)
            for detail in self._interpreter.get_output_details():
                _tensor_info(signature.outputs[detail["name"].split(":")[0]], detail)
        self.signatures = self.meta_graph.signature_def
        self._callables = {}

    def run_direct(self, signature, feeds, output_names=None, key=None):
        key = key or "serving_default"
        outputs = sorted(output_names or signature.outputs)
        with self._lock:
            try:
                if key in self._runners:
                    runner, details = self._runners[key]
                    values = runner(
                        **{
                            name: np.asarray(value, dtype=details[name]["dtype"])
                            for name, value in feeds.items()
                        }
                    )
                else:
                    values = self._invoke_tensors(signature, feeds)
            except (ValueError, RuntimeError, TypeError) as error:
                raise invalid(str(error).split("\n")[0][:1024]) from None
            return {name: np.array(values[name]) for name in outputs}

    def _invoke_tensors(self, signature, feeds):
        """A file without a signature table: feed and fetch the tensors by name."""
        interpreter = self._interpreter
        by_name = {d["name"].split(":")[0]: d for d in interpreter.get_input_details()}
        arrays = {}
        for name, value in feeds.items():
            detail = by_name[name]
            arrays[name] = np.asarray(value, dtype=detail["dtype"])
            if tuple(detail["shape"]) != arrays[name].shape:
                interpreter.resize_tensor_input(detail["index"], arrays[name].shape)
        interpreter.allocate_tensors()
        for name, value in arrays.items():
            interpreter.set_tensor(by_name[name]["index"], value)
        interpreter.invoke()
        return {
            d["name"].split(":")[0]: interpreter.get_tensor(d["index"])
            for d in interpreter.get_output_details()
        }

    def close(self, drain_timeout=0.0):
        super().close(drain_timeout)
        self._runners = {}
        self._interpreter = None
