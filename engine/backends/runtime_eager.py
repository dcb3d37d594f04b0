"""The graph in plain torch: eval mode, inference mode, CPU or CUDA, fp16 on CUDA."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from engine.backends.runtime import Runtime, RuntimeOptions
from engine.backends.torch_module import (
    inference_copy,
    to_arrays,
    to_tensors,
    torch_dtype,
)


class EagerRuntime(Runtime):
    """An eval-mode copy of the model, run under ``torch.inference_mode``.

    Uses torch's process-wide intra-op thread setting (``torch.set_num_threads``): setting
    it here would change it for everything else in the process.
    """

    def __init__(self, model: nn.Module, options: RuntimeOptions) -> None:
        super().__init__(model, options)
        self._device = options.device
        self._dtype = torch_dtype(options.precision, self._device)
        self._module: nn.Module | None = inference_copy(model, self._device, self._dtype)

    def run(self, inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        if self._module is None:
            raise RuntimeError("the eager backend was closed")
        with torch.inference_mode():
            outputs = self._module(*to_tensors(inputs, self._device, self._dtype))
        return to_arrays(outputs)

    def close(self) -> None:
        self._module = None
