"""The registry's structure: ImageNet weights attached by each registration (every entry of
zoo.pretrained's table reaches its model), one registration style (zoo/catalog.py names each
body as `module:attribute`), and the RAM checkpoints' metrics as data."""

import dataclasses

import zoo
from zoo import catalog, pretrained, registry


def test_every_timm_checkpoint_is_attached_to_its_model():
    attached = {}
    for name, spec in registry.all_specs().items():
        imagenet = [w for w in spec.weights if w.tag == "imagenet"]
        assert [w.url for w in imagenet] == [w.url for w in pretrained.imagenet_weights(name)]
        if imagenet:
            attached[name] = imagenet[0].source
    # the timm-mirroring families all ship ImageNet weights, and two networks timm has no
    # weights for get pytorchcv's
    assert {
        "cbam_resnet50",
        "bam_resnet50",
        "resnet50",
        "seresnet50",
        "seresnext50_32x4d",
        "ecaresnet50d",
        "gcresnet50t",
        "botnet26t_256",
        "halonet26t",
        "lambda_resnet26t",
    } == set(attached)
    assert attached["seresnet50"] == "timm/seresnet50.a1_in1k"
    assert attached["cbam_resnet50"] == "pytorchcv/cbam_resnet50"


def test_models_register_in_one_style():
    for name, spec in registry.all_specs().items():
        module, attribute = spec.body.reference.split(":")
        assert attribute == name, (name, spec.body)
        assert module.startswith("zoo."), (name, spec.body)


def test_ram_metrics_are_numbers_with_units_and_sources():
    assert set(catalog.RAM_RESULTS) == {w.tag for w in catalog.RAM_WEIGHTS}
    for tag, results in catalog.RAM_RESULTS.items():
        for key, measurement in results.items():
            assert isinstance(measurement.value, float) and measurement.unit == "%", key
            assert measurement.source and measurement.quantity, key
            assert dataclasses.is_dataclass(measurement)
        spec = zoo.registry.get_spec("ram").weights_for(tag)
        # the registry's one-line metric is rendered from the data
        assert spec.metric.startswith(
            f"test error {results['test_error'].value:.2f}% ({catalog.RAM_MC_SAMPLES} Monte-Carlo"
        )
        assert f"greedy {results['test_error_greedy'].value:.2f}%" in spec.metric
        assert "\n" not in spec.metric and len(spec.metric) < 200
