"""The runtimes :mod:`engine.backends` can run the engine's graphs on: one entry each, and
everything that names them derived from here.

``EngineConfig.backend`` and the command line's ``--backend`` take one of
:data:`BACKEND_NAMES` (``auto`` and every runtime's name); ``auto`` tries
:func:`auto_candidates`; a runtime named ``<name>`` is the class ``RuntimeEntry.class_name``
in ``engine/backends/runtime_<name>.py``. :data:`RUNTIMES` is in the order ``auto`` prefers
them: the fastest first, where they run.

This module imports nothing but the standard library, so that the command line can offer the
names without loading torch; a runtime's module is imported when a runtime is built
(:meth:`RuntimeEntry.load`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

AUTO = "auto"  # not a runtime: the fastest of auto_candidates that works here


@dataclass(frozen=True, kw_only=True)
class RuntimeEntry:
    """One runtime: its name, its class, where it runs and what installs it."""

    name: str  # what EngineConfig.backend, --backend and Backend.name say
    class_name: str  # its Runtime subclass, in engine/backends/runtime_<name>.py
    devices: tuple[str, ...]  # the torch device types it runs on: "cpu", "cuda"
    precisions: tuple[str, ...]  # what it computes in ("fp16" on CUDA only)
    auto_on: tuple[str, ...]  # the device types on which auto tries it
    extra: str | None = None  # the presenter extra that installs its package (None: core)

    @property
    def module(self) -> str:
        return f"engine.backends.runtime_{self.name}"

    @property
    def install_hint(self) -> str | None:
        """How to install what it needs (None: the core install has it)."""
        return None if self.extra is None else f"pip install 'presenter[{self.extra}]'"

    def load(self) -> Any:
        """Its runtime class (importing its module imports torch, not its package)."""
        return getattr(importlib.import_module(self.module), self.class_name)


RUNTIMES: tuple[RuntimeEntry, ...] = (
    RuntimeEntry(
        name="tensorrt",
        class_name="TensorRtRuntime",
        devices=("cuda",),
        precisions=("fp32", "fp16"),
        # tried on the CPU as well, where its one fallback line says why it is not used
        auto_on=("cuda", "cpu"),
        extra="gpu",
    ),
    RuntimeEntry(
        name="openvino",
        class_name="OpenVinoRuntime",
        devices=("cpu",),
        precisions=("fp32",),
        auto_on=("cpu",),
        extra="openvino",
    ),
    RuntimeEntry(
        name="onnxrt",
        class_name="OnnxRtRuntime",
        devices=("cpu",),
        precisions=("fp32",),
        auto_on=("cpu",),
    ),
    RuntimeEntry(
        name="compiled",
        class_name="CompiledRuntime",
        devices=("cpu", "cuda"),
        precisions=("fp32", "fp16"),
        # not tried on the CPU: its first build takes minutes (the kernel cache is cold) and
        # it is slower there than the two graph runtimes. Ask for it by name.
        auto_on=("cuda",),
    ),
    RuntimeEntry(
        name="eager",
        class_name="EagerRuntime",
        devices=("cpu", "cuda"),
        precisions=("fp32", "fp16"),
        auto_on=("cpu", "cuda"),
    ),
)
RUNTIME_NAMES: tuple[str, ...] = tuple(entry.name for entry in RUNTIMES)
BACKEND_NAMES: tuple[str, ...] = (AUTO, *RUNTIME_NAMES)


def runtime_entry(name: str) -> RuntimeEntry | None:
    """The runtime called ``name`` (None: there is none; ``auto`` is not a runtime)."""
    return next((entry for entry in RUNTIMES if entry.name == name), None)


def auto_candidates(device_type: str) -> tuple[str, ...]:
    """The runtimes ``auto`` tries on a device of ``device_type``, in order."""
    return tuple(entry.name for entry in RUNTIMES if device_type in entry.auto_on)
