"""The request logic of TF Serving's APIs, shared by the gRPC and the REST server.

Each handler takes the API's request proto (or, for the REST routes, the model name, version
and label read from the URL) and returns its response proto, built once for both protocols;
errors are `ServingError`s. The gRPC servicers pass the protos through; the REST API writes
the status, metadata, classification and regression protos as TF Serving's JSON (its predict
reads and writes JSON tensors directly, without a proto in between).
"""

from serving.dtypes import tf_name_of
from serving.errors import CODE_NUMBERS, invalid
from serving.metrics import Metrics
from serving.models import METHOD_NAMES
from serving.tensor_proto import make_ndarray, make_tensor_proto

_VERBS = {method_name: verb for verb, method_name in METHOD_NAMES.items()}


def model_spec(spec):
    """(name, version, label) from a request's ModelSpec."""
    if not spec.name:
        raise invalid("Missing ModelSpec")
    choice = spec.WhichOneof("version_choice")
    version = spec.version.value if choice == "version" else None
    label = spec.version_label if choice == "version_label" else None
    return spec.name, version, label


def fill_spec(target, servable, signature_key=None):
    """Name a response's ModelSpec after the servable that answered (and its signature)."""
    target.name = servable.name
    target.version.value = servable.version
    if signature_key is not None:
        target.signature_name = signature_key


def examples(input_proto):
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


def classification_result(outputs, result):
    """Fill a ClassificationResult from a classify signature's [examples, classes] `classes`
    and / or `scores` (as `Servable.run_examples` returns them)."""
    scores, classes = outputs.get("scores"), outputs.get("classes")
    rows = scores if scores is not None else classes
    for i in range(rows.shape[0]):
        classification = result.classifications.add()
        for j in range(rows.shape[1]):
            entry = classification.classes.add()
            if classes is not None:
                label = classes[i][j]
                entry.label = (
                    label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
                )
            if scores is not None:
                entry.score = float(scores[i][j])
    return result


def regression_result(outputs, result):
    """Fill a RegressionResult from a regress signature's `outputs`, one value per example."""
    for value in outputs["outputs"]:
        result.regressions.add().value = float(value)
    return result


def example_response(verb, servable, key, outputs):
    """The ClassificationResponse or RegressionResponse of a classify or regress call."""
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    if verb == "classify":
        response = classification_pb2.ClassificationResponse()
        classification_result(outputs, response.result)
    else:
        response = regression_pb2.RegressionResponse()
        regression_result(outputs, response.result)
    fill_spec(response.model_spec, servable, key)
    return response


class Handlers:
    """The API's calls over a `ModelManager` (None for the servable-level calls warmup makes).

    Args:
        manager: the `serving.models.ModelManager` that resolves requests.
        metrics: the `serving.metrics.Metrics` the servers record requests in.
        tensor_content: write Predict outputs in `tensor_content` bytes.
    """

    def __init__(self, manager, metrics=None, tensor_content=False):
        self.manager = manager
        self.metrics = metrics if metrics is not None else Metrics()
        self.tensor_content = tensor_content

    def predict(self, request):
        name, version, label = model_spec(request.model_spec)
        with self.manager.use(name, version, label) as servable:
            return self.predict_on(servable, request)

    def predict_on(self, servable, request):
        """Predict on a resolved servable."""
        from tensorflow_serving.apis import predict_pb2

        key, signature = servable.signature(request.model_spec.signature_name, grpc_message=True)
        sent, expected = set(request.inputs), set(signature.inputs)
        if sent != expected:
            raise invalid(
                f"input size does not match signature: {len(sent)}!={len(expected)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
                f"Missing but required: {{{','.join(sorted(expected - sent))}}}."
            )
        feeds = {}
        for index, alias in enumerate(sorted(signature.inputs)):
            tensor = request.inputs[alias]
            want = signature.inputs[alias].dtype
            if tensor.dtype != want:
                raise invalid(
                    f"Expects arg[{index}] to be {tf_name_of(want)} but "
                    f"{tf_name_of(tensor.dtype)} is provided"
                )
            feeds[alias] = make_ndarray(tensor, alias)
        output_names = list(request.output_filter) or None
        if output_names:
            for alias in output_names:
                if alias not in signature.outputs:
                    raise invalid(
                        f"output tensor alias not found in signature: {alias} Outputs expected "
                        f"to be in the set {{{','.join(sorted(signature.outputs))}}}."
                    )
            if len(set(output_names)) != len(output_names):
                raise invalid("duplicate output tensor name in output_filter")
        outputs = servable.run(signature, feeds, output_names, key=key)
        response = predict_pb2.PredictResponse()
        fill_spec(response.model_spec, servable, key)
        for alias, value in outputs.items():
            make_tensor_proto(value, response.outputs[alias], tensor_content=self.tensor_content)
        return response

    def _examples_call(self, request, verb):
        name, version, label = model_spec(request.model_spec)
        with self.manager.use(name, version, label) as servable:
            key, signature = servable.signature(
                request.model_spec.signature_name, grpc_message=True
            )
            outputs = servable.run_examples(key, signature, verb, examples(request.input))
        return example_response(verb, servable, key, outputs)

    def classify(self, request):
        return self._examples_call(request, "classify")

    def regress(self, request):
        return self._examples_call(request, "regress")

    def multi_inference(self, request):
        if not request.tasks:
            raise invalid("Tasks is empty")
        first = request.tasks[0].model_spec
        keys = set()
        for task in request.tasks:
            spec = task.model_spec
            if (
                spec.name != first.name
                or spec.WhichOneof("version_choice") != first.WhichOneof("version_choice")
                or spec.version != first.version
                or spec.version_label != first.version_label
            ):
                raise invalid(
                    "All ModelSpecs in a MultiInferenceRequest must access the same model name "
                    "and version"
                )
            if spec.signature_name in keys:
                raise invalid(f"Duplicate evaluation of signature: {spec.signature_name}")
            keys.add(spec.signature_name)
        name, version, label = model_spec(first)
        with self.manager.use(name, version, label) as servable:
            return self.multi_inference_on(servable, request)

    def multi_inference_on(self, servable, request):
        """MultiInference on a resolved servable."""
        from tensorflow_serving.apis import inference_pb2

        serialized = examples(request.input)
        response = inference_pb2.MultiInferenceResponse()
        for task in request.tasks:
            key, signature = servable.signature(task.model_spec.signature_name, grpc_message=True)
            if task.method_name not in _VERBS:
                raise invalid(f"Unsupported signature method_name: {task.method_name}")
            verb = _VERBS[task.method_name]
            outputs = servable.run_examples(key, signature, verb, serialized)
            result = response.results.add()
            fill_spec(result.model_spec, servable, key)
            if verb == "classify":
                classification_result(outputs, result.classification_result)
            else:
                regression_result(outputs, result.regression_result)
        return response

    def metadata(self, request):
        name, version, label = model_spec(request.model_spec)
        if not request.metadata_field:
            raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise invalid(f"Metadata field {field} is not supported")
        return self.model_metadata(name, version, label)

    def model_metadata(self, name, version=None, label=None):
        """The GetModelMetadataResponse of a model (its signature_def metadata)."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        servable = self.manager.resolve(name, version, label)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        fill_spec(response.model_spec, servable)
        sigmap = get_model_metadata_pb2.SignatureDefMap()
        for key, sig in servable.signatures.items():
            sigmap.signature_def[key].CopyFrom(sig)
        response.metadata["signature_def"].Pack(sigmap)
        return response

    def status(self, request):
        return self.model_status(*model_spec(request.model_spec))

    def model_status(self, name, version=None, label=None):
        """The GetModelStatusResponse of a model (all its versions, or the one asked for)."""
        from tensorflow_serving.apis import get_model_status_pb2

        response = get_model_status_pb2.GetModelStatusResponse()
        for v, state, code, message in self.manager.status(name, version, label):
            entry = response.model_version_status.add()
            entry.version = v
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(state)
            entry.status.error_code = CODE_NUMBERS.get(code, CODE_NUMBERS["UNKNOWN"])
            entry.status.error_message = message
        return response

    def reload(self, request):
        from tensorflow_serving.apis import model_management_pb2

        response = model_management_pb2.ReloadConfigResponse()
        self.manager.reload(request.config)
        response.status.error_code = CODE_NUMBERS["OK"]
        return response
