"""The graph in plain torch: eval mode, inference mode, CPU or CUDA, fp16 on CUDA."""

from __future__ import annotations

from torch import nn

from engine.backends.runtime import RuntimeOptions
from engine.backends.torch_module import TorchModuleRuntime, inference_copy


class EagerRuntime(TorchModuleRuntime):
    """An eval-mode copy of the model, run under ``torch.inference_mode``.

    Uses torch's process-wide intra-op thread setting (``torch.set_num_threads``): setting
    it here would change it for everything else in the process.
    """

    def __init__(self, model: nn.Module, options: RuntimeOptions) -> None:
        super().__init__(model, options)
        self._module = inference_copy(model, self._device, self._dtype)
