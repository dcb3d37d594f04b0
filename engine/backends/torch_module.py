"""Placing a torch model for inference: device checks, an eval-mode copy, array transfer;
and the base of the runtimes that call a torch module (eager, compiled, tensorrt)."""

from __future__ import annotations

import copy
import platform
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.backends.runtime import BackendError, Precision, Runtime, RuntimeOptions


def resolve_device(device: str) -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as a torch device; a BackendError when CUDA is
    asked for and absent."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise BackendError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'") from exc
    if resolved.type == "cpu":
        return resolved
    if resolved.type != "cuda":
        raise BackendError(f"device {device!r} is not supported: use 'cpu', 'cuda' or 'cuda:N'")
    if not torch.cuda.is_available():
        raise BackendError(
            f"device {device!r} needs CUDA, which this torch ({torch.__version__}) cannot use"
        )
    index = resolved.index if resolved.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise BackendError(f"device {device!r}: only {torch.cuda.device_count()} CUDA devices")
    return torch.device("cuda", index)


def torch_dtype(precision: Precision, device: torch.device) -> torch.dtype:
    if precision == "fp16":
        if device.type != "cuda":
            raise BackendError("fp16 needs a CUDA device: use precision='fp32' on the CPU")
        return torch.float16
    return torch.float32


def device_name(device: torch.device) -> str:
    """What a compiled artefact for ``device`` is specific to (GPU model and architecture)."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"{torch.cuda.get_device_name(device)} sm_{major}{minor}"
    return f"cpu {platform.machine()} {platform.processor()}".strip()


def inference_copy(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """An eval-mode copy of ``model`` on ``device`` in ``dtype``, gradients off; the
    caller's model is not touched."""
    clone = copy.deepcopy(model).eval()
    clone.requires_grad_(False)
    return clone.to(device=device, dtype=dtype)


def to_tensors(
    arrays: Sequence[np.ndarray], device: torch.device, dtype: torch.dtype
) -> list[torch.Tensor]:
    return [torch.from_numpy(array).to(device=device, dtype=dtype) for array in arrays]


def to_arrays(outputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[np.ndarray, ...]:
    """Model outputs (one tensor or a tuple) as float32 numpy arrays on the host (copies)."""
    tensors = (outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)
    return tuple(t.detach().to(device="cpu", dtype=torch.float32).numpy().copy() for t in tensors)


class TorchModuleRuntime(Runtime):
    """A torch module on the options' device in the precision's dtype, called under
    ``torch.inference_mode``; the subclass sets ``_module`` (an eval-mode copy, its
    ``torch.compile``, a loaded Torch-TensorRT program)."""

    def __init__(self, model: nn.Module, options: RuntimeOptions) -> None:
        super().__init__(model, options)
        self._device = options.device
        self._dtype = torch_dtype(options.precision, self._device)
        self._module: Callable[..., Any] | None = None

    def run(self, inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        if self._module is None:
            raise RuntimeError(f"this {type(self).__name__} was closed")
        tensors = to_tensors(inputs, self._device, self._dtype)
        with torch.inference_mode():
            outputs = self._module(*tensors)
            return to_arrays(outputs)

    def close(self) -> None:
        self._module = None
