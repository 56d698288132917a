"""Weights the project trains itself (tools/train_*.py) and the numbers recorded for them.

Keras-free, like the catalog that uses it. Every such file ships inside the package as
`zoo/data/weights/<model>.<tag>.weights.h5`, and every such experiment records the same
five numbers for its metric: the shipped run's value on the held-out set, that value's
standard error, its value on the reload test's first examples, and the mean and sample
standard deviation over training seeds 0-2.
"""

from zoo.registry import Measurement, WeightsSpec


def trained_here_weights(model, tag, **fields):
    """The `WeightsSpec` of `package://data/weights/<model>.<tag>.weights.h5`.

    Args:
        model: the registered model's name.
        tag: what users pass as `weights=`.
        **fields: the other `WeightsSpec` fields (`sha256`, `input_size`, `num_classes`,
            `trained_on`, `metric`, ...).
    """
    return WeightsSpec(
        tag=tag,
        url=f"package://data/weights/{model}.{tag}.weights.h5",
        file_format="weights.h5",
        source="trained here",
        **fields,
    )


def seed_measurements(metric, *, unit, source, what, held_out, check, values):
    """The five recorded numbers of one shipped checkpoint's metric, keyed as the reload
    tests read them.

    Args:
        metric: the key prefix (`"test_accuracy"`, `"mean_iou"`).
        unit: the values' unit (`"%"`, `"mIoU"`).
        source: the tool and results file the numbers come from.
        what: the metric in words (`"accuracy"`).
        held_out: the held-out set in words.
        check: `(key suffix, count, noun)` of the reload test's first examples, e.g.
            `("clips", 100, "clips")` gives `<metric>_check_clips`.
        values: `(value, standard error and how it was computed, value on the first
            examples, mean over seeds 0-2, sample standard deviation over seeds 0-2)`.

    Returns:
        `{key: Measurement}`.
    """
    value, (standard_error, how), first, mean, std = values
    suffix, count, noun = check

    def measured(number, quantity):
        return Measurement(number, unit, quantity, source)

    return {
        metric: measured(value, f"{what} on {held_out}"),
        f"{metric}_standard_error": measured(standard_error, f"its standard error ({how})"),
        f"{metric}_check_{suffix}": measured(first, f"{what} on the first {count} {noun}"),
        f"{metric}_seeds_mean": measured(mean, f"{what}, mean over training seeds 0-2"),
        f"{metric}_seeds_std": measured(std, f"{what}, standard deviation over seeds 0-2"),
    }
