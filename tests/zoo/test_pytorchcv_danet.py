"""`danet_resnet50` with pytorchcv's Cityscapes weights (`danet_resnetd50b_cityscapes`): the
architecture entry of the tag (deep-stem ResNet-50, per-branch classifiers), the converter
of zoo/convert/pytorchcv.py, the download path over loopback HTTP, the registry entry, the
Cityscapes label set and the CLI's palette masks.

Fixture: tests/fixtures/zoo/pytorchcv_danet_tiny.{pth,npz}, pytorchcv's own `DANet` on a
reduced `ResNetD` with random weights and its three maps (main, position branch, channel
branch, 19 classes) on one 24 x 40 image (tools/make_pytorchcv_fixtures.py `build_danet`, torch
2.14.1, pytorchcv 0.0.74). The oracle tests build pytorchcv's models live.
"""

import dataclasses
import hashlib
import zipfile

import numpy as np
import pytest

import zoo
from tests.zoo.test_pytorchcv_weights import (
    _assert_logits_close,
    _fixture,
    _register_release,
    _serve_release,
)
from tools.make_pytorchcv_fixtures import DANET_CASE
from zoo import labels, registry
from zoo.convert.pytorchcv import load_pytorchcv_state_dict
from zoo.convert.torch_pickle import load_state_dict
from zoo.weights import WeightsError

MAPS = {"segmentation": "logits", "position": "position", "channel": "channel"}


def _tiny_model(arrays, config):
    return zoo.build(
        "danet_resnet50",
        input_shape=arrays["input"].shape[1:],
        num_classes=arrays["logits"].shape[-1],
        classifier_activation=None,
        aux_head=True,
        **config["kwargs"],
    )


def _run(model, x):
    """The model's outputs on `x` as numpy (one eager call: no graph to trace)."""
    import keras

    outputs = model(x, training=False)
    if isinstance(outputs, dict):
        return {name: keras.ops.convert_to_numpy(value) for name, value in outputs.items()}
    return keras.ops.convert_to_numpy(outputs)


def _assert_maps_close(outputs, arrays):
    for ours, theirs in MAPS.items():
        _assert_logits_close(outputs[ours], arrays[theirs])


def _named_backbone(state):
    """The keys as the PyTorch of 2020 saved them (`backbone.init_block`, `.stage1`, ...)."""
    children = ("init_block", "stage1", "stage2", "stage3", "stage4")
    renamed = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "backbone":
            parts[1] = children[int(parts[1])]
        renamed[".".join(parts)] = value
    return renamed


def test_fixture_converts_to_pytorchcv_maps_with_either_key_style():
    """pytorchcv's main and both branch maps; the backbone keys of a fresh save
    (`backbone.0` ... renumbered by PyTorch's `del`) and of the release's era
    (`backbone.init_block`, `backbone.stage1` ...) load the same weights."""
    path, arrays, config = _fixture(DANET_CASE)
    model = _tiny_model(arrays, config)
    state = load_state_dict(path)
    assert "backbone.0.conv1.conv.weight" in state
    load_pytorchcv_state_dict(model, state, "danet_resnet50")
    outputs = _run(model, arrays["input"])
    _assert_maps_close(outputs, arrays)
    for weight in model.weights:
        weight.assign(np.zeros(weight.shape, weight.dtype))
    load_pytorchcv_state_dict(model, _named_backbone(state), "danet_resnet50")
    again = _run(model, arrays["input"])
    for name in MAPS:
        np.testing.assert_array_equal(again[name], outputs[name])


def test_default_build_is_unchanged_and_refuses_the_checkpoint():
    """Without the tag's architecture entry: the timm 7x7 stem and no branch
    classifiers, so the converter names the first weight it cannot find."""
    path, arrays, config = _fixture(DANET_CASE)
    backbone = {**config["kwargs"]["backbone"], "stem_type": "", "stem_width": 64}
    model = zoo.build(
        "danet_resnet50",
        input_shape=arrays["input"].shape[1:],
        num_classes=arrays["logits"].shape[-1],
        backbone=backbone,
    )
    assert [layer.name for layer in model.layers if layer.weights][:2] == ["conv1", "bn1"]
    assert not any(layer.name in ("head-conv6", "head-conv7") for layer in model.layers)
    with pytest.raises(ValueError, match=r"layer 'conv1' .*'features\.init_block\.conv\.conv"):
        load_pytorchcv_state_dict(model, load_state_dict(path), "danet_resnet50")


def test_paper_channel_attention_is_refused():
    import keras

    from keras_attention import layers as L
    from zoo.convert.pytorchcv import CONVERTERS

    layer = L.DualChannelAttention(energy="paper")
    layer.build((None, 4, 6, 8))
    state = {"att.scale.alpha": np.ones((1,), "float32")}
    with pytest.raises(ValueError, match=r"max\(energy\) - energy.*energy='paper'"):
        CONVERTERS[L.DualChannelAttention].load(layer, state, "att.")
    official = L.DualChannelAttention()
    official.build((None, 4, 6, 8))
    CONVERTERS[L.DualChannelAttention].load(official, {"att.scale.alpha": np.array([0.7])}, "att.")
    assert float(keras.ops.convert_to_numpy(official.gamma)) == pytest.approx(0.7)


# -- the download path over loopback HTTP ----------------------------------------------


def test_cityscapes_tag_downloads_verifies_sha1_and_loads(monkeypatch, keras_home, http_root):
    """`zoo.load(..., weights="cityscapes")` through a pytorchcv-style release: the main
    map by default, the three maps with `aux_head=True` (from the cached conversion)."""
    root, base, requests = http_root
    name, sha1 = _serve_release(root, DANET_CASE)
    model_name, arrays = _register_release(
        monkeypatch, DANET_CASE, f"{base}/{name}.zip", sha1, tag="cityscapes"
    )
    model = zoo.load(model_name, weights="cityscapes", classifier_activation=None)
    assert model.task == "segmentation" and len(model.outputs) == 1
    _assert_logits_close(_run(model, arrays["input"]), arrays["logits"])
    assert requests == [f"/{name}.zip"]
    assert sorted(p.name for p in keras_home.iterdir()) == sorted(
        [f"{model_name}.cityscapes.{name}", f"{model_name}.cityscapes.24x40.weights.h5"]
    )
    with_aux = zoo.load(model_name, weights="cityscapes", classifier_activation=None, aux_head=True)
    _assert_maps_close(_run(with_aux, arrays["input"]), arrays)
    assert requests == [f"/{name}.zip"]


def test_other_num_classes_fine_tune_from_the_checkpoint(monkeypatch, keras_home, http_root):
    """`num_classes=7`: every layer but the classifiers holds the checkpoint's weights (as
    a direct conversion gives them), the classifiers are new and 7 wide."""
    root, base, _ = http_root
    name, sha1 = _serve_release(root, DANET_CASE)
    path, arrays, config = _fixture(DANET_CASE)
    model_name, _ = _register_release(
        monkeypatch, DANET_CASE, f"{base}/{name}.zip", sha1, tag="cityscapes"
    )
    tuned = zoo.load(model_name, weights="cityscapes", num_classes=7, aux_head=True)
    shapes = {key: tuple(output.shape) for key, output in tuned.output.items()}
    assert shapes == dict.fromkeys(MAPS, (None, 24, 40, 7))
    reference = _tiny_model(arrays, config)
    load_pytorchcv_state_dict(reference, load_state_dict(path), "danet_resnet50")
    classifiers = {"head-classifier", "head-conv6", "head-conv7"}
    for layer in tuned.layers:
        if not layer.weights:
            continue
        kept = reference.get_layer(layer.name).get_weights()
        if layer.name in classifiers:
            assert layer.get_weights()[0].shape == (1, 1, 16, 7)
        else:
            for got, want in zip(layer.get_weights(), kept):
                np.testing.assert_array_equal(got, want)


def test_wrong_sha1_leaves_nothing_in_the_cache(monkeypatch, keras_home, http_root):
    root, base, requests = http_root
    name, sha1 = _serve_release(root, DANET_CASE)
    wrong = "f" * 40
    model_name, _ = _register_release(
        monkeypatch, DANET_CASE, f"{base}/{name}.zip", wrong, tag="cityscapes"
    )
    with pytest.raises(WeightsError, match=f"sha1 mismatch .*expected {wrong}, got {sha1}"):
        zoo.load(model_name, weights="cityscapes")
    assert requests == [f"/{name}.zip"]
    assert list(keras_home.iterdir()) == []


def test_a_local_checkpoint_file_is_still_refused(tmp_path):
    """Only the registered checkpoint is converted; a segmentation model loads files of
    its own Keras weights."""
    (tmp_path / "x.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="danet_resnet50 loads Keras weights only"):
        zoo.load("danet_resnet50", weights=tmp_path / "x.safetensors")


# -- registry entry ----------------------------------------------------------------------


def test_registry_entry():
    spec = zoo.model_info("danet_resnet50")
    entry = spec.weights_for("cityscapes")
    assert spec.default_weights == "cityscapes" and spec.num_classes == 21
    assert entry.file_format == "pytorchcv" and entry.num_classes == 19
    assert entry.labels == "cityscapes" and entry.input_size == (1024, 2048)
    assert entry.url.endswith("/v0.0.468/danet_resnetd50b_cityscapes-6799-c5740c9f.pth.zip")
    assert entry.architecture == {
        "backbone": {
            "block": "bottleneck",
            "layers": (3, 4, 6, 3),
            "stem_type": "deep",
            "stem_width": 64,
        },
        "branch_classifiers": True,
    }
    assert "mIoU 67.99%" in entry.metric and "MIT" in entry.trained_on
    preprocessing = spec.preprocessing("cityscapes")
    assert preprocessing.size == (1024, 2048) and preprocessing.crop_mode == "squash"
    assert preprocessing.mean == (0.485, 0.456, 0.406)
    with pytest.raises(ValueError, match="the cityscapes label set has 19 classes"):
        dataclasses.replace(entry, num_classes=21)


@pytest.mark.oracle
def test_registry_entry_matches_pytorchcv_records():
    from pytorchcv.models.common import model_store

    model = "danet_resnetd50b_cityscapes"
    error, sha1, release = model_store.get_model_name_suffix_data(model)
    entry = zoo.model_info("danet_resnet50").weights_for("cityscapes")
    assert entry.sha1 == sha1 == "c5740c9fd471c141a584455efd2167858dd8cb94"
    assert entry.url == (
        f"{model_store.imgclsmob_repo_url}/releases/download/{release}/"
        f"{model}-{error}-{sha1[:8]}.pth.zip"
    )
    assert f"mIoU {int(error) / 100:.2f}%" in entry.metric
    rows = {
        row[0]: row for row in model_store.load_csv(model_store.get_model_metainfos_file_path())
    }
    assert rows[model][7] == "cs"  # test_dataset: Cityscapes


# -- Cityscapes labels -------------------------------------------------------------------


def test_decode_segmentation_lists_classes_by_share():
    class_map = np.array([[[13, 13, 0], [13, 10, 0]]])  # car 3, road 2, sky 1
    decoded = zoo.decode_segmentation(class_map)
    assert decoded == [[(13, "car", 0.5), (0, "road", 2 / 6), (10, "sky", 1 / 6)]]
    scores = np.eye(19, dtype="float32")[class_map]
    assert zoo.decode_segmentation(scores, top=2) == [decoded[0][:2]]
    with pytest.raises(ValueError, match="predictions have 21 classes; the cityscapes"):
        zoo.decode_segmentation(np.zeros((1, 2, 2, 21)))
    with pytest.raises(ValueError, match=r"class ids must be in \[0, 19\)"):
        zoo.decode_segmentation(np.full((1, 2, 2), 19))
    with pytest.raises(ValueError, match="labels must be one of"):
        zoo.decode_segmentation(class_map, labels="voc")


@pytest.mark.oracle
def test_cityscapes_labels_match_torchvision():
    import torchvision.datasets

    train_ids = sorted(
        (c.train_id, c.name, c.color)
        for c in torchvision.datasets.Cityscapes.classes
        if 0 <= c.train_id < 255
    )
    assert [name for _, name, _ in train_ids] == list(labels.class_names("cityscapes"))
    assert [i for i, _, _ in train_ids] == list(range(19))
    np.testing.assert_array_equal(
        labels.palette("cityscapes"), [colour for _, _, colour in train_ids]
    )


# -- CLI ---------------------------------------------------------------------------------------


def test_cli_info_shows_the_cityscapes_weights(capsys):
    from zoo.cli import main

    assert main(["info", "danet_resnet50"]) == 0
    out = capsys.readouterr().out
    assert "weights 'cityscapes' (default for predict / export): pytorchcv/danet_resnetd50b" in out
    assert "sha1 c5740c9fd471c141a584455efd2167858dd8cb94; input (1024, 2048)" in out
    assert "classes: cityscapes (19: road, sidewalk, building," in out
    assert "architecture: backbone={'block': 'bottleneck'" in out


@pytest.mark.slow
def test_cli_predict_writes_cityscapes_palette_masks(
    monkeypatch, keras_home, http_root, tmp_path, capsys
):
    from PIL import Image

    from zoo.cli import main

    root, base, _ = http_root
    name, sha1 = _serve_release(root, DANET_CASE)
    model_name, arrays = _register_release(
        monkeypatch, DANET_CASE, f"{base}/{name}.zip", sha1, tag="cityscapes"
    )
    image = tmp_path / "street.png"
    pixels = np.random.default_rng(6).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image)
    assert main(["predict", model_name, str(image)]) == 0
    mask_path = tmp_path / "street.mask.png"
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    mask = Image.open(mask_path)
    class_ids = np.asarray(mask)
    # in process: stretched to the weights' size, normalised, scores stretched back
    import keras

    model = zoo.load(model_name, weights="cityscapes")
    height, width = model.inputs[0].shape[1:3]
    resized = keras.ops.image.resize(pixels[None].astype("float32"), (height, width))
    inputs = model.preprocess_input(keras.ops.convert_to_numpy(resized))
    scores = keras.ops.image.resize(_run(model, inputs), (40, 50))
    np.testing.assert_array_equal(class_ids, keras.ops.convert_to_numpy(scores)[0].argmax(-1))
    np.testing.assert_array_equal(
        np.asarray(mask.convert("RGB")), labels.palette("cityscapes")[class_ids]
    )
    _, top_name, top_share = zoo.decode_segmentation(class_ids[None])[0][0]
    assert printed.startswith(
        f"{image}: mask {mask_path} (40x50; {top_name} {100 * top_share:.1f}%"
    )


# -- live oracles: pytorchcv's own models -------------------------------------------------------


@pytest.mark.oracle
def test_live_reduced_danet_matches_pytorchcv(tmp_path):
    """A fresh reduced pytorchcv DANet (seed 7, 64 x 96 images), saved with `torch.save` and
    read by the numpy reader: main and branch maps."""
    import torch

    from tools.make_pytorchcv_fixtures import build_danet, danet_outputs

    net = build_danet(seed=7)
    torch.save(net.state_dict(), tmp_path / "danet.pth")
    x = np.random.default_rng(8).normal(size=(2, 64, 96, 3)).astype("float32")
    expected = dict(zip(MAPS.values(), danet_outputs(net, x)))
    _, _, config = _fixture(DANET_CASE)
    model = _tiny_model({"input": x, "logits": expected["logits"]}, config)
    load_pytorchcv_state_dict(model, load_state_dict(tmp_path / "danet.pth"), "danet_resnet50")
    _assert_maps_close(_run(model, x), expected)


@pytest.mark.oracle
@pytest.mark.slow
def test_full_model_matches_pytorchcv_through_the_download_path(tmp_path, monkeypatch, keras_home):
    """pytorchcv's `get_model("danet_resnetd50b_cityscapes", pretrained=False,
    fixed_size=False)`, every parameter, BN statistic and attention scale randomised,
    `torch.save`d and zipped like the release, loaded by tag through `file://` (the tag's
    architecture entry applies) at 64 x 96: main and branch maps."""
    import torch
    from pytorchcv.model_provider import get_model

    from tools.make_pytorchcv_fixtures import danet_outputs, randomize

    model_name = "danet_resnetd50b_cityscapes"
    net = randomize(get_model(model_name, pretrained=False, fixed_size=False), seed=3)
    checkpoint = tmp_path / f"{model_name}-0000-test.pth"
    torch.save(net.state_dict(), checkpoint)
    with zipfile.ZipFile(tmp_path / f"{checkpoint.name}.zip", "w") as archive:
        archive.write(checkpoint, checkpoint.name)
    spec = registry.get_spec("danet_resnet50")
    weights = dataclasses.replace(
        spec.weights_for("cityscapes"),
        url=(tmp_path / f"{checkpoint.name}.zip").as_uri(),
        sha1=hashlib.sha1(checkpoint.read_bytes()).hexdigest(),
    )
    monkeypatch.setitem(
        registry._REGISTRY, "danet_resnet50", dataclasses.replace(spec, weights=(weights,))
    )
    x = np.random.default_rng(4).normal(size=(1, 64, 96, 3)).astype("float32")
    expected = dict(zip(MAPS.values(), danet_outputs(net, x)))
    model = zoo.load(
        "danet_resnet50",
        weights="cityscapes",
        input_shape=(64, 96, 3),
        classifier_activation=None,
        aux_head=True,
    )
    _assert_maps_close(_run(model, x), expected)
    # the same parameters (47,586,427, the count pytorchcv's danet.py asserts)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == sum(
        p.numel() for p in net.parameters()
    )
