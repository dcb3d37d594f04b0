"""StyleGAN2's modulated convolution and the synthesis layer built on it.

:class:`ModulatedConv2d` is StyleGAN2's convolution whose weights are scaled per input
channel by a style (an affine map of ``w``) and, optionally, demodulated so that every
output channel has unit expected energy again. :class:`SynthesisLayer` is one layer of the
avatar generator's synthesis path: a modulated 3x3 convolution, the geometry map added in
place of StyleGAN2's noise (learned per-channel strengths), and the leaky ReLU with
StyleGAN2's gain.

Modulated convolutions run in the export-friendly form (scale the input activations by
the style, convolve with the fixed shared weight, scale the output by the demodulation
factor): the exported graph holds only plain convolutions and elementwise ops (ONNX Runtime
and OpenVINO run it). The classic grouped-convolution form is kept as the reference
(``impl="reference"``); the two agree to float rounding.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from engine.shapes import assert_shape

ModulationImpl = Literal["export", "reference"]
LRELU_SLOPE = 0.2  # StyleGAN2's leaky ReLU
LRELU_GAIN = math.sqrt(2.0)  # and the gain that keeps its output's energy
DEMOD_EPS = 1e-8


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated convolution with weight demodulation.

    ``impl="export"`` (default): ``conv(x * s, W) * d`` with ``s`` the per-input-channel
    style and ``d[o] = rsqrt(sum_i s_i^2 sum_k W[o, i, k]^2 + eps)``; one shared weight, so
    it exports as an ordinary convolution. ``impl="reference"``: the per-sample weights
    ``W * s`` (demodulated) applied as one grouped convolution.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        impl: ModulationImpl = "export",
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.impl: ModulationImpl = impl
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.affine = nn.Linear(style_dim, in_channels)
        nn.init.normal_(self.affine.weight, std=1.0 / math.sqrt(style_dim))
        nn.init.ones_(self.affine.bias)

    def styles(self, w: torch.Tensor) -> torch.Tensor:
        """(B, style_dim) -> (B, in_channels) per-input-channel scales."""
        result: torch.Tensor = self.affine(w)
        return result

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        assert_shape("modulated conv input", x, (None, self.in_channels, None, None))
        styles = self.styles(w)
        if self.impl == "reference":
            return self.forward_reference(x, styles)
        return self.forward_export(x, styles)

    def forward_export(self, x: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
        weight = self.weight * self.weight_gain
        out = F.conv2d(x * styles[:, :, None, None], weight, padding=self.kernel_size // 2)
        if self.demodulate:
            energy = weight.square().sum(dim=(2, 3))  # (out, in)
            factor = torch.rsqrt(styles.square() @ energy.t() + DEMOD_EPS)  # (B, out)
            out = out * factor[:, :, None, None]
        return out + self.bias[None, :, None, None]

    def forward_reference(self, x: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        weight = self.weight[None] * self.weight_gain * styles[:, None, :, None, None]
        if self.demodulate:
            weight = weight * torch.rsqrt(
                weight.square().sum(dim=(2, 3, 4), keepdim=True) + DEMOD_EPS
            )
        grouped = weight.reshape(
            batch * self.out_channels, self.in_channels, self.kernel_size, self.kernel_size
        )
        out = F.conv2d(
            x.reshape(1, batch * self.in_channels, height, width),
            grouped,
            padding=self.kernel_size // 2,
            groups=batch,
        )
        out = out.reshape(batch, self.out_channels, height, width)
        return out + self.bias[None, :, None, None]


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv + geometry noise (learned per-channel strengths) + leaky ReLU."""

    def __init__(
        self, *, in_channels: int, out_channels: int, style_dim: int, geometry_channels: int
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=3,
            style_dim=style_dim,
        )
        self.geometry_strength = nn.Parameter(
            torch.full((out_channels, geometry_channels, 1, 1), 0.1)
        )

    def forward(self, x: torch.Tensor, w: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
        out = self.conv(x, w) + F.conv2d(geometry, self.geometry_strength)
        return F.leaky_relu(out, LRELU_SLOPE) * LRELU_GAIN
