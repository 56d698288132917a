"""What every training tool in `tools/` shares: seed statistics, the verdict rule, results
files and weight digests.

The verdict rule is the project's (README, "Experiments"): a model "beats" or is "behind" its
baseline only when the difference of the seed means is larger than the noise, the largest of
the two sides' sample standard deviations over training seeds and the test set's standard
error; otherwise it is "level".
"""

import hashlib
import json
import os
import pathlib

import numpy as np


def sha256(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def mean_sd(values):
    """`(mean, sample standard deviation)` of the values; the deviation is 0 for one value."""
    values = np.asarray(values, float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def format_mean_sd(values, scale=100, digits=1):
    """`"mean ± SD"` of `values` times `scale` (100: fractions as percentages), the sample
    standard deviation over seeds left out for one value."""
    values = scale * np.asarray(values, float)
    spread = f" ± {values.std(ddof=1):.{digits}f}" if len(values) > 1 else ""
    return f"{values.mean():.{digits}f}{spread}"


def seed_values(results, key):
    """`{model: [entry[key] of each of its runs, in seed order]}` of a results file's
    entries (each with "model" and "seed")."""
    grouped = {}
    for entry in sorted(results.values(), key=lambda e: (e["model"], e["seed"])):
        grouped.setdefault(entry["model"], []).append(entry[key])
    return grouped


def weights_table(results):
    """Markdown lines listing every run's weights file with its sha256, by model and seed
    (none without files)."""
    files = sorted(
        (entry for entry in results.values() if "file" in entry),
        key=lambda entry: (entry["model"], entry["seed"]),
    )
    if not files:
        return []
    return ["", "| file | sha256 |", "|---|---|"] + [
        f"| `{entry['file']}` | `{entry['sha256']}` |" for entry in files
    ]


def binomial_standard_error(p, n):
    """The standard error of a proportion `p` (an accuracy) measured on `n` test examples."""
    return float(np.sqrt(p * (1 - p) / n))


def verdict(values, baseline, test_standard_error):
    """`("beats" | "level" | "behind", margin, noise)` for a metric where larger is better.

    Args:
        values: the model's metric, one value per training seed.
        baseline: the baseline's metric, one value per training seed.
        test_standard_error: the standard error of one run's metric on the test set.

    Returns:
        The word, the difference of the means, and the noise it was held against: the
        largest of the two sample standard deviations and `test_standard_error`.
    """
    margin = mean_sd(values)[0] - mean_sd(baseline)[0]
    noise = max(mean_sd(values)[1], mean_sd(baseline)[1], float(test_standard_error))
    if abs(margin) <= noise:
        return "level", margin, noise
    return ("beats" if margin > 0 else "behind"), margin, noise


class ResultsFile:
    """A JSON results file that several training runs (processes) add entries to.

    Each run saves only the entries it produced; they are merged over the file as it is
    at that moment and the file is replaced atomically, so runs in parallel lose nothing and
    an interrupted run leaves the previous file whole.
    """

    def __init__(self, path):
        self.path = pathlib.Path(path)

    def load(self):
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def save(self, produced):
        merged = {**self.load(), **produced}
        partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(merged, indent=1, sort_keys=True) + "\n")
        os.replace(partial, self.path)
        return merged


def use_one_cpu_thread():
    """Train on one CPU thread, as every run recorded here was timed (TensorFlow backend)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)


def save_weights_only(trained, fresh, path):
    """Write `trained`'s weights to `path` through `fresh`, an untrained model of the same
    architecture, so that the file holds the weights alone (a compiled model's file also
    holds its optimizer's variables, and would not load into a plain model).

    Returns:
        `{"file", "sha256", "bytes"}` of the written file, for the run's results entry.
    """
    path = pathlib.Path(path)
    fresh.set_weights(trained.get_weights())
    fresh.save_weights(path)
    return {"file": path.name, "sha256": sha256(path), "bytes": path.stat().st_size}
