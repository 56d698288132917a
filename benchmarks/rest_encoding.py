"""serving.Client's REST request encoding: orjson from the numpy array against the earlier path.

The earlier client turned a predict input into Python floats (`astype(float64).tolist()`) and
wrote them with `json.dumps`; float32 values then take 17 significant digits. It now hands the
array to orjson, which writes float32 as its shortest round-trip text. Both paths are timed here
in the same run on the inputs of `benchmarks/serving_load.py` (batch 1 and 16), with the body
size and the server's cost of parsing each body: `json.loads` (what `serving.rest` used before)
and `serving.json_tensor.parse_json` as it is (orjson, json.loads only for what orjson refuses).

Usage: `python benchmarks/rest_encoding.py [--repeats 200]`. Writes
benchmarks/results/rest_encoding.md and .json.
"""

import argparse
import json
import pathlib
import platform
import statistics
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serving.client import _dumps, _json_value  # noqa: E402
from serving.json_tensor import parse_json  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
INPUTS = {"stn_cnn": (42, 42, 1), "gap_cnn": (64, 64, 3)}


def earlier_body(array):
    """What the client sent before: Python floats through json.dumps."""
    return json.dumps({"inputs": {"x": array.astype(np.float64).tolist()}}).encode("utf-8")


def current_body(array):
    return _dumps({"inputs": {"x": _json_value(array)}})


def median_ms(fn, array, repeats):
    fn(array)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(array)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--results-dir", default=str(RESULTS))
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    for model, shape in INPUTS.items():
        for batch in (1, 16):
            array = rng.random((batch, *shape)).astype(np.float32)
            old, new = earlier_body(array), current_body(array)
            assert np.array_equal(np.asarray(json.loads(new)["inputs"]["x"], np.float32), array)
            row = {
                "input": f"{model} {batch}x{'x'.join(map(str, shape))} float32",
                "earlier_ms": median_ms(earlier_body, array, args.repeats),
                "current_ms": median_ms(current_body, array, args.repeats),
                "earlier_bytes": len(old),
                "current_bytes": len(new),
                "parse_earlier_ms": median_ms(lambda _: json.loads(old), None, args.repeats),
                "parse_current_ms": median_ms(lambda _: json.loads(new), None, args.repeats),
                "parse_json_ms": median_ms(lambda _: parse_json(new), None, args.repeats),
            }
            row["parse_speedup"] = row["parse_current_ms"] / row["parse_json_ms"]
            row["speedup"] = row["earlier_ms"] / row["current_ms"]
            rows.append(row)
            print(row, flush=True)
    lines = [
        "# serving.Client REST request encoding",
        "",
        f"`benchmarks/rest_encoding.py`, median of {args.repeats} encodings per cell, one process "
        f"({platform.processor() or platform.machine()}, Python {platform.python_version()}). "
        "Earlier: the input as Python floats through `json.dumps` (the client before orjson); "
        "current: `serving.client` as it is (orjson from the numpy array). Both measured in this "
        "run; the current body decodes to the same float32 values, bit for bit. Server parse: "
        "`json.loads` of each body (the server before orjson), and `parse_json` of the current "
        "body (the server as it is: orjson, falling back to `json.loads` only for what orjson "
        "refuses).",
        "",
        "| input | earlier ms | current ms | speedup | earlier bytes | current bytes | "
        "server json.loads earlier ms | server json.loads current ms | server parse_json current ms | "
        "parse speedup |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['input']} | {r['earlier_ms']:.3f} | {r['current_ms']:.3f} | "
            f"{r['speedup']:.1f}x | {r['earlier_bytes']:,} | {r['current_bytes']:,} | "
            f"{r['parse_earlier_ms']:.3f} | {r['parse_current_ms']:.3f} | "
            f"{r['parse_json_ms']:.3f} | {r['parse_speedup']:.1f}x |"
        )
    out = pathlib.Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rest_encoding.md").write_text("\n".join(lines) + "\n")
    (out / "rest_encoding.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {out / 'rest_encoding.md'}")


if __name__ == "__main__":
    main()
