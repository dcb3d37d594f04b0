"""``python -m benchmarks.all``: result files whose command is gone, or whose keys changed, fail."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, run_module


def _all(*arguments: str) -> subprocess.CompletedProcess[str]:
    return run_module("benchmarks.all", *arguments)


def _provenance(module: str, arguments: list[str]) -> dict[str, Any]:
    return {
        "command": " ".join(["python", "-m", module, *arguments]),
        "module": module,
        "arguments": arguments,
        "commit": "0" * 40,
        "dirty": False,
        "date": "2026-12-07T00:00:00+00:00",
        "machine": {},
    }


def _write(folder: Path, name: str, value: dict[str, Any]) -> None:
    (folder / name).write_text(json.dumps(value))


def test_a_result_with_a_command_that_parses_passes(tmp_path: Path) -> None:
    provenance = _provenance("benchmarks.engine", ["--seconds", "5", "--threads", "1"])
    _write(tmp_path, "engine.json", {"provenance": provenance, "rows": []})
    done = _all("--check", "--results", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 failure(s)" in done.stdout


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("nobody.json", {"x": 1}, "no benchmark writes it"),
        ("engine.json", {"rows": []}, "no provenance"),
        (
            "engine.json",
            {"provenance": _provenance("benchmarks.engine", ["--no-such-option", "1"])},
            "its command no longer exists",
        ),
        (
            "engine.json",
            {"provenance": _provenance("benchmarks.quality", [])},
            "not by benchmarks.engine",
        ),
    ],
)
def test_a_result_whose_command_is_gone_fails(
    tmp_path: Path, name: str, value: dict[str, Any], expected: str
) -> None:
    _write(tmp_path, name, value)
    done = _all("--check", "--results", str(tmp_path))
    assert done.returncode == 1
    assert expected in done.stdout


def test_a_result_kept_for_a_reason_is_a_note_not_a_failure(tmp_path: Path) -> None:
    _write(tmp_path, "cuda_check.json", {"rows": []})
    done = _all("--check", "--results", str(tmp_path))
    assert done.returncode == 0, done.stdout
    assert "kept from an earlier run" in done.stdout


@pytest.mark.slow
def test_quick_reruns_and_compares_the_keys(tmp_path: Path) -> None:
    """The quick rerun of the motion benchmark (seconds, the shipped model) against a
    committed result: the same keys pass; a key the code no longer writes fails."""
    committed_path = REPO / "benchmarks" / "results" / "motion_silence.json"
    committed = json.loads(committed_path.read_text())
    _write(tmp_path, "motion_silence.json", committed)
    same = _all("--quick", "--results", str(tmp_path))
    assert same.returncode == 0, same.stdout + same.stderr
    committed["a_figure_no_longer_written"] = 1.0
    _write(tmp_path, "motion_silence.json", committed)
    changed = _all("--quick", "--results", str(tmp_path))
    assert changed.returncode == 1
    assert "no longer produces the same keys" in changed.stdout
    assert "a_figure_no_longer_written" in changed.stdout
