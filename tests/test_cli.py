"""The command line: subcommands are listed, and user errors are one line with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from presenter.cli import main


def test_help_lists_the_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "presenter", "--help"], capture_output=True, text=True, check=True
    )
    assert "data" in result.stdout and "train" in result.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "motion", "--data", "{tmp}", "--out", "{tmp}/run"], "not a dataset"),
        (["data", "stats", "{tmp}"], "no clips found"),
        (["data", "synth", "--out", "{tmp}/c", "--minutes", "1", "--voices", "en-zz"], "no voice"),
        (["data", "synth", "--out", "{tmp}/c", "--minutes", "0"], "must be positive"),
        (["data", "prep", "{tmp}/missing.mp4", "--out", "{tmp}/d"], "does not exist"),
    ],
)
def test_user_errors_are_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([part.replace("{tmp}", str(tmp_path)) for part in argv])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert error[-1].startswith("error: ") and message in error[-1]
    assert not any(line.startswith("Traceback") for line in error)
