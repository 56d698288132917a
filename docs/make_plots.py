"""Draw the results pages' figures from the committed benchmark JSON (`benchmarks/results/`).

`make docs` runs this before `mkdocs build`; the PNGs go to `docs/results/img/` (git-ignored),
so every figure is redrawn from the numbers the benchmarks wrote, never edited by hand.

    python docs/make_plots.py [--results benchmarks/results] [--out docs/results/img]
"""

import argparse
import json
import pathlib

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker

ROOT = pathlib.Path(__file__).resolve().parents[1]
BATCHING_COLOURS = {"off": "#9e9e9e", "2 ms": "#1f77b4", "5 ms": "#ff7f0e"}


def _read(results, name):
    return json.loads((results / f"{name}.json").read_text())


def _save(fig, out, name):
    path = out / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def attention_scaling(results, out):
    """CPU: latency and peak memory of the dense and the sparse global attentions vs map side."""
    data = _read(results, "attention_scaling")
    rows = data["rows"]
    sides = [row["side"] for row in rows]
    layers = [key for key in rows[0] if key not in ("side", "positions")]
    fig, (memory, latency) = plt.subplots(1, 2, figsize=(10, 3.8))
    for layer in layers:
        memory.plot(sides, [row[layer]["peak_mib"] for row in rows], "o-", label=layer)
        latency.plot(sides, [row[layer]["ms"] for row in rows], "o-", label=layer)
    memory.set(ylabel="peak memory above baseline (MiB)", title="memory")
    latency.set(ylabel="median forward latency (ms)", title="latency")
    for ax in (memory, latency):
        ax.set_xlabel("feature-map side (H = W)")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xticks(sides)
        ax.grid(alpha=0.3)
    latency.legend(fontsize=8)
    fig.suptitle(f"Global attention on CPU, batch 1, {data['channels']} channels, TF backend")
    return _save(fig, out, "attention_scaling")


def attention_gpu(results, out):
    """GPU: the fused dot_product_attention path against the materialised attention."""
    data = _read(results, "attention_gpu")
    fig, (memory, latency) = plt.subplots(1, 2, figsize=(10, 3.8))
    for layer, colour in (("NonLocal", "#1f77b4"), ("PositionAttention", "#2ca02c")):
        rows = [row for row in data["rows"] if row["layer"] == layer]
        for path, style in (("fused", "o-"), ("materialised", "s--")):
            measured = [row for row in rows if path in row]
            sides = [row["side"] for row in measured]
            label = f"{layer}, {path}"
            memory.plot(
                sides, [row[path]["temp_mib"] for row in measured], style, color=colour, label=label
            )
            latency.plot(
                sides, [row[path]["ms"] for row in measured], style, color=colour, label=label
            )
    memory.set(ylabel="XLA temporaries (MiB)", title="memory")
    latency.set(ylabel="median latency (ms)", title="latency")
    for ax in (memory, latency):
        ax.set_xlabel("feature-map side (H = W)")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(sorted({row["side"] for row in data["rows"]}))
        ax.grid(alpha=0.3)
    memory.legend(fontsize=8)
    meta = data["meta"]
    fig.suptitle(
        f"{meta['device']}, JAX {meta['jax']}, mixed_bfloat16, batch 1, "
        f"{meta['channels']} channels (materialised not run at side 256)"
    )
    return _save(fig, out, "attention_gpu")


def serving_load(results, out):
    """Throughput of each client and protocol with batching off and on, per model."""
    data = _read(results, "serving_load")
    models = list(data["meta"]["models"])
    settings = list(BATCHING_COLOURS)
    fig, axes = plt.subplots(1, len(models), figsize=(11, 4), sharey=False)
    for ax, model in zip(axes, models):
        rows = [row for row in data["rows"] if row["model"] == model]
        groups = list(dict.fromkeys((row["protocol"], row["client"]) for row in rows))
        width = 0.8 / len(settings)
        for i, setting in enumerate(settings):
            values = [
                next(
                    row["throughput_rps"]
                    for row in rows
                    if (row["protocol"], row["client"]) == group and row["batching"] == setting
                )
                for group in groups
            ]
            positions = [g + (i - (len(settings) - 1) / 2) * width for g in range(len(groups))]
            label = "no batching" if setting == "off" else f"batching, {setting} timeout"
            ax.bar(positions, values, width, label=label, color=BATCHING_COLOURS[setting])
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(
            [f"{protocol.upper()}\n{client}" for protocol, client in groups], fontsize=8
        )
        ax.set(
            title=f"{model} ({data['meta']['params'][model]:,} parameters)", ylabel="requests / s"
        )
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    meta = data["meta"]
    fig.suptitle(
        f"{meta['clients']} concurrent clients, batch-1 predicts, server on 1 core, "
        f"clients on the other ({meta['cores']}-core CPU)"
    )
    return _save(fig, out, "serving_load")


def zoo_cpu(results, out):
    """Batch-1 latency of the zoo's models against timm's and keras.applications.ResNet50."""
    data = _read(results, "zoo_cpu")
    rows = data["rows"]
    models = [row["model"] for row in rows]
    series = [("zoo tf.function", "tf.function"), ("zoo XLA", "XLA"), ("timm", "eager")]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for i, (label, suffix) in enumerate(series):
        owner = label.split()[0]
        values = [row[f"{owner} {row['model']} {suffix}"] for row in rows]
        ax.bar(
            [m + (i - 1) * width for m in range(len(models))],
            values,
            width,
            label=f"{label} {suffix}" if owner == "timm" else label,
        )
    reference = data["keras_applications_resnet50"]["keras.applications.ResNet50 XLA"]
    ax.axhline(reference, color="k", ls=":", label="keras.applications.ResNet50, XLA")
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels(models)
    ax.set(ylabel="median latency (ms)", title=data["header"].split(";")[0])
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, out, "zoo_cpu")


def layers_cpu(results, out):
    """Each layer's latency as a multiple of timm's module, plain tf.function and XLA."""
    data = _read(results, "layers_cpu")
    rows = [row for row in data["rows"] if "ratio_xla" in row]  # those timm has
    labels = [row["layer"] for row in rows]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    width = 0.4
    ax.bar(
        [i - width / 2 for i in range(len(rows))],
        [row["ratio_tf"] for row in rows],
        width,
        label="tf.function",
    )
    ax.bar(
        [i + width / 2 for i in range(len(rows))],
        [row["ratio_xla"] for row in rows],
        width,
        label="XLA",
    )
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set(
        ylabel="latency / timm's latency",
        title=f"Layers on {tuple(data['meta']['input_shape'])}"
        f", TF backend, {data['meta']['cpu_count']} CPU threads (below 1: faster than timm)",
    )
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out, "layers_cpu")


def mnist_seeds(results, out):
    """The cluttered-MNIST comparison: the CNN over training seeds, RAM over sampler seeds."""
    data = _read(results, "mnist_models")
    cnn = data["mnist_cnn:cluttered_mnist"]
    ram = data["ram:cluttered_mnist"]
    cnn_errors = [100 * e for e in cnn["error_by_training_seed"]]
    ram_errors = [100 * e for e in ram["error_by_sampler_seed"]]
    cnn_mean = sum(cnn_errors) / len(cnn_errors)
    p = cnn_mean / 100
    standard_error = 100 * (p * (1 - p) / 1000) ** 0.5
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.axvspan(
        cnn_mean - standard_error,
        cnn_mean + standard_error,
        color="#cccccc",
        label="CNN mean ± one standard error of 1,000 test digits",
    )
    seeds = ", ".join(str(seed) for seed in cnn["training_seeds"])
    ax.plot(
        cnn_errors,
        [1] * len(cnn_errors),
        "o",
        color="#555555",
        alpha=0.7,
        label=f"plain CNN, training seeds {seeds}",
    )
    ax.plot(
        ram_errors,
        [0] * len(ram_errors),
        "D",
        color="#d62728",
        alpha=0.7,
        label="RAM (shipped weights), 3 sampler seeds",
    )
    ram_mean = sum(ram_errors) / len(ram_errors)
    ax.plot([cnn_mean, ram_mean], [1, 0], "|", color="k", markersize=22, label="means")
    ax.set_yticks([0, 1])
    ax.set_yticklabels(["RAM", "CNN"])
    ax.set_ylim(-0.6, 1.6)
    ax.set_xlim(cnn_mean - 4 * standard_error, cnn_mean + 4 * standard_error)
    ax.set(xlabel="test error on cluttered 60x60 MNIST (%)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, out, "mnist_seeds")


PLOTS = (attention_scaling, attention_gpu, serving_load, zoo_cpu, layers_cpu, mnist_seeds)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=pathlib.Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "docs" / "results" / "img")
    args = parser.parse_args(argv)
    matplotlib.use("Agg")  # files only, no display
    args.out.mkdir(parents=True, exist_ok=True)
    for plot in PLOTS:
        print(plot(args.results, args.out))


if __name__ == "__main__":
    main()
