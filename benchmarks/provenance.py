"""Where a benchmark result came from: the command, the code, the date and the machine.

Every result JSON under ``benchmarks/results/`` carries :func:`provenance` under the key
``"provenance"``, so a figure quoted in the docs can be traced to the command that wrote it
and the commit it ran on (a working tree with uncommitted changes is marked ``dirty``).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parent.parent
RESULTS = REPOSITORY / "benchmarks" / "results"  # where the committed results live


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPOSITORY, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _memory_gb() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None
    return round(pages * size / 2**30, 1)


def _load_1min() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def provenance(module: str, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The provenance of a result written now by ``python -m module`` with ``argv`` (default:
    this process's arguments)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    # the results folder is what benchmarks write: it does not make the code dirty
    status = _git(
        "status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results"
    )
    return {
        "command": " ".join(["python", "-m", module, *arguments]),
        "module": module,
        "arguments": arguments,
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "memory_gb": _memory_gb(),
            "system": platform.platform(),
            "python": platform.python_version(),
            "torch": _version("torch"),
            "onnxruntime": _version("onnxruntime"),
            "openvino": _version("openvino"),
            # runnable processes averaged over the last minute when the result was written
            # (a figure measured next to other work is read with it)
            "load_1min": _load_1min(),
        },
    }


def write_result(
    path: Path, result: dict[str, Any], module: str, argv: Sequence[str] | None = None
) -> None:
    """Write ``result`` as JSON to ``path`` with its :func:`provenance` first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stamped = {"provenance": provenance(module, argv), **result}
    path.write_text(json.dumps(stamped, indent=1) + "\n")
