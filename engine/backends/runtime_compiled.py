"""The graph through ``torch.compile``: Inductor on the CPU, CUDA graphs on CUDA.

On CUDA the module is compiled with ``mode="reduce-overhead"`` (Inductor kernels replayed
as CUDA graphs: one launch per frame); on the CPU with the default mode (Inductor's C++
kernels; needs a C++ compiler). Compilation happens when the backend is built, with one
run at the planned shapes; a batch of another size compiles once more on first use. A
cold compile takes from seconds to minutes (Inductor caches its kernels on disk, so later
processes start faster).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from engine.backends.graphs import graph_spec
from engine.backends.runtime import BackendError, RuntimeOptions, one_line
from engine.backends.torch_module import TorchModuleRuntime, inference_copy


class CompiledRuntime(TorchModuleRuntime):
    """``torch.compile`` of an eval-mode copy of the model, compiled at the planned shapes."""

    def __init__(self, model: nn.Module, options: RuntimeOptions) -> None:
        super().__init__(model, options)
        self._cuda = self._device.type == "cuda"
        module = inference_copy(model, self._device, self._dtype)
        if self._cuda:
            self._module = torch.compile(module, mode="reduce-overhead")
        else:
            self._module = torch.compile(module)
        spec = graph_spec(model)
        example = spec.example_inputs(options.shapes)
        try:
            self.run(example)  # compiles now rather than on the first frame
        except Exception as exc:  # dynamo / inductor / the C++ compiler raise many types
            raise BackendError(f"torch.compile failed on {self.device}: {one_line(exc)}") from exc

    def run(self, inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        if self._cuda:
            # A new CUDA-graph step: outputs of the previous replay may be overwritten,
            # which is fine since they were copied to the host already.
            torch.compiler.cudagraph_mark_step_begin()
        return super().run(inputs)
