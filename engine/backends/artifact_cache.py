"""Compiled artefacts on disk (ONNX files, TensorRT programs), keyed by what made them.

An artefact lives under ``presenter_home() / "cache"`` (or a given root) as
``<graph>-<runtime>-<digest><suffix>``, with a JSON sidecar that spells out the key. The
digest is a SHA-256 of: the graph kind, the model's config, its weights (every state-dict
tensor: name, dtype, shape and bytes, plus non-persistent buffers), the planned input
shapes, the precision, the runtime's name and version, and the device's name. Files are
written to a temporary name in the same folder and renamed into place, so a reader never
sees a half-written artefact and two writers at once leave one whole file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.backends.graphs import graph_spec, model_config
from engine.weights import presenter_home

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


def default_cache_root() -> Path:
    return presenter_home() / "cache"


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of every state-dict tensor (name, dtype, shape, bytes) and every buffer that
    the state dict leaves out."""
    digest = hashlib.sha256()
    tensors: dict[str, torch.Tensor] = dict(model.state_dict())
    for name, buffer in model.named_buffers():
        tensors.setdefault(name, buffer)
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True, kw_only=True)
class CacheKey:
    """Everything a compiled artefact depends on."""

    graph: str
    config: str  # JSON of the model config
    weights: str  # weights_digest
    shapes: str  # JSON of the planned input shapes
    precision: str
    runtime: str
    runtime_version: str
    device: str

    @classmethod
    def for_model(
        cls,
        model: nn.Module,
        *,
        shapes: Mapping[str, Sequence[int]],
        precision: str,
        runtime: str,
        runtime_version: str,
        device: str,
    ) -> CacheKey:
        spec = graph_spec(model)
        return cls(
            graph=spec.kind,
            config=json.dumps(model_config(model), sort_keys=True),
            weights=weights_digest(model),
            shapes=json.dumps({name: list(shapes[name]) for name in spec.input_names}),
            precision=precision,
            runtime=runtime,
            runtime_version=runtime_version,
            device=device,
        )

    def digest(self) -> str:
        record = {"format": CACHE_FORMAT, **asdict(self)}
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()

    def file_name(self, suffix: str) -> str:
        runtime = "".join(c if c.isalnum() else "_" for c in self.runtime)
        return f"{self.graph}-{runtime}-{self.digest()[:32]}{suffix}"


class ArtifactCache:
    """A folder of compiled artefacts; :meth:`fetch` builds one on a miss."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_root()

    def path(self, key: CacheKey, suffix: str) -> Path:
        return self.root / key.file_name(suffix)

    def fetch(self, key: CacheKey, suffix: str, build: Callable[[Path], Any]) -> tuple[Path, bool]:
        """The artefact of ``key`` and whether it was already cached. On a miss,
        ``build(path)`` writes it to a temporary path (ending in ``suffix``) that is then
        renamed into place."""
        final = self.path(key, suffix)
        if final.is_file():
            log.debug("cache hit: %s", final)
            return final, True
        self.root.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(
            prefix=f".{final.name.removesuffix(suffix)}.", suffix=f".partial{suffix}", dir=self.root
        )
        os.close(handle)
        partial = Path(name)
        try:
            build(partial)
            if not partial.is_file() or partial.stat().st_size == 0:
                raise OSError(f"building {final.name} wrote nothing")
            self._write_sidecar(final, key)
            os.replace(partial, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
        log.info("cached %s", final)
        return final, False

    def _write_sidecar(self, final: Path, key: CacheKey) -> None:
        """``<artefact>.json``: the key spelled out (for people; never read back)."""
        record = {"format": CACHE_FORMAT, "digest": key.digest(), **asdict(key)}
        record["config"] = json.loads(key.config)
        record["shapes"] = json.loads(key.shapes)
        sidecar = final.with_name(final.name + ".json")
        partial = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        os.replace(partial, sidecar)
