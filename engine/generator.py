"""The avatar generator: a mask-guided style-based renderer of the lower face.

``AvatarGenerator`` follows StyleSync with ReSyncer's rewiring:

- a U-Net spatial encoder reads ``[masked target crop, reference crop]`` (6 channels);
  its feature map at every resolution is a skip into the synthesis path;
- StyleGAN2 synthesis blocks (modulated 3x3 convolutions, bilinear x2 upsampling, a
  modulated 1x1 toRGB per resolution summed in the skip architecture) run from the
  encoder's bottleneck up to the full resolution;
- the 3D dynamics enter twice: as the *noise* inputs, where the geometry map (see
  :mod:`engine.geometry_map`) is area-downsampled to every resolution and added through
  learned per-channel strengths, and as the *style*: a mapping network turns the
  (standardised) dynamics coefficients into the style vector ``w`` that every modulated
  convolution uses.

The network returns the rendered crop (RGB, about [0, 1], not clamped) and a soft blend
mask ``hole + (1 - hole) * sigmoid(logit) * support``: exactly 1 where the input was
hidden (the generator alone knows those pixels), exactly 0 outside the blend support (the
hole grown by ``blend_margin``), learned in the band between. Compositing is *not* part of
the network: :func:`composite` blends the crop over the full, unmasked target crop with
that mask, which is what the frame compositor does when it pastes the crop into the
avatar's frame; training uses the same composite, so the two agree. The target never
leaks into what is learned: wherever the target shows through the composite, at least as
much of it was visible in the masked input. Outside the blend support the composite is the
target, bit for bit.

The lower-face hole is a fixed soft rectangle in normalised crop coordinates (the crops
are stabilised, so the nose base and the chin sit at the same place in every frame); see
:func:`lower_face_region`, :func:`mask_lower_face` and :func:`blend_support_box`.

The modulated convolutions and the synthesis layer are in :mod:`engine.modulated_conv`.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import EngineError
from engine.face3d import DynamicsBasis
from engine.geometry_map import CHANNEL_NAMES, GEOMETRY_CHANNELS, CropProjection, GeometryMapper
from engine.modulated_conv import LRELU_SLOPE, ModulatedConv2d, ModulationImpl, SynthesisLayer
from engine.shapes import assert_shape
from engine.weights import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

_MASK_LOGIT_INIT = 2.0
ONNX_INPUTS: tuple[str, ...] = ("masked_target", "reference", "geometry_map", "coefficients")
ONNX_OUTPUTS: tuple[str, ...] = ("crop", "mask")
CHECKPOINT_KIND = "avatar_generator"


@dataclass(frozen=True, kw_only=True)
class GeneratorConfig:
    """Sizes of :class:`AvatarGenerator`.

    Feature width at resolution ``r`` (encoder and synthesis alike) is
    ``clamp(channel_base // r, channel_min, channel_max)``. The lower-face hole spans
    ``[mask_left, mask_right] x [mask_top, mask_bottom]`` of the crop (fractions of its
    width and height) with edges feathered over ``mask_feather``; the blend support is the
    hole grown by ``blend_margin`` on every side.
    """

    image_size: int = 128
    min_resolution: int = 8
    channel_base: int = 1536
    channel_min: int = 16
    channel_max: int = 192
    style_dim: int = 128
    num_coefficients: int = 16
    mapping_layers: int = 3
    geometry_channels: int = GEOMETRY_CHANNELS
    mask_top: float = 0.47
    mask_bottom: float = 0.9
    mask_left: float = 0.2
    mask_right: float = 0.8
    mask_feather: float = 0.03
    blend_margin: float = 0.04

    def __post_init__(self) -> None:
        if self.min_resolution < 4:
            raise ValueError(f"min_resolution must be at least 4, got {self.min_resolution}")
        ratio = self.image_size // self.min_resolution
        if self.image_size % self.min_resolution or ratio < 2 or ratio & (ratio - 1):
            raise ValueError(
                f"image_size ({self.image_size}) must be min_resolution "
                f"({self.min_resolution}) times a power of two >= 2"
            )
        if not 1 <= self.channel_min <= self.channel_max:
            raise ValueError("need 1 <= channel_min <= channel_max")
        if self.channel_base < 1:
            raise ValueError("channel_base must be positive")
        for name in ("style_dim", "num_coefficients", "mapping_layers", "geometry_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.mask_left < self.mask_right <= 1.0:
            raise ValueError("need 0 <= mask_left < mask_right <= 1")
        if not 0.0 <= self.mask_top < self.mask_bottom <= 1.0:
            raise ValueError("need 0 <= mask_top < mask_bottom <= 1")
        if not 0.0 < self.mask_feather <= 0.25:
            raise ValueError(f"mask_feather must be in (0, 0.25], got {self.mask_feather}")
        if not 0.0 <= self.blend_margin <= 0.25:
            raise ValueError(f"blend_margin must be in [0, 0.25], got {self.blend_margin}")

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Synthesis resolutions, lowest first (the encoder runs them highest first)."""
        count = int(math.log2(self.image_size // self.min_resolution)) + 1
        return tuple(self.min_resolution << level for level in range(count))

    def width(self, resolution: int) -> int:
        return max(self.channel_min, min(self.channel_max, self.channel_base // resolution))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> GeneratorConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown generator config keys {sorted(unknown)}")
        return cls(**dict(values))


def _ramp(coordinate: torch.Tensor, low: float, high: float, feather: float) -> torch.Tensor:
    """1 inside [low, high], smoothstep edges of width ``feather`` centred on the bounds."""
    rise = ((coordinate - (low - feather / 2)) / feather).clamp(0.0, 1.0)
    fall = (((high + feather / 2) - coordinate) / feather).clamp(0.0, 1.0)
    rise = rise * rise * (3 - 2 * rise)
    fall = fall * fall * (3 - 2 * fall)
    return rise * fall


def lower_face_region(config: GeneratorConfig, size: int, *, margin: float = 0.0) -> torch.Tensor:
    """(1, 1, size, size) soft lower-face region in [0, 1] (1 = hidden / generated), grown
    by ``margin`` (a fraction of the crop) on every side."""
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    rows = _ramp(
        centres, config.mask_top - margin, config.mask_bottom + margin, config.mask_feather
    )
    columns = _ramp(
        centres, config.mask_left - margin, config.mask_right + margin, config.mask_feather
    )
    return (rows[:, None] * columns[None, :]).reshape(1, 1, size, size)


def mask_lower_face(target: torch.Tensor, config: GeneratorConfig) -> torch.Tensor:
    """(B, 3, S, S) crops in [0, 1] -> the same with the lower-face hole blacked out."""
    assert_shape("target", target, (None, 3, config.image_size, config.image_size))
    region = lower_face_region(config, config.image_size).to(target)
    return target * (1.0 - region)


def blend_support_box(config: GeneratorConfig) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) generator pixels where the blend mask can be non-zero:
    the blend support's bounding box and one pixel more on every side (the whole crop when
    the support is empty). Outside it the composite is the target, so the compositor blends
    only inside."""
    size = config.image_size
    support = lower_face_region(config, size, margin=config.blend_margin)[0, 0].numpy() > 1e-4
    rows, columns = np.flatnonzero(support.any(axis=1)), np.flatnonzero(support.any(axis=0))
    if rows.size == 0:
        return 0, size, 0, size
    return (
        max(0, int(rows[0]) - 1),
        min(size, int(rows[-1]) + 2),
        max(0, int(columns[0]) - 1),
        min(size, int(columns[-1]) + 2),
    )


def composite(crop: torch.Tensor, mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The generated crop blended over the (unmasked) target crop: ``mask * crop +
    (1 - mask) * target``; equal to the target wherever the mask is 0."""
    if crop.shape != target.shape or mask.shape != (crop.shape[0], 1, *crop.shape[2:]):
        raise ValueError(
            f"crop {tuple(crop.shape)}, mask {tuple(mask.shape)} and target "
            f"{tuple(target.shape)} do not match"
        )
    return mask * crop + (1.0 - mask) * target


def _conv(in_channels: int, out_channels: int, *, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)


class SpatialEncoder(nn.Module):
    """U-Net down path over [masked target, reference]: one feature map per resolution."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        resolutions = config.resolutions[::-1]  # highest first
        self.resolutions = resolutions
        self.stem = _conv(6, config.width(resolutions[0]))
        self.blocks = nn.ModuleList(_conv(config.width(r), config.width(r)) for r in resolutions)
        self.downs = nn.ModuleList(
            _conv(config.width(r), config.width(r // 2), stride=2) for r in resolutions[:-1]
        )

    def forward(self, images: torch.Tensor) -> dict[int, torch.Tensor]:
        x = F.leaky_relu(self.stem(images), LRELU_SLOPE)
        skips: dict[int, torch.Tensor] = {}
        for index, resolution in enumerate(self.resolutions):
            x = F.leaky_relu(self.blocks[index](x), LRELU_SLOPE)
            skips[resolution] = x
            if index < len(self.downs):
                x = F.leaky_relu(self.downs[index](x), LRELU_SLOPE)
        return skips


class MappingNetwork(nn.Module):
    """Standardised dynamics coefficients (B, K) -> style vector w (B, style_dim)."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = config.num_coefficients
        for _ in range(config.mapping_layers):
            layers += [nn.Linear(width, config.style_dim), nn.LeakyReLU(LRELU_SLOPE)]
            width = config.style_dim
        self.layers = nn.Sequential(*layers)

    def forward(self, coefficients: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.layers(coefficients)
        return result


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis path: (upsample,) modulated convs, skip, toRGB."""

    def __init__(self, config: GeneratorConfig, resolution: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.first = resolution == config.min_resolution
        width = config.width(resolution)
        in_width = width if self.first else config.width(resolution // 2)
        layer = {"style_dim": config.style_dim, "geometry_channels": config.geometry_channels}
        self.conv0 = SynthesisLayer(in_channels=in_width, out_channels=width, **layer)
        self.conv1 = SynthesisLayer(in_channels=width, out_channels=width, **layer)
        self.to_rgb = ModulatedConv2d(
            in_channels=width,
            out_channels=4,
            kernel_size=1,
            style_dim=config.style_dim,
            demodulate=False,
        )

    def forward(
        self,
        x: torch.Tensor,
        rgb: torch.Tensor | None,
        skip: torch.Tensor,
        w: torch.Tensor,
        geometry: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.first:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = self.conv0(x, w, geometry)
        if not self.first:
            x = x + skip
        x = self.conv1(x, w, geometry)
        out = self.to_rgb(x, w)
        if rgb is not None:
            out = out + F.interpolate(rgb, scale_factor=2.0, mode="bilinear", align_corners=False)
        return x, out


class AvatarGenerator(nn.Module):
    """(masked target, reference, geometry map, coefficients) -> (crop, mask).

    Shapes: ``masked_target`` and ``reference`` (B, 3, S, S) in [0, 1] (the target masked
    with :func:`mask_lower_face`), ``geometry_map`` (B, G, S, S) in [0, 1],
    ``coefficients`` (B, K) raw dynamics coefficients (standardised inside with the
    ``coefficient_std`` buffer). Returns ``crop`` (B, 3, S, S) and ``mask`` (B, 1, S, S)
    in [0, 1] (1 inside the hole, 0 outside the blend support); combine them with
    :func:`composite`.
    """

    coefficient_std: torch.Tensor
    hole: torch.Tensor
    blend_support: torch.Tensor

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = SpatialEncoder(config)
        self.mapping = MappingNetwork(config)
        self.blocks = nn.ModuleList(SynthesisBlock(config, r) for r in config.resolutions)
        self.register_buffer("coefficient_std", torch.ones(config.num_coefficients))
        self.register_buffer("hole", lower_face_region(config, config.image_size), persistent=False)
        self.register_buffer(
            "blend_support",
            lower_face_region(config, config.image_size, margin=config.blend_margin),
            persistent=False,
        )
        last = self.blocks[-1]
        assert isinstance(last, SynthesisBlock)
        with torch.no_grad():
            last.to_rgb.bias[3].fill_(_MASK_LOGIT_INIT)

    def set_coefficient_std(self, std: Sequence[float] | torch.Tensor) -> None:
        """Per-coefficient scale the mapping network divides by (the training data's std)."""
        values = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if values.shape != (self.config.num_coefficients,) or bool((values <= 0).any()):
            raise ValueError(
                f"need {self.config.num_coefficients} positive standard deviations, got "
                f"{tuple(values.shape)}"
            )
        self.coefficient_std.copy_(values)

    def set_modulation_impl(self, impl: ModulationImpl) -> None:
        for module in self.modules():
            if isinstance(module, ModulatedConv2d):
                module.impl = impl

    def forward(
        self,
        masked_target: torch.Tensor,
        reference: torch.Tensor,
        geometry_map: torch.Tensor,
        coefficients: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.config
        size = config.image_size
        assert_shape("masked_target", masked_target, (None, 3, size, size))
        batch = masked_target.shape[0]
        assert_shape("reference", reference, (batch, 3, size, size))
        assert_shape("geometry_map", geometry_map, (batch, config.geometry_channels, size, size))
        assert_shape("coefficients", coefficients, (batch, config.num_coefficients))

        return self.synthesize(self.encode(masked_target, reference), geometry_map, coefficients)

    def encode(
        self, masked_target: torch.Tensor, reference: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """The spatial encoder's feature map at every resolution, lowest first (the skips of
        the synthesis path). It reads only the two images: for a fixed avatar it depends on
        the loop frame alone, not on the dynamics."""
        images = torch.cat([masked_target, reference], dim=1) * 2.0 - 1.0
        skips = self.encoder(images)
        return tuple(skips[resolution] for resolution in self.config.resolutions)

    def synthesize(
        self,
        features: Sequence[torch.Tensor],
        geometry_map: torch.Tensor,
        coefficients: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(crop, mask) from the encoder's ``features`` (:meth:`encode`), the geometry map and
        the dynamics coefficients."""
        config = self.config
        size = config.image_size
        if len(features) != len(config.resolutions):
            raise ValueError(
                f"need {len(config.resolutions)} feature maps (one per resolution), "
                f"got {len(features)}"
            )
        skips = dict(zip(config.resolutions, features, strict=True))
        w = self.mapping(coefficients / self.coefficient_std)
        geometry = {size: geometry_map}
        for resolution in reversed(config.resolutions[:-1]):
            geometry[resolution] = F.avg_pool2d(geometry[resolution * 2], 2)

        x = skips[config.min_resolution]
        rgb: torch.Tensor | None = None
        for resolution, block in zip(config.resolutions, self.blocks, strict=True):
            x, rgb = block(x, rgb, skips[resolution], w, geometry[resolution])
        assert rgb is not None
        crop = rgb[:, :3] * 0.5 + 0.5
        mask = self.hole + (1.0 - self.hole) * torch.sigmoid(rgb[:, 3:]) * self.blend_support
        return crop, mask


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def export_onnx(
    generator: AvatarGenerator, path: str | Path, *, opset: int = 17, batch: int = 1
) -> Path:
    """Write the per-frame graph (inputs :data:`ONNX_INPUTS`, outputs :data:`ONNX_OUTPUTS`,
    dynamic batch) to ``path``; the generator is put in eval mode, export form."""
    config = generator.config
    size = config.image_size
    generator = generator.eval()
    generator.set_modulation_impl("export")
    parameter = next(generator.parameters())
    example = (
        torch.zeros(batch, 3, size, size, dtype=parameter.dtype),
        torch.zeros(batch, 3, size, size, dtype=parameter.dtype),
        torch.zeros(batch, config.geometry_channels, size, size, dtype=parameter.dtype),
        torch.zeros(batch, config.num_coefficients, dtype=parameter.dtype),
    )
    write_onnx(generator, example, ONNX_INPUTS, ONNX_OUTPUTS, Path(path), opset=opset)
    log.info("exported the generator (%d px) to %s", size, path)
    return Path(path)


def write_onnx(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    path: Path,
    *,
    opset: int = 17,
) -> Path:
    """``module`` (a generator graph) as ONNX at ``path``, every input and output with a
    dynamic batch axis."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic = {name: {0: "batch"} for name in (*input_names, *output_names)}
    # The TorchScript-based exporter: the torch.export-based one needs onnxscript, which is
    # not a dependency. Its deprecation notice is not actionable here.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=list(input_names),
            output_names=list(output_names),
            opset_version=opset,
            dynamic_axes=dynamic,
            do_constant_folding=True,
            dynamo=False,
        )
    return path


@dataclass(frozen=True, kw_only=True)
class LoadedGenerator:
    """A generator checkpoint: the network (eval mode) and what turns dynamics coefficients
    of each subject into its geometry map."""

    generator: AvatarGenerator
    basis: DynamicsBasis
    identities: dict[str, np.ndarray]
    projections: dict[str, CropProjection]
    header: dict[str, Any]

    @property
    def config(self) -> GeneratorConfig:
        return self.generator.config

    def mapper(self, subject: str) -> GeometryMapper:
        if subject not in self.projections:
            raise EngineError(
                f"the generator knows subjects {sorted(self.projections)}, not {subject!r}"
            )
        return GeometryMapper(
            basis=self.basis,
            identity=self.identities[subject],
            projection=self.projections[subject],
            size=self.config.image_size,
        )


def save_generator(
    path: str | Path,
    generator: AvatarGenerator,
    *,
    basis: DynamicsBasis,
    identities: Mapping[str, np.ndarray],
    projections: Mapping[str, CropProjection],
    training: Mapping[str, Any],
) -> Path:
    """Write weights (``generator.*``), the dynamics basis (``basis/*``), identity shapes
    (``identity/<subject>``) and crop projections (``projection/<subject>``) with a header
    holding the GeneratorConfig, the geometry-map layout and ``training`` (what it was
    trained on)."""
    missing = set(projections) - set(identities)
    if missing:
        raise ValueError(f"subjects {sorted(missing)} have a projection but no identity shape")
    tensors: dict[str, torch.Tensor] = {
        f"generator.{name}": value for name, value in generator.state_dict().items()
    }
    for name, array in basis.to_arrays().items():
        tensors[f"basis/{name}"] = torch.from_numpy(np.ascontiguousarray(array))
    for subject in projections:
        tensors[f"identity/{subject}"] = torch.from_numpy(
            np.asarray(identities[subject], dtype=np.float64)
        )
        tensors[f"projection/{subject}"] = torch.from_numpy(projections[subject].to_array())
    header = {
        "kind": CHECKPOINT_KIND,
        "generator": generator.config.to_dict(),
        "geometry_map": {"channels": list(CHANNEL_NAMES), "line_width": 0},
        "subjects": sorted(projections),
        "projections": {s: projections[s].to_array().tolist() for s in sorted(projections)},
        "training": dict(training),
    }
    path = Path(path)
    save_checkpoint(path, tensors, header)
    return path


def load_generator(path: str | Path) -> LoadedGenerator:
    """Read a checkpoint written by :func:`save_generator`; the network is in eval mode."""
    tensors, header = load_checkpoint(Path(path))
    if header.get("kind") != CHECKPOINT_KIND:
        raise EngineError(f"{path} is not an avatar generator checkpoint")
    generator = AvatarGenerator(GeneratorConfig.from_dict(header["generator"]))
    state = {
        k.removeprefix("generator."): v for k, v in tensors.items() if k.startswith("generator.")
    }
    generator.load_state_dict(state)
    basis = DynamicsBasis.from_arrays(
        {k.removeprefix("basis/"): v.numpy() for k, v in tensors.items() if k.startswith("basis/")}
    )
    subjects = list(header["subjects"])
    return LoadedGenerator(
        generator=generator.eval(),
        basis=basis,
        identities={s: tensors[f"identity/{s}"].numpy() for s in subjects},
        projections={
            s: CropProjection.from_array(tensors[f"projection/{s}"].numpy()) for s in subjects
        },
        header=header,
    )
