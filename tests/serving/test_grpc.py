"""The gRPC API with TF Serving's own stubs, against its test models and known answers."""

import grpc
import numpy as np
import pytest

from tests.serving.conftest import tfs_testdata

TWO = "saved_model_half_plus_two_2_versions"


@pytest.fixture(scope="module")
def stubs(tf_server):
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    channel = grpc.insecure_channel(
        f"127.0.0.1:{tf_server.port}",
        options=[
            ("grpc.max_receive_message_length", 2**31 - 1),
            ("grpc.max_send_message_length", 2**31 - 1),
        ],
    )
    yield (
        prediction_service_pb2_grpc.PredictionServiceStub(channel),
        model_service_pb2_grpc.ModelServiceStub(channel),
    )
    channel.close()


def predict_request(
    name="default",
    values=(2.0, 3.0, 4.0),
    signature="",
    version=None,
    label=None,
    alias="x",
    content=False,
):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    array = np.asarray(values, dtype=np.float32)
    if content:
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(array))  # tensor_content
        assert request.inputs[alias].tensor_content
    else:
        request.inputs[alias].dtype = 1
        request.inputs[alias].tensor_shape.dim.add().size = len(values)
        request.inputs[alias].float_val.extend(values)
    return request


def examples_input(input_proto, values):
    for value in values:
        example = input_proto.example_list.examples.add()
        example.features.feature["x"].float_list.value.append(value)


def code_of(call):
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_predict_known_answer_both_encodings(stubs):
    predict, _ = stubs
    for content in (False, True):
        response = predict.Predict(predict_request(content=content), timeout=20)
        y = response.outputs["y"]
        assert list(y.float_val) == [3.0, 3.5, 4.0] and not y.tensor_content  # typed field
        assert [d.size for d in y.tensor_shape.dim] == [3] and y.dtype == 1
        assert (
            response.model_spec.name,
            response.model_spec.version.value,
            response.model_spec.signature_name,
        ) == ("default", 123, "serving_default")


def test_predict_versions_labels_and_output_filter(stubs):
    predict, _ = stubs
    got = predict.Predict(predict_request(TWO, [1.0], version=123), timeout=20)
    assert got.model_spec.version.value == 123 and list(got.outputs["y"].float_val) == [2.5]
    assert (
        predict.Predict(
            predict_request(TWO, [1.0], label="canary"), timeout=20
        ).model_spec.version.value
        == 124
    )
    assert predict.Predict(predict_request(TWO, [1.0]), timeout=20).model_spec.version.value == 124
    request = predict_request()
    request.output_filter.append("y")
    assert list(predict.Predict(request, timeout=20).outputs) == ["y"]
    request.output_filter[:] = ["nope"]
    code, details = code_of(lambda: predict.Predict(request, timeout=20))
    assert (
        code == grpc.StatusCode.INVALID_ARGUMENT
        and "output tensor alias not found in signature: nope" in details
    )


def test_classify_regress_multi_inference(stubs):
    from tensorflow_serving.apis import classification_pb2, inference_pb2, regression_pb2

    predict, _ = stubs
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = "default", "classify_x_to_y"
    examples_input(request.input, [2.0])
    response = predict.Classify(request, timeout=20)
    classes = response.result.classifications[0].classes
    assert [(c.label, c.score) for c in classes] == [("", 3.0)]
    assert (
        response.model_spec.signature_name == "classify_x_to_y"
        and response.model_spec.version.value == 123
    )

    request = regression_pb2.RegressionRequest()
    request.model_spec.name, request.model_spec.signature_name = "default", "regress_x_to_y"
    examples_input(request.input, [2.0, 4.0])
    assert [r.value for r in predict.Regress(request, timeout=20).result.regressions] == [3.0, 4.0]

    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (
        ("classify_x_to_y", "tensorflow/serving/classify"),
        ("regress_x_to_y", "tensorflow/serving/regress"),
    ):
        task = request.tasks.add()
        task.model_spec.name, task.model_spec.signature_name, task.method_name = (
            "default",
            signature,
            method,
        )
    examples_input(request.input, [2.0])
    results = predict.MultiInference(request, timeout=20).results
    assert results[0].classification_result.classifications[0].classes[0].score == 3.0
    assert results[1].regression_result.regressions[0].value == 3.0
    assert results[1].model_spec.signature_name == "regress_x_to_y"


def test_metadata_packed_signature_def_map(stubs):
    from tensorflow_serving.apis import get_model_metadata_pb2

    predict, _ = stubs
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = TWO
    request.model_spec.version.value = 123
    request.metadata_field.append("signature_def")
    response = predict.GetModelMetadata(request, timeout=20)
    sigmap = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(sigmap)
    assert response.model_spec.name == TWO and response.model_spec.version.value == 123
    assert {"serving_default", "classify_x_to_y", "regress_x_to_y"} <= set(sigmap.signature_def)
    assert sigmap.signature_def["serving_default"].inputs["x"].dtype == 1
    del request.metadata_field[:]
    assert (
        code_of(lambda: predict.GetModelMetadata(request, timeout=20))[0]
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    request.metadata_field.append("nope")
    assert code_of(lambda: predict.GetModelMetadata(request, timeout=20)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Metadata field nope is not supported",
    )


def test_model_status(stubs):
    from tensorflow_serving.apis import get_model_status_pb2

    _, model = stubs
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = TWO
    response = model.GetModelStatus(request, timeout=20)
    assert [(s.version, s.state, s.status.error_code) for s in response.model_version_status] == [
        (124, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0),
        (123, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0),
    ]
    request.model_spec.version_label = "stable"
    assert [s.version for s in model.GetModelStatus(request, timeout=20).model_version_status] == [
        123
    ]
    request.model_spec.name = "foo"
    assert code_of(lambda: model.GetModelStatus(request, timeout=20)) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model foo",
    )


ERRORS = [
    (dict(name="foo"), grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(foo)"),
    (
        dict(name="default", version=99),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Specific(default, 99)",
    ),
    (
        dict(name="default", label="nope"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Unrecognized servable version label: nope",
    ),
    (
        dict(signature="s"),
        grpc.StatusCode.FAILED_PRECONDITION,
        'Serving signature key "s" not found.',
    ),
    (
        dict(alias="z"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input size does not match signature: 1!=1 len({z}) != len({x})",
    ),
    (dict(name=""), grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec"),
]


@pytest.mark.parametrize("kwargs,code,message", ERRORS, ids=[e[2][:40] for e in ERRORS])
def test_predict_errors_then_still_serving(stubs, kwargs, code, message):
    predict, _ = stubs
    got_code, details = code_of(lambda: predict.Predict(predict_request(**kwargs), timeout=20))
    assert got_code == code and message in details, details
    assert list(predict.Predict(predict_request(), timeout=20).outputs["y"].float_val) == [
        3.0,
        3.5,
        4.0,
    ]


def test_predict_bad_tensors(stubs):
    predict, _ = stubs
    request = predict_request()
    request.inputs["x"].dtype = 7  # DT_STRING against a float input
    code, details = code_of(lambda: predict.Predict(request, timeout=20))
    assert (
        code == grpc.StatusCode.INVALID_ARGUMENT
        and details == "Expects arg[0] to be float but string is provided"
    )
    request = predict_request()
    request.inputs["x"].float_val.extend([1.0, 2.0])  # 5 values for shape [3]
    assert code_of(lambda: predict.Predict(request, timeout=20)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "tensor parsing error: x",
    )
    request = predict_request()
    long_name = "n" * 3000
    request.model_spec.name = long_name
    code, details = code_of(lambda: predict.Predict(request, timeout=20))
    assert code == grpc.StatusCode.NOT_FOUND and len(details) == 1024


def test_large_message_over_4mb(stubs):
    predict, _ = stubs
    values = np.arange(1_500_000, dtype=np.float32)  # 6 MB in, 6 MB out
    request = predict_request(values=values, content=True)
    y = predict.Predict(request, timeout=60).outputs["y"]
    np.testing.assert_array_equal(np.asarray(y.float_val, np.float32), values * 0.5 + 2)


def test_tensor_proto_round_trip():
    from serving.tensor_proto import make_ndarray, make_tensor_proto

    for array in (
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.array([1, -2], np.int8),
        np.array([[True, False]]),
        np.array([1.5, -2], np.float16),
        np.array([2**40], np.int64),
        np.array([b"ab", b"\x00\xff"], dtype=object),
        np.array([7], np.uint64),
    ):
        got = make_ndarray(make_tensor_proto(array))
        assert got.dtype == array.dtype and got.shape == array.shape and (got == array).all()
    proto = make_tensor_proto(np.array([1.0, 1.0, 1.0], np.float32))
    del proto.float_val[1:]  # one value fills the shape, like Tensor::FromProto
    assert make_ndarray(proto).tolist() == [1.0, 1.0, 1.0]


def test_reload_config_replaces_model_set(tmp_path):
    from google.protobuf import text_format
    from tensorflow_serving.apis import (
        get_model_status_pb2,
        model_management_pb2,
        model_service_pb2_grpc,
    )
    from tensorflow_serving.config import model_server_config_pb2

    from serving.models import single_model_config
    from serving.server import Server

    three = tfs_testdata("saved_model_half_plus_three")
    with (
        Server(
            single_model_config("two", str(tfs_testdata("saved_model_half_plus_two_cpu"))),
            rest_api_port=None,
            port=0,
            host="127.0.0.1",
            poll_wait_seconds=0,
        ) as server,
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        model = model_service_pb2_grpc.ModelServiceStub(channel)
        request = model_management_pb2.ReloadConfigRequest()
        text_format.Parse(
            f'model_config_list {{ config {{ name: "three" base_path: "{three}" '
            f'model_platform: "tensorflow" }} }}',
            request.config,
        )
        assert model.HandleReloadConfigRequest(request, timeout=60).status.error_code == 0
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = "three"
        assert model.GetModelStatus(status, timeout=20).model_version_status[0].version == 123
        status.model_spec.name = "two"
        assert (
            code_of(lambda: model.GetModelStatus(status, timeout=20))[0]
            == grpc.StatusCode.NOT_FOUND
        )
        assert server.manager.resolve("three").run(
            server.manager.resolve("three").signatures["serving_default"],
            {"x": np.array([2.0], np.float32)},
        )["y"].tolist() == [4.0]
        bad = model_management_pb2.ReloadConfigRequest()
        bad.config.CopyFrom(model_server_config_pb2.ModelServerConfig())
        text_format.Parse(
            'model_config_list { config { name: "a" base_path: "/x" } '
            'config { name: "a" base_path: "/y" } }',
            bad.config,
        )
        code, details = code_of(lambda: model.HandleReloadConfigRequest(bad, timeout=20))
        assert (
            code == grpc.StatusCode.INVALID_ARGUMENT
            and "Illegal to list model a 2 times" in details
        )
        assert (
            model.GetModelStatus(
                get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "three"}), timeout=20
            )
            .model_version_status[0]
            .state
            == 30
        )  # unchanged
