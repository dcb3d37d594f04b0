"""The graph as an ONNX file in the artefact cache, and what the CPU runtimes that load it
share (ONNX Runtime, OpenVINO)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from engine.backends.artifact_cache import ArtifactCache, CacheKey
from engine.backends.graphs import export_graph_onnx, graph_spec
from engine.backends.runtime import BackendError, Runtime, RuntimeOptions, one_line

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


class OnnxFileRuntime(Runtime):
    """A runtime that loads the graph's cached ONNX file (``artifact``) on the CPU, fp32.

    The constructor checks ``options.threads`` (the runtime's intra-op threads; None: its
    default), calls :meth:`_check_available`, exports (or finds in the cache) the ONNX file
    and then :meth:`_open` builds the subclass's session on it.
    """

    artifact: Path  # the ONNX file
    cache_hit: bool

    def __init__(self, model: nn.Module, options: RuntimeOptions) -> None:
        super().__init__(model, options)
        threads = options.threads
        if threads is not None and threads < 1:
            raise BackendError(f"threads must be at least 1, got {threads}")
        self._check_available()
        self._spec = graph_spec(model)
        self.artifact, self.cache_hit = cached_onnx(model, options.shapes, options.cache)
        self._open(threads)

    def _check_available(self) -> None:
        """Raise a BackendError if the runtime cannot be used here (before the export)."""

    @abstractmethod
    def _open(self, threads: int | None) -> None:
        """Load ``self.artifact`` (inputs and outputs named as in ``self._spec``)."""
