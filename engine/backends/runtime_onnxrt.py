"""The graph's ONNX file in an ONNX Runtime CPU session."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from engine.backends.onnx_file import OnnxFileRuntime
from engine.backends.runtime import BackendError, one_line


class OnnxRtRuntime(OnnxFileRuntime):
    """ONNX Runtime, CPU execution provider, all graph optimisations, sequential execution.

    ``threads``: intra-op threads (None: ONNX Runtime's default, one per physical core).
    Idle worker threads sleep rather than spin: in a live pipeline the encoder, the network
    and the viewers' browsers need the cores between model calls (what spinning cost:
    benchmarks/README.md, "Figures behind design choices").
    """

    def _open(self, threads: int | None) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads or 0
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(
                str(self.artifact), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            reason = one_line(exc)
            raise BackendError(f"onnxruntime cannot load {self.artifact.name}: {reason}") from exc
        names = tuple(i.name for i in session.get_inputs())
        if names != self._spec.input_names:
            raise BackendError(
                f"{self.artifact.name} has inputs {names}, expected {self._spec.input_names}"
            )
        self._session: ort.InferenceSession | None = session

    def run(self, inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        if self._session is None:
            raise RuntimeError("the onnxrt backend was closed")
        feed = dict(zip(self._spec.input_names, inputs, strict=True))
        outputs = self._session.run(list(self._spec.output_names), feed)
        return tuple(np.asarray(out) for out in outputs)

    def close(self) -> None:
        self._session = None
