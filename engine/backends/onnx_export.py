"""The graph as an ONNX file in the artefact cache (shared by onnxrt and openvino)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from engine.backends.artifact_cache import ArtifactCache, CacheKey
from engine.backends.graphs import export_graph_onnx
from engine.backends.runtime import BackendError, one_line

EXPORTER = "torch.onnx"
EXPORT_OPSET = 17  # what engine.motion.export_onnx and engine.generator.export_onnx write


def onnx_key(model: nn.Module, shapes: Mapping[str, Sequence[int]]) -> CacheKey:
    """The key of ``model``'s ONNX file: an fp32 graph that any device can run, so the
    device is "any" and the runtime is the exporter (torch's version and the opset)."""
    return CacheKey.for_model(
        model,
        shapes=shapes,
        precision="fp32",
        runtime=EXPORTER,
        runtime_version=f"{torch.__version__} opset {EXPORT_OPSET}",
        device="any",
    )


def cached_onnx(
    model: nn.Module, shapes: Mapping[str, Sequence[int]], cache: ArtifactCache
) -> tuple[Path, bool]:
    """The ONNX file of ``model``'s graph and whether it came from the cache."""
    try:
        return cache.fetch(
            onnx_key(model, shapes), ".onnx", lambda path: export_graph_onnx(model, path)
        )
    except BackendError:
        raise
    except Exception as exc:  # the exporter raises many types
        raise BackendError(f"ONNX export failed: {one_line(exc)}") from exc
