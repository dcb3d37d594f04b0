"""The generator as two graphs: its spatial encoder and its synthesis path.

The encoder reads only ``[masked target crop, reference crop]``. For a fixed avatar both are
fixed per loop frame, so a live engine runs the encoder once per loop frame, keeps its
feature maps (:class:`engine.facade.AvatarEngine`) and runs only the synthesis per video
frame, which saves the encoder's share of the generator's time with every frame
(benchmarks/README.md, "Engine").

:class:`GeneratorEncoder` and :class:`GeneratorSynthesis` are views of one
:class:`~engine.generator.AvatarGenerator` (its parameters, not copies) that the inference
backends run like any other graph; ``synthesis(*encoder(m, r), g, c)`` is the generator's
forward, operation for operation.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from engine.generator import ONNX_OUTPUTS, AvatarGenerator, GeneratorConfig, write_onnx

ENCODER_INPUTS: tuple[str, ...] = ("masked_target", "reference")
SYNTHESIS_INPUTS: tuple[str, ...] = ("geometry_map", "coefficients")  # after the features
SYNTHESIS_OUTPUTS: tuple[str, ...] = ONNX_OUTPUTS


def feature_names(config: GeneratorConfig) -> tuple[str, ...]:
    """The encoder's outputs (the synthesis path's first inputs), lowest resolution first."""
    return tuple(f"features_{resolution}" for resolution in config.resolutions)


def feature_shapes(config: GeneratorConfig) -> tuple[tuple[int, int, int], ...]:
    """(channels, height, width) of each feature map, lowest resolution first."""
    return tuple((config.width(r), r, r) for r in config.resolutions)


def feature_bytes(config: GeneratorConfig) -> int:
    """Bytes of one image's feature maps in float32."""
    return 4 * sum(c * h * w for c, h, w in feature_shapes(config))


class _GeneratorPart(nn.Module):
    """A part of ``generator``, sharing its parameters."""

    def __init__(self, generator: AvatarGenerator) -> None:
        super().__init__()
        self.generator = generator

    @property
    def config(self) -> GeneratorConfig:
        return self.generator.config


class GeneratorEncoder(_GeneratorPart):
    """``(masked_target, reference) -> feature maps`` of ``generator`` (see
    :meth:`AvatarGenerator.encode`)."""

    def forward(
        self, masked_target: torch.Tensor, reference: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        return self.generator.encode(masked_target, reference)


class GeneratorSynthesis(_GeneratorPart):
    """``(*feature maps, geometry_map, coefficients) -> (crop, mask)`` of ``generator`` (see
    :meth:`AvatarGenerator.synthesize`)."""

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        count = len(self.config.resolutions)
        if len(inputs) != count + 2:
            raise ValueError(f"the synthesis takes {count + 2} inputs, got {len(inputs)}")
        return self.generator.synthesize(inputs[:count], inputs[count], inputs[count + 1])


def export_encoder_onnx(encoder: GeneratorEncoder, path: str | Path, *, opset: int = 17) -> Path:
    """The encoder's graph as ONNX (batch axis dynamic); export form, eval mode."""
    config = encoder.config
    size = config.image_size
    encoder.generator.set_modulation_impl("export")
    image = torch.zeros(1, 3, size, size)
    return write_onnx(
        encoder.eval(),
        (image, image.clone()),
        ENCODER_INPUTS,
        feature_names(config),
        Path(path),
        opset=opset,
    )


def export_synthesis_onnx(
    synthesis: GeneratorSynthesis, path: str | Path, *, opset: int = 17
) -> Path:
    """The synthesis path's graph as ONNX (batch axis dynamic); export form, eval mode."""
    config = synthesis.config
    size = config.image_size
    synthesis.generator.set_modulation_impl("export")
    example = (
        *(torch.zeros(1, *shape) for shape in feature_shapes(config)),
        torch.zeros(1, config.geometry_channels, size, size),
        torch.zeros(1, config.num_coefficients),
    )
    return write_onnx(
        synthesis.eval(),
        example,
        (*feature_names(config), *SYNTHESIS_INPUTS),
        SYNTHESIS_OUTPUTS,
        Path(path),
        opset=opset,
    )
