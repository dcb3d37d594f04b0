"""CPU priority of the live path (presenter.priority): set for the process and inherited by
the engine process; refused without privileges in one line; bad values refused."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from presenter.priority import set_nice

# In a child interpreter: a nice value once raised cannot be lowered again without root.
SCRIPT = """
import logging, os, sys
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
from presenter.priority import set_nice
import multiprocessing
print("set", set_nice(int(sys.argv[1])))
context = multiprocessing.get_context("spawn")
with context.Pool(1) as pool:
    print("child", pool.apply(os.getpriority, (os.PRIO_PROCESS, 0)))
print("self", os.getpriority(os.PRIO_PROCESS, 0))
"""


def _run(value: int) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(value)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.splitlines()


def test_a_higher_nice_value_is_set_and_inherited_by_processes_started_after() -> None:
    start = os.getpriority(os.PRIO_PROCESS, 0)
    target = min(19, start + 3)  # lowering the priority is always allowed
    lines = _run(target)
    assert "set True" in lines
    assert f"child {target}" in lines and f"self {target}" in lines


def test_a_lower_nice_value_is_set_where_allowed_and_said_in_one_line_where_not() -> None:
    start = os.getpriority(os.PRIO_PROCESS, 0)
    lines = _run(start - 5) if start - 5 >= -20 else pytest.skip("already at the top")
    if os.geteuid() == 0:
        assert "set True" in lines and f"child {start - 5}" in lines
    else:  # without privileges: one line, normal priority, nothing raised
        assert "set False" in lines and f"child {start}" in lines
        assert sum("needs root or CAP_SYS_NICE" in line for line in lines) == 1


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError, match=r"-20\.\.19"):
        set_nice(20)
    done = subprocess.run(
        [sys.executable, "-m", "presenter", "serve", "--nice", "40", "--source", "none"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "error: --nice takes -20..19, not 40"
