"""Image losses and metrics for the generator: weighted L1, (MS-)SSIM, PSNR, mouth-region
weights from landmarks, and a small patch discriminator with hinge losses.

SSIM follows Wang et al. (2004): an 11-tap Gaussian window (sigma 1.5), constants
``(0.01 L)^2`` and ``(0.03 L)^2``, "valid" filtering. MS-SSIM (Wang et al., 2003) multiplies
the contrast-structure terms of the finer scales and the full SSIM of the coarsest scale,
each raised to the standard scale weights; it uses as many scales (at most five) as the
image size allows and renormalises the weights of the scales it uses. Terms are clamped to
a small positive floor before the fractional powers, so values and gradients stay finite
for any input (including negative correlation and flat images). Every SSIM can be averaged
under a per-pixel weight map (e.g. the generated region only).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from engine.face3d import LIPS

MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_SSIM_FLOOR = 1e-6


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """(size,) normalised 1D Gaussian."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"window size must be odd and positive, got {size}")
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    window = torch.exp(-(offsets**2) / (2 * sigma**2))
    return (window / window.sum()).float()


def _band_matrix(window: torch.Tensor, length: int) -> torch.Tensor:
    """(length, length - size + 1) matrix whose column ``i`` holds ``window`` at rows
    ``i .. i + size - 1``: right-multiplying by it is a "valid" 1D filtering."""
    size = window.numel()
    rows = torch.arange(length, device=window.device)[:, None]
    columns = torch.arange(length - size + 1, device=window.device)[None, :]
    offset = rows - columns
    inside = (offset >= 0) & (offset < size)
    return torch.where(inside, window[offset.clamp(0, size - 1)], window.new_zeros(()))


def _filter(images: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable "valid" Gaussian filtering of every channel of (B, C, H, W), as two
    matrix products with banded matrices (faster on CPU than depthwise convolutions)."""
    window = window.to(images)
    horizontal = _band_matrix(window, images.shape[-1])
    vertical = _band_matrix(window, images.shape[-2]).t()
    return vertical @ (images @ horizontal)


def _ssim_maps(
    x: torch.Tensor, y: torch.Tensor, window: torch.Tensor, data_range: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(SSIM map, contrast-structure map), both (B, C, H - w + 1, W - w + 1)."""
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    moments = _filter(torch.cat([x, y, x * x, y * y, x * y]), window)
    mean_x, mean_y, square_x, square_y, product = moments.chunk(5)
    var_x = square_x - mean_x.square()
    var_y = square_y - mean_y.square()
    cov = product - mean_x * mean_y
    contrast_structure = (2 * cov + c2) / (var_x + var_y + c2)
    luminance = (2 * mean_x * mean_y + c1) / (mean_x.square() + mean_y.square() + c1)
    return luminance * contrast_structure, contrast_structure


def _weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Per-sample mean of (B, C, h, w) values under a (B, 1, h, w) weight (or uniform)."""
    if weight is None:
        return values.mean(dim=(1, 2, 3))
    weight = weight.expand_as(values)
    return (values * weight).sum(dim=(1, 2, 3)) / weight.sum(dim=(1, 2, 3)).clamp_min(1e-8)


def _check_pair(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None) -> None:
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"need two (B, C, H, W) images of one shape, got {x.shape}, {y.shape}")
    if weight is not None and weight.shape != (x.shape[0], 1, *x.shape[2:]):
        raise ValueError(f"weight must be (B, 1, H, W) = {(x.shape[0], 1, *x.shape[2:])}")


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """(B,) single-scale SSIM of (B, C, H, W) images, averaged under ``weight``."""
    _check_pair(x, y, weight)
    window_size = min(window_size, (min(x.shape[-2:]) - 1) | 1)
    window = gaussian_window(window_size, sigma)
    ssim_map, _ = _ssim_maps(x, y, window, data_range)
    local_weight = None if weight is None else _filter(weight, window)
    return _weighted_mean(ssim_map, local_weight)


def ms_ssim_scales(size: int, window_size: int = 11) -> int:
    """Number of MS-SSIM scales for a ``size``-px image: at most five, the coarsest at
    least ``window_size`` px."""
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and size >> scales >= window_size:
        scales += 1
    return scales


def ms_ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    scales: int | None = None,
) -> torch.Tensor:
    """(B,) multi-scale SSIM in (0, 1] of (B, C, H, W) images, each scale averaged under
    ``weight`` (area-downsampled along with the images)."""
    _check_pair(x, y, weight)
    if min(x.shape[-2:]) < window_size:
        raise ValueError(f"images of {tuple(x.shape[-2:])} px are smaller than the window")
    count = ms_ssim_scales(min(x.shape[-2:]), window_size) if scales is None else scales
    if not 1 <= count <= len(MS_SSIM_WEIGHTS) or min(x.shape[-2:]) >> (count - 1) < window_size:
        raise ValueError(f"{count} scales do not fit {tuple(x.shape[-2:])} px images")
    weights = torch.tensor(MS_SSIM_WEIGHTS[:count], dtype=x.dtype, device=x.device)
    weights = weights / weights.sum()
    window = gaussian_window(window_size, sigma)
    result = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    for scale in range(count):
        if scale > 0:
            x = F.avg_pool2d(x, 2)
            y = F.avg_pool2d(y, 2)
            weight = None if weight is None else F.avg_pool2d(weight, 2)
        ssim_map, contrast_structure = _ssim_maps(x, y, window, data_range)
        local_weight = None if weight is None else _filter(weight, window)
        term = ssim_map if scale == count - 1 else contrast_structure
        value = _weighted_mean(term, local_weight).clamp_min(_SSIM_FLOOR)
        result = result * value ** weights[scale]
    return result


def weighted_l1(
    prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """Scalar mean absolute error under a (B, 1, H, W) weight (normalised by its sum)."""
    _check_pair(prediction, target, weight)
    error = (prediction - target).abs() * weight
    return error.sum() / (weight.sum() * prediction.shape[1]).clamp_min(1e-8)


def psnr(
    prediction: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    data_range: float = 1.0,
) -> torch.Tensor:
    """(B,) peak signal-to-noise ratio in dB, the mean squared error taken under ``weight``."""
    _check_pair(prediction, target, weight)
    mse = _weighted_mean((prediction - target).square(), weight)
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-10))


def mouth_weight_map(
    landmarks: torch.Tensor,
    size: int,
    *,
    margin: float = 0.35,
    feather: float = 0.25,
    indices: Sequence[int] = LIPS,
) -> torch.Tensor:
    """(B, 1, size, size) soft box over the lips: the bounding box of the lip landmarks
    ((B, 478, 2) in pixels of a ``size`` crop, corner convention) grown by ``margin`` of
    the mouth width on every side, edges ramped over ``feather`` of the mouth width."""
    if landmarks.ndim != 3 or landmarks.shape[-1] != 2:
        raise ValueError(f"expected (B, 478, 2) landmarks, got {tuple(landmarks.shape)}")
    lips = landmarks[:, list(indices)].float()
    low = lips.amin(dim=1)  # (B, 2)
    high = lips.amax(dim=1)
    width = (high[:, 0] - low[:, 0]).clamp_min(1.0)[:, None]  # (B, 1)
    low = low - margin * width
    high = high + margin * width
    ramp = (feather * width).clamp_min(1.0)
    centres = torch.arange(size, dtype=torch.float32, device=landmarks.device) + 0.5
    inside_x = ((centres[None] - low[:, :1]) / ramp).clamp(0, 1) * (
        (high[:, :1] - centres[None]) / ramp
    ).clamp(0, 1)
    inside_y = ((centres[None] - low[:, 1:]) / ramp).clamp(0, 1) * (
        (high[:, 1:] - centres[None]) / ramp
    ).clamp(0, 1)
    return (inside_y[:, :, None] * inside_x[:, None, :])[:, None]


class PatchDiscriminator(nn.Module):
    """A small PatchGAN: strided 4x4 convolutions (spectral norm, leaky ReLU) down to a grid
    of real/fake logits, one per overlapping patch."""

    def __init__(self, *, channels: int = 3, width: int = 32, layers: int = 3) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError("the discriminator needs at least one layer")
        modules: list[nn.Module] = []
        current = channels
        for layer in range(layers):
            out = width * 2 ** min(layer, 3)
            modules += [
                spectral_norm(nn.Conv2d(current, out, 4, stride=2, padding=1)),
                nn.LeakyReLU(0.2),
            ]
            current = out
        modules.append(spectral_norm(nn.Conv2d(current, 1, 3, padding=1)))
        self.layers = nn.Sequential(*modules)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> (B, 1, H / 2^layers, W / 2^layers) logits."""
        result: torch.Tensor = self.layers(images * 2.0 - 1.0)
        return result


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


def region_box(mask: torch.Tensor, *, threshold: float = 1e-3) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) pixel bounds (end exclusive) of where a (1, 1, H, W) or
    (H, W) mask exceeds ``threshold``; the whole image for an empty mask."""
    plane = mask.reshape(mask.shape[-2], mask.shape[-1])
    rows = torch.nonzero(plane.amax(dim=1) > threshold).flatten()
    columns = torch.nonzero(plane.amax(dim=0) > threshold).flatten()
    if rows.numel() == 0 or columns.numel() == 0:
        return 0, plane.shape[0], 0, plane.shape[1]
    return (
        int(rows[0]),
        int(rows[-1]) + 1,
        int(columns[0]),
        int(columns[-1]) + 1,
    )
