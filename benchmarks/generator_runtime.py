"""Per-frame generator time on this machine: eager torch, ONNX Runtime, OpenVINO.

``python -m benchmarks.generator_runtime [--sizes 64 128 256] [--threads 1 2]`` builds the
default generator at each crop size (random weights: the time does not depend on their
values), exports the per-frame graph and times one frame at a time in each runtime that is
installed. Writes ``generator_runtime.json``. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.provenance import write_result
from engine.generator import (
    ONNX_INPUTS,
    AvatarGenerator,
    GeneratorConfig,
    export_onnx,
    parameter_count,
)

REPEATS = 60
WARMUP = 10


def _median_ms(run: Callable[[], object]) -> float:
    for _ in range(WARMUP):
        run()
    timings = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        run()
        timings.append((time.perf_counter() - start) * 1e3)
    return round(statistics.median(timings), 2)


def measure(size: int, threads: int, folder: Path) -> dict[str, object]:
    torch.manual_seed(0)
    config = replace(GeneratorConfig(), image_size=size)
    generator = AvatarGenerator(config).eval()
    inputs = [
        torch.rand(1, 3, size, size),
        torch.rand(1, 3, size, size),
        torch.rand(1, config.geometry_channels, size, size),
        torch.randn(1, config.num_coefficients),
    ]
    row: dict[str, object] = {
        "size": size,
        "threads": threads,
        "parameters": parameter_count(generator),
    }
    torch.set_num_threads(threads)
    with torch.inference_mode():
        row["eager_ms"] = _median_ms(lambda: generator(*inputs))
    path = export_onnx(generator, folder / f"generator{size}.onnx")
    feeds = {name: t.numpy() for name, t in zip(ONNX_INPUTS, inputs, strict=True)}
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    row["onnxruntime_ms"] = _median_ms(lambda: session.run(None, feeds))
    try:
        import openvino as ov
    except ImportError:
        row["openvino_ms"] = None
    else:
        core = ov.Core()
        compiled = core.compile_model(
            str(path), "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        )
        request = compiled.create_infer_request()
        ov_feeds = {name: np.ascontiguousarray(value) for name, value in feeds.items()}
        row["openvino_ms"] = _median_ms(lambda: request.infer(ov_feeds))
    return row


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.generator_runtime", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            for threads in args.threads:
                rows.append(measure(size, threads, Path(folder)))
                print(json.dumps(rows[-1]))  # noqa: T201
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "what": "median ms per frame of the generator's per-frame graph, batch 1",
        "machine": platform.platform(),
        "processor": platform.processor(),
        "rows": rows,
    }
    write_result(args.out / "generator_runtime.json", result, "benchmarks.generator_runtime", argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
