"""The networks' one shape check: a named tensor against the shape it must have.

The motion model and the generator check their inputs with :func:`assert_shape` (in the
spirit of StyleGAN3's ``misc.assert_shape``), so a wrong input fails at the network's door
with the input's name and both shapes rather than deep inside a matmul. While a graph is
being traced (ONNX export, TorchScript) or compiled the check is skipped: shapes are
symbolic there, and the exported graph must not hold the comparison.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _capturing() -> bool:
    """Whether the running code is being traced or compiled rather than run."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


def assert_shape(name: str, tensor: torch.Tensor, shape: Sequence[int | None]) -> None:
    """Raise a ValueError naming ``name`` unless ``tensor`` has ``shape`` (None matches any
    size; shown as ``*``)."""
    if _capturing():
        return
    actual = tuple(tensor.shape)
    if len(actual) != len(shape) or any(
        want is not None and want != have for want, have in zip(shape, actual, strict=True)
    ):
        wanted = "(" + ", ".join("*" if want is None else str(want) for want in shape) + ")"
        raise ValueError(f"{name} must have shape {wanted}, got {actual}")
