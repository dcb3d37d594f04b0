"""The two per-frame graphs: their inputs, outputs, shapes and ONNX export.

A graph is named by the model that computes it: :class:`engine.motion.MotionTransformer`
(``mel``, ``style`` -> ``coefficients``), :class:`engine.generator.AvatarGenerator`
(:data:`engine.generator.ONNX_INPUTS` -> :data:`engine.generator.ONNX_OUTPUTS`), or the
generator's two parts (:mod:`engine.generator_parts`): its ``encoder`` (masked target,
reference -> feature maps) and its ``synthesis`` (feature maps, geometry map, coefficients
-> crop, mask). A backend is
built for *planned shapes*: every input's full shape, batch first, the same batch for all
inputs (see :func:`input_shapes`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch import nn

from engine import generator as generator_module
from engine import generator_parts as parts_module
from engine import motion as motion_module
from engine.generator import AvatarGenerator
from engine.generator_parts import GeneratorEncoder, GeneratorSynthesis
from engine.motion import MotionTransformer

GraphKind = Literal["motion", "generator", "encoder", "synthesis"]
MOTION_INPUTS: tuple[str, ...] = ("mel", "style")
MOTION_OUTPUTS: tuple[str, ...] = ("coefficients",)
Shapes = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class GraphSpec:
    """Names and per-item shapes (no batch axis) of a graph's inputs, and its outputs."""

    kind: GraphKind
    input_names: tuple[str, ...]
    item_shapes: tuple[tuple[int, ...], ...]
    output_names: tuple[str, ...]

    def shapes(self, batch: int) -> Shapes:
        """Full input shapes for ``batch`` items."""
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        return {
            name: (batch, *item)
            for name, item in zip(self.input_names, self.item_shapes, strict=True)
        }

    def check_shapes(self, shapes: Mapping[str, Sequence[int]]) -> tuple[Shapes, int]:
        """Planned shapes as a dict in input order, and their batch; a ValueError naming what
        does not fit the graph."""
        names = set(shapes)
        if names != set(self.input_names):
            raise ValueError(
                f"the {self.kind} graph's inputs are {', '.join(self.input_names)}; "
                f"got shapes for {', '.join(sorted(names)) or 'none'}"
            )
        planned: Shapes = {}
        batches = set()
        for name, item in zip(self.input_names, self.item_shapes, strict=True):
            shape = tuple(int(size) for size in shapes[name])
            if len(shape) != len(item) + 1 or shape[1:] != item or shape[0] < 1:
                raise ValueError(
                    f"{self.kind} input {name!r} must have shape (B, "
                    f"{', '.join(map(str, item))}) with B >= 1, got {shape}"
                )
            planned[name] = shape
            batches.add(shape[0])
        if len(batches) != 1:
            raise ValueError(f"all {self.kind} inputs must have the same batch, got {planned}")
        return planned, batches.pop()

    def check_inputs(self, inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        """Inputs in order as float32 C-contiguous arrays; a ValueError when their number or
        shapes do not fit the graph."""
        if len(inputs) != len(self.input_names):
            raise ValueError(
                f"the {self.kind} graph takes {len(self.input_names)} inputs "
                f"({', '.join(self.input_names)}), got {len(inputs)}"
            )
        arrays = tuple(np.ascontiguousarray(array, dtype=np.float32) for array in inputs)
        self.check_shapes(
            {name: array.shape for name, array in zip(self.input_names, arrays, strict=True)}
        )
        return arrays

    def example_inputs(
        self, shapes: Mapping[str, Sequence[int]], seed: int = 0
    ) -> tuple[np.ndarray, ...]:
        """Random float32 inputs of the planned shapes (for warm-up, timing and checks)."""
        planned, _ = self.check_shapes(shapes)
        rng = np.random.default_rng(seed)
        arrays = []
        for name in self.input_names:
            if name == "mel":  # raw log-mel: around the speech range
                array = rng.normal(-6.0, 2.0, planned[name])
            elif name.startswith("features_"):  # the encoder's leaky-ReLU feature maps
                array = rng.normal(0.0, 1.0, planned[name])
            elif name in ("style", "coefficients"):
                array = rng.normal(0.0, 0.5, planned[name])
            else:  # images and geometry maps in [0, 1]
                array = rng.uniform(0.0, 1.0, planned[name])
            arrays.append(array.astype(np.float32))
        return tuple(arrays)


def graph_spec(model: nn.Module) -> GraphSpec:
    """The graph ``model`` computes; a TypeError for any other module."""
    if isinstance(model, MotionTransformer):
        config = model.config
        return GraphSpec(
            kind="motion",
            input_names=MOTION_INPUTS,
            item_shapes=((config.window_frames, config.num_mels), (config.style_dim,)),
            output_names=MOTION_OUTPUTS,
        )
    if isinstance(model, AvatarGenerator):
        gconfig = model.config
        size = gconfig.image_size
        return GraphSpec(
            kind="generator",
            input_names=tuple(generator_module.ONNX_INPUTS),
            item_shapes=(
                (3, size, size),
                (3, size, size),
                (gconfig.geometry_channels, size, size),
                (gconfig.num_coefficients,),
            ),
            output_names=tuple(generator_module.ONNX_OUTPUTS),
        )
    if isinstance(model, GeneratorEncoder):
        size = model.config.image_size
        return GraphSpec(
            kind="encoder",
            input_names=parts_module.ENCODER_INPUTS,
            item_shapes=((3, size, size), (3, size, size)),
            output_names=parts_module.feature_names(model.config),
        )
    if isinstance(model, GeneratorSynthesis):
        gconfig = model.config
        size = gconfig.image_size
        return GraphSpec(
            kind="synthesis",
            input_names=(*parts_module.feature_names(gconfig), *parts_module.SYNTHESIS_INPUTS),
            item_shapes=(
                *parts_module.feature_shapes(gconfig),
                (gconfig.geometry_channels, size, size),
                (gconfig.num_coefficients,),
            ),
            output_names=parts_module.SYNTHESIS_OUTPUTS,
        )
    hint = " (pass its .transformer)" if isinstance(model, motion_module.MotionModel) else ""
    raise TypeError(
        f"backends run a MotionTransformer, an AvatarGenerator or one of its parts, not "
        f"{type(model).__name__}{hint}"
    )


def input_shapes(model: nn.Module, batch: int = 1) -> Shapes:
    """Planned input shapes of ``model``'s graph for ``batch`` items."""
    return graph_spec(model).shapes(batch)


def model_config(model: nn.Module) -> dict[str, Any]:
    """The model's config as a JSON-able dict (part of every cache key)."""
    config = getattr(model, "config", None)
    to_dict = getattr(config, "to_dict", None)
    return dict(to_dict()) if callable(to_dict) else {}


def export_graph_onnx(model: nn.Module, path: Path) -> Path:
    """Write ``model``'s graph as ONNX (dynamic batch) to ``path`` with the model's own
    exporter, from a copy: the caller's model is left as it was."""
    spec = graph_spec(model)
    clone = copy.deepcopy(model).cpu().float().eval()
    if spec.kind == "motion":
        assert isinstance(clone, MotionTransformer)
        return motion_module.export_onnx(clone, path)
    if spec.kind == "encoder":
        assert isinstance(clone, GeneratorEncoder)
        return parts_module.export_encoder_onnx(clone, path)
    if spec.kind == "synthesis":
        assert isinstance(clone, GeneratorSynthesis)
        return parts_module.export_synthesis_onnx(clone, path)
    assert isinstance(clone, AvatarGenerator)
    return generator_module.export_onnx(clone, path)
