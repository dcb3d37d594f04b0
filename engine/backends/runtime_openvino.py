"""The graph's ONNX file through OpenVINO's runtime on the CPU (the ``openvino`` extra)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.backends.onnx_file import OnnxFileRuntime
from engine.backends.runtime import BackendError, import_package, one_line


class OpenVinoRuntime(OnnxFileRuntime):
    """``openvino.Core().compile_model`` of the ONNX file on the CPU: latency hint, fp32
    inference precision (never the bf16 some CPUs default to), one infer request.

    ``threads``: OpenVINO's ``INFERENCE_NUM_THREADS`` (None: its default).
    """

    def _check_available(self) -> None:
        self._openvino = import_package("openvino")

    def _open(self, threads: int | None) -> None:
        openvino = self._openvino
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
        }
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            core = openvino.Core()
            compiled = core.compile_model(core.read_model(str(self.artifact)), "CPU", config)
            request = compiled.create_infer_request()
        except Exception as exc:  # OpenVINO raises RuntimeError and its own types
            reason = one_line(exc)
            raise BackendError(f"openvino cannot compile {self.artifact.name}: {reason}") from exc
        self._inputs = [
            _port(compiled.inputs, name, self.artifact.name) for name in self._spec.input_names
        ]
        self._outputs = [
            _port(compiled.outputs, name, self.artifact.name) for name in self._spec.output_names
        ]
        self.version = str(openvino.get_version())
        self._compiled: Any = compiled
        self._request: Any = request

    def run(self, inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        if self._request is None:
            raise RuntimeError("the openvino backend was closed")
        self._request.infer(dict(zip(self._inputs, inputs, strict=True)))
        return tuple(
            np.array(self._request.get_tensor(port).data, dtype=np.float32, copy=True)
            for port in self._outputs
        )

    def close(self) -> None:
        self._request = None
        self._compiled = None


def _port(ports: Sequence[Any], name: str, file_name: str) -> Any:
    """The port of a compiled model that carries the tensor ``name`` (a port can have
    several tensor names; ONNX import keeps the graph's input and output names among them)."""
    for port in ports:
        if name in port.get_names():
            return port
    raise BackendError(f"{file_name} has no tensor named {name!r}")
