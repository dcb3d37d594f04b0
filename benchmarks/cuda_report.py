"""The CUDA check's report: the machine it ran on, the JSON written as it goes, the table.

Helpers of :mod:`benchmarks.cuda_check`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from engine.backends.runtime import one_line
from engine.frames import STAGES

JSON_NAME = "cuda_check.json"
TABLE_NAME = "cuda_check.txt"


class Report:
    """The JSON report, rewritten whole (temporary file, then a rename) on every save."""

    def __init__(self, folder: Path, data: dict[str, Any]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / JSON_NAME
        self.data = data

    def save(self) -> None:
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps(self.data, indent=1) + "\n")
        partial.replace(self.path)


# -- the machine ----------------------------------------------------------------------------
def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in (
        "numpy",
        "onnxruntime",
        "opencv-python-headless",
        "opencv-python",
        "opencv-contrib-python",
        "scikit-image",
        "scipy",
        "av",
        "triton",
        "pytorch-triton",
        "torch-tensorrt",
        "mediapipe",
    ):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def nvidia_smi() -> str | None:
    query = "name,driver_version,memory.total,clocks.max.sm,power.limit,pstate"
    try:
        done = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def machine_info(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "packages": package_versions(),
        "tensorrt": "not built here (torch_tensorrt "
        + ("installed" if importlib.util.find_spec("torch_tensorrt") else "not installed")
        + ")",
    }
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        index = torch.cuda.current_device()
        properties = torch.cuda.get_device_properties(index)
        major, minor = torch.cuda.get_device_capability(index)
        info["gpu"] = {
            "name": torch.cuda.get_device_name(index),
            "capability": f"sm_{major}{minor}",
            "memory_gib": round(properties.total_memory / 2**30, 1),
            "multiprocessors": properties.multi_processor_count,
            "nvidia_smi": nvidia_smi(),
        }
        info["cudnn"] = torch.backends.cudnn.version()
        try:
            info["tf32_default"] = {
                "cudnn_conv": bool(torch.backends.cudnn.allow_tf32),
                "cuda_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
            }
        except Exception as exc:  # the flags' API moves between torch releases
            info["tf32_default"] = {"error": one_line(exc)}
    return info


# -- the table ------------------------------------------------------------------------------
def _cell(value: Any, digits: str = ".3g") -> str:
    return "-" if value is None else format(value, digits)


def table(data: dict[str, Any]) -> str:
    """The report as a compact text table."""
    machine = data.get("machine", {})
    gpu = machine.get("gpu", {})
    lines = [
        f"device {data['settings']['device']}: {gpu.get('name', machine.get('cpu'))}; "
        f"torch {machine.get('torch')} (CUDA {machine.get('torch_cuda')}); "
        f"{machine.get('cores')} cores; {machine.get('tensorrt')}",
        "",
        "graphs: build s | call ms (numpy in/out, median) | device ms (median) | "
        "max|d| vs cpu eager fp32 | max|d| vs eager same precision",
    ]
    header = f"{'config':<22}{'graph':<10}{'build':>7}{'call':>9}{'device':>9}"
    lines.append(f"{header}{'vs cpu':>11}{'vs eager':>11}  note")
    for row in data.get("rows", []):
        name = f"{row['backend']} {row['precision']} b{row['batch']}"
        if "skipped" in row:
            lines.append(f"{name:<22}skipped: {row['skipped']}")
            continue
        for graph, entry in row.get("graphs", {}).items():
            call = entry.get("call_ms", {}).get("median")
            dev = (entry.get("device_ms") or {}).get("median")
            cpu = entry.get("vs_cpu_eager", {}).get("max_abs")
            eager = entry.get("vs_eager", {}).get("max_abs")
            note = entry.get("error", "")
            lines.append(
                f"{name:<22}{graph:<10}{_cell(entry.get('build_s'), '.1f'):>7}"
                f"{_cell(call, '.3f'):>9}{_cell(dev, '.3f'):>9}{_cell(cpu, '.2e'):>11}"
                f"{_cell(eager, '.2e'):>11}  {note}"
            )
    tf32 = data.get("tf32_off_vs_cpu_eager")
    if tf32:
        parts = [
            f"{k} {v['max_abs']:.2e}" if isinstance(v, dict) else f"{k}: {v}"
            for k, v in tf32.items()
        ]
        lines.append("eager fp32 with TF32 off, max|d| vs cpu: " + ", ".join(parts))
    lines += [
        "",
        "engine (ms per frame): streaming b1 (RTF) | offline | offline stages "
        + "/".join(STAGES)
        + " | frame pixels max/mean abs difference vs cpu eager fp32 b1, vs eager, vs batch 1",
    ]
    reference = data.get("cpu_reference")
    if reference:
        stages = "/".join(f"{reference['stages_ms'][s]:.2f}" for s in STAGES)
        lines.append(
            f"{'cpu reference':<22}{'-':>14}{reference['offline_ms_per_frame']:>9.2f}  {stages}"
        )
    for row in data.get("rows", []):
        engine = row.get("engine")
        if not isinstance(engine, dict):
            continue
        name = f"{row['backend']} {row['precision']} b{row['batch']}"
        if "offline" not in engine:
            lines.append(f"{name:<22}{engine.get('error') or engine.get('skipped')}")
            continue
        stream = engine.get("streaming")
        streaming = (
            f"{stream['ms_per_frame']:.2f} ({stream['real_time_factor']:.2f})" if stream else "-"
        )
        offline = engine["offline"]
        stages = "/".join(f"{offline['stages_ms'][s]:.2f}" for s in STAGES)
        pixels = "  ".join(
            f"{label} {engine[key]['max_abs']}/{engine[key]['mean_abs']:.3g}"
            for key, label in (("vs_cpu_eager", "cpu"), ("vs_eager", "eager"), ("vs_batch_1", "b1"))
            if key in engine
        )
        lines.append(
            f"{name:<22}{streaming:>14}{offline['ms_per_frame']:>9.2f}  {stages}  {pixels}"
        )
    lines.append(
        f"\ncompiling {data.get('compile_s_total', 0)} s; elapsed {data.get('elapsed_s')} s"
    )
    return "\n".join(lines)
