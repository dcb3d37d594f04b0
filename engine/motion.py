"""Audio to 3D facial dynamics: a style-injected Transformer over a log-mel window.

The model predicts, for every 25 fps video frame, the dynamics PCA coefficients of
:class:`engine.face3d.DynamicsBasis` (lower-face motion in the pose-free head frame) from
a window of log-mel frames around that video frame. A speaking style, encoded once from a
few seconds of reference dynamics, enters every Transformer layer through adaptive layer
norm (scale and shift computed from the style code).

Mel window of a video frame
---------------------------
Video frame ``t`` spans ``[t, t + 1) * 40 ms``; the mel frames whose centres lie inside that
span are ``4 t .. 4 t + 3`` (mel frame ``m`` is centred on ``m * 10 ms``, see
:mod:`engine.audio`; the span's centre is mel frame ``4 t + 2``, the dataset's convention).
The window of frame ``t`` is

    mel frames ``4 t - P`` .. ``4 t + 3 + A`` (inclusive), ``W = P + 4 + A`` frames,

with ``P = past_ms / hop_ms`` frames of past and ``A = lookahead_ms / hop_ms`` frames of
look-ahead after the frame's own span (defaults: P = 40, A = 8, W = 52, so frame ``t`` uses
mel frames ``4 t - 40 .. 4 t + 11``). Frames before the audio starts or after it ends are
silence: the log floor of :class:`engine.audio.MelConfig`. In a stream, frame ``t`` can be
computed once audio up to ``(t + 1) * 40 ms + lookahead_ms - 10 ms + 12.5 ms`` has arrived
(its last mel frame is centred one hop before the end of the look-ahead, and needs half a
mel window past its centre; :class:`engine.motion_frontend.MotionFrontEnd` does this).

The model takes raw log-mel (as :func:`engine.audio.log_mel` and
:class:`engine.audio.StreamingLogMel` produce it) and returns raw coefficients: the mel
mean/std and the coefficient mean/std of the training data are buffers of the model.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.audio import MelConfig
from engine.errors import EngineError
from engine.face3d import DynamicsBasis
from engine.frames import FPS, Timeline
from engine.shapes import assert_shape
from engine.weights import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

MAX_LOOKAHEAD_MS = 120.0
CHECKPOINT_KIND = "motion"
MODEL_PREFIX = "model."
BASIS_PREFIX = "basis."
IDENTITY_PREFIX = "identity/"
STYLE_PREFIX = "style/"
TEMPLATE_NAME = "template"


def _whole_frames(value_ms: float, hop_ms: float, name: str) -> int:
    frames = value_ms / hop_ms
    if frames < 0 or abs(frames - round(frames)) > 1e-9:
        raise ValueError(f"{name}={value_ms} ms is not a non-negative multiple of {hop_ms} ms")
    return round(frames)


@dataclass(frozen=True, kw_only=True)
class MotionConfig:
    """Size and audio context of the motion model (see the module docstring for the window)."""

    num_coefficients: int
    num_mels: int = 80
    mel_hop_ms: float = 10.0
    fps: int = FPS
    past_ms: float = 400.0
    lookahead_ms: float = 80.0
    token_mel_frames: int = 4  # mel frames per input token (40 ms at the defaults)
    width: int = 128
    layers: int = 4
    heads: int = 4
    ffn_multiplier: int = 2
    style_dim: int = 64
    style_hidden: int = 128
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.num_coefficients < 1:
            raise ValueError(f"num_coefficients must be >= 1, got {self.num_coefficients}")
        if self.num_mels < 1:
            raise ValueError(f"num_mels must be >= 1, got {self.num_mels}")
        if self.mel_hop_ms <= 0 or self.fps <= 0:
            raise ValueError("mel_hop_ms and fps must be positive")
        if not 0.0 <= self.lookahead_ms <= MAX_LOOKAHEAD_MS:
            raise ValueError(
                f"lookahead_ms={self.lookahead_ms} is outside [0, {MAX_LOOKAHEAD_MS:g}] ms: "
                "more look-ahead delays every frame past what a live conversation tolerates"
            )
        _whole_frames(self.past_ms, self.mel_hop_ms, "past_ms")
        _whole_frames(self.lookahead_ms, self.mel_hop_ms, "lookahead_ms")
        _whole_frames(1000.0 / self.fps, self.mel_hop_ms, "the video frame span")
        if self.token_mel_frames < 1:
            raise ValueError(f"token_mel_frames must be >= 1, got {self.token_mel_frames}")
        if self.width < 1 or self.layers < 1 or self.heads < 1:
            raise ValueError("width, layers and heads must be >= 1")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")
        if self.ffn_multiplier < 1 or self.style_dim < 1 or self.style_hidden < 1:
            raise ValueError("ffn_multiplier, style_dim and style_hidden must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def past_frames(self) -> int:
        """P: mel frames of past before the video frame's own span."""
        return _whole_frames(self.past_ms, self.mel_hop_ms, "past_ms")

    @property
    def lookahead_frames(self) -> int:
        """A: mel frames of look-ahead after the video frame's own span."""
        return _whole_frames(self.lookahead_ms, self.mel_hop_ms, "lookahead_ms")

    @property
    def mel_per_frame(self) -> int:
        """Mel frames per video frame (4 at 25 fps and a 10 ms hop)."""
        return _whole_frames(1000.0 / self.fps, self.mel_hop_ms, "the video frame span")

    def timeline(self, sample_rate: int) -> Timeline:
        """The video frames of this model on a clock of ``sample_rate`` Hz (the mel front
        end's): ``sample_rate / fps`` samples a frame, a whole number or ValueError."""
        if sample_rate <= 0 or sample_rate % self.fps:
            raise ValueError(
                f"a video frame at {self.fps} fps is no whole number of samples at {sample_rate} Hz"
            )
        return Timeline(sample_rate, sample_rate // self.fps)

    @property
    def window_frames(self) -> int:
        """W = P + mel_per_frame + A."""
        return self.past_frames + self.mel_per_frame + self.lookahead_frames

    @property
    def num_tokens(self) -> int:
        """Mel tokens of a window (the oldest token is zero-padded when W does not divide)."""
        return math.ceil(self.window_frames / self.token_mel_frames)

    def window_start(self, frame: int) -> int:
        """First mel frame of video frame ``frame``'s window (may be negative)."""
        return self.mel_per_frame * frame - self.past_frames

    def mel_range(self, first_frame: int, num_frames: int) -> tuple[int, int]:
        """Mel frames ``[start, stop)`` covering the windows of ``num_frames`` consecutive
        video frames from ``first_frame``: ``W + mel_per_frame * (num_frames - 1)`` frames."""
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        start = self.window_start(first_frame)
        return start, start + self.window_frames + self.mel_per_frame * (num_frames - 1)

    def frames_ready(self, num_mel_frames: int) -> int:
        """How many video frames (from frame 0) have their whole window inside the first
        ``num_mel_frames`` mel frames of a stream: frame ``t`` needs mel frame
        ``mel_per_frame * t + mel_per_frame - 1 + A``."""
        needed = self.mel_per_frame + self.lookahead_frames
        if num_mel_frames < needed:
            return 0
        return (num_mel_frames - needed) // self.mel_per_frame + 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MotionConfig:
        return cls(
            num_coefficients=int(values["num_coefficients"]),
            num_mels=int(values["num_mels"]),
            mel_hop_ms=float(values["mel_hop_ms"]),
            fps=int(values["fps"]),
            past_ms=float(values["past_ms"]),
            lookahead_ms=float(values["lookahead_ms"]),
            token_mel_frames=int(values["token_mel_frames"]),
            width=int(values["width"]),
            layers=int(values["layers"]),
            heads=int(values["heads"]),
            ffn_multiplier=int(values["ffn_multiplier"]),
            style_dim=int(values["style_dim"]),
            style_hidden=int(values["style_hidden"]),
            dropout=float(values["dropout"]),
        )


def slice_mel(mel: np.ndarray, start: int, stop: int, *, silence: float) -> np.ndarray:
    """(stop - start, num_mels) float32 rows ``start .. stop - 1`` of a clip's log-mel
    (M, num_mels); rows outside ``[0, M)`` are ``silence`` (the log floor)."""
    mel = np.asarray(mel, dtype=np.float32)
    if mel.ndim != 2:
        raise ValueError(f"expected (M, num_mels) log-mel, got shape {mel.shape}")
    out = np.full((max(stop - start, 0), mel.shape[1]), silence, dtype=np.float32)
    source_start, source_stop = max(start, 0), min(stop, mel.shape[0])
    if source_stop > source_start:
        out[source_start - start : source_stop - start] = mel[source_start:source_stop]
    return out


def adaptive_layer_norm(tokens: Tensor, scale: Tensor, shift: Tensor, width: int) -> Tensor:
    """LayerNorm over the last axis (of size ``width``) without its own affine, then
    ``* scale + shift``, with scale and shift (B, 1, width) computed from the style code."""
    normalised = F.layer_norm(tokens, (width,))
    return torch.addcmul(shift, normalised, scale)


def _modulation(style_dim: int, width: int, norms: int) -> nn.Linear:
    """Style -> (scale, shift) of ``norms`` adaptive layer norms; starts near scale 1,
    shift 0 (small random weights so that the style matters from the first step)."""
    layer = nn.Linear(style_dim, 2 * norms * width)
    nn.init.normal_(layer.weight, std=0.02)
    with torch.no_grad():
        layer.bias.zero_()
        layer.bias.view(norms, 2, width)[:, 0] = 1.0
    return layer


class StyleBlock(nn.Module):
    """Pre-norm Transformer layer whose two layer norms are adaptive: their scale and shift
    are a linear function of the style code."""

    def __init__(self, config: MotionConfig) -> None:
        super().__init__()
        width = config.width
        self.width = width
        self.heads = config.heads
        self.head_dim = width // config.heads
        self.dropout = config.dropout
        self.modulation = _modulation(config.style_dim, width, norms=2)
        self.qkv = nn.Linear(width, 3 * width)
        self.attention_out = nn.Linear(width, width)
        self.ffn_in = nn.Linear(width, config.ffn_multiplier * width)
        self.ffn_out = nn.Linear(config.ffn_multiplier * width, width)

    def forward(self, tokens: Tensor, style: Tensor) -> Tensor:
        batch, count, width = tokens.shape[0], tokens.shape[1], self.width
        attention_scale, attention_shift, ffn_scale, ffn_shift = (
            self.modulation(style).unsqueeze(1).chunk(4, dim=-1)
        )
        hidden = adaptive_layer_norm(tokens, attention_scale, attention_shift, self.width)
        qkv = self.qkv(hidden).reshape(batch, count, 3, self.heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attended = F.scaled_dot_product_attention(query, key, value)
        attended = self.attention_out(attended.transpose(1, 2).reshape(batch, count, width))
        tokens = tokens + F.dropout(attended, self.dropout, self.training)
        hidden = adaptive_layer_norm(tokens, ffn_scale, ffn_shift, self.width)
        hidden = self.ffn_out(F.gelu(self.ffn_in(hidden)))
        return tokens + F.dropout(hidden, self.dropout, self.training)


class StyleEncoder(nn.Module):
    """A few seconds of reference dynamics (B, T, K) -> style code (B, style_dim).

    Per frame: normalised coefficients and their frame-to-frame velocity; two residual
    temporal convolutions; then the mean and standard deviation over the valid frames
    (``mask`` (B, T) bool, True = use the frame) -- how far and how fast this person's
    face moves, independent of what is said.
    """

    coefficient_mean: Tensor
    coefficient_std: Tensor

    def __init__(self, config: MotionConfig) -> None:
        super().__init__()
        self.config = config
        hidden = config.style_hidden
        self.input = nn.Linear(2 * config.num_coefficients, hidden)
        self.convs = nn.ModuleList(
            [nn.Conv1d(hidden, hidden, kernel_size=5, padding=2) for _ in range(2)]
        )
        self.output = nn.Linear(2 * hidden, config.style_dim)
        self.register_buffer("coefficient_mean", torch.zeros(config.num_coefficients))
        self.register_buffer("coefficient_std", torch.ones(config.num_coefficients))

    def forward(self, reference: Tensor, mask: Tensor | None = None) -> Tensor:
        k = self.config.num_coefficients
        assert_shape("reference dynamics", reference, (None, None, k))
        batch, frames, _ = reference.shape
        if mask is None:
            mask = torch.ones(batch, frames, dtype=torch.bool, device=reference.device)
        assert_shape("reference mask", mask, (batch, frames))
        weight = mask.to(reference.dtype).unsqueeze(-1)  # (B, T, 1)
        normalised = (reference - self.coefficient_mean) / self.coefficient_std * weight
        velocity = torch.zeros_like(normalised)
        velocity[:, 1:] = (normalised[:, 1:] - normalised[:, :-1]) * weight[:, 1:] * weight[:, :-1]
        hidden = F.gelu(self.input(torch.cat([normalised, velocity], dim=-1))) * weight
        hidden = hidden.transpose(1, 2)  # (B, H, T)
        channel_weight = weight.transpose(1, 2)
        for conv in self.convs:
            hidden = (hidden + F.gelu(conv(hidden))) * channel_weight
        count = channel_weight.sum(dim=-1).clamp(min=1.0)  # (B, 1)
        mean = hidden.sum(dim=-1) / count
        variance = (((hidden - mean.unsqueeze(-1)) * channel_weight) ** 2).sum(dim=-1) / count
        pooled = torch.cat([mean, torch.sqrt(variance + 1e-5)], dim=-1)
        return self.output(pooled)


class MotionTransformer(nn.Module):
    """Mel window (B, W, num_mels) raw log-mel + style (B, style_dim) -> (B, K) coefficients.

    The window is normalised with the training mel mean/std, cut into tokens of
    ``token_mel_frames`` frames, projected, given learned positions, and read out through a
    learned query token after ``layers`` style-conditioned Transformer layers.
    """

    mel_mean: Tensor
    mel_std: Tensor
    coefficient_mean: Tensor
    coefficient_std: Tensor

    def __init__(self, config: MotionConfig) -> None:
        super().__init__()
        self.config = config
        width = config.width
        self.token_projection = nn.Linear(config.token_mel_frames * config.num_mels, width)
        self.positions = nn.Parameter(torch.randn(config.num_tokens + 1, width) * 0.02)
        self.query = nn.Parameter(torch.randn(width) * 0.02)
        self.blocks = nn.ModuleList([StyleBlock(config) for _ in range(config.layers)])
        self.output_modulation = _modulation(config.style_dim, width, norms=1)
        self.head = nn.Linear(width, config.num_coefficients)
        self.register_buffer("mel_mean", torch.zeros(config.num_mels))
        self.register_buffer("mel_std", torch.ones(config.num_mels))
        self.register_buffer("coefficient_mean", torch.zeros(config.num_coefficients))
        self.register_buffer("coefficient_std", torch.ones(config.num_coefficients))

    def forward(self, mel: Tensor, style: Tensor) -> Tensor:
        config = self.config
        assert_shape("mel window", mel, (None, config.window_frames, config.num_mels))
        assert_shape("style", style, (mel.shape[0], config.style_dim))
        return self._predict(mel, style)

    def forward_sequence(self, mel: Tensor, style: Tensor) -> Tensor:
        """Consecutive frames at once: ``mel`` (B, W + mel_per_frame * (L - 1), num_mels)
        covering ``config.mel_range(first, L)`` -> (B, L, K). Frame ``i`` of the result is
        exactly ``forward`` on its own window."""
        config = self.config
        assert_shape("mel sequence", mel, (None, None, config.num_mels))
        assert_shape("style", style, (mel.shape[0], config.style_dim))
        extra = mel.shape[1] - config.window_frames
        if extra < 0 or extra % config.mel_per_frame:
            raise ValueError(
                f"a mel sequence must have {config.window_frames} + {config.mel_per_frame} * "
                f"(frames - 1) mel frames, got {mel.shape[1]}"
            )
        frames = extra // config.mel_per_frame + 1
        batch = mel.shape[0]
        windows = mel.unfold(1, config.window_frames, config.mel_per_frame)  # (B, L, M, W)
        windows = windows.transpose(2, 3).reshape(batch * frames, config.window_frames, -1)
        styles = style.repeat_interleave(frames, dim=0)
        return self._predict(windows, styles).reshape(batch, frames, config.num_coefficients)

    def _predict(self, mel: Tensor, style: Tensor) -> Tensor:
        config = self.config
        normalised = (mel - self.mel_mean) / self.mel_std
        padding = config.num_tokens * config.token_mel_frames - config.window_frames
        if padding:
            normalised = F.pad(normalised, (0, 0, padding, 0))
        tokens = normalised.reshape(
            mel.shape[0], config.num_tokens, config.token_mel_frames * config.num_mels
        )
        tokens = self.token_projection(tokens)
        query = self.query.expand(mel.shape[0], 1, -1)
        tokens = torch.cat([query, tokens], dim=1) + self.positions
        for block in self.blocks:
            tokens = block(tokens, style)
        scale, shift = self.output_modulation(style).unsqueeze(1).chunk(2, dim=-1)
        readout = adaptive_layer_norm(tokens[:, :1], scale, shift, config.width)[:, 0]
        return self.head(readout) * self.coefficient_std + self.coefficient_mean


class MotionModel(nn.Module):
    """The style encoder and the per-frame Transformer, saved and loaded together."""

    def __init__(self, config: MotionConfig) -> None:
        super().__init__()
        self.config = config
        self.style_encoder = StyleEncoder(config)
        self.transformer = MotionTransformer(config)

    def set_statistics(
        self,
        *,
        mel_mean: np.ndarray | Tensor,
        mel_std: np.ndarray | Tensor,
        coefficient_mean: np.ndarray | Tensor,
        coefficient_std: np.ndarray | Tensor,
    ) -> None:
        """Normalisation of the inputs and outputs, from the training data."""
        values = {
            "mel_mean": (mel_mean, self.config.num_mels),
            "mel_std": (mel_std, self.config.num_mels),
            "coefficient_mean": (coefficient_mean, self.config.num_coefficients),
            "coefficient_std": (coefficient_std, self.config.num_coefficients),
        }
        with torch.no_grad():
            for name, (value, size) in values.items():
                tensor = torch.as_tensor(np.asarray(value, dtype=np.float32))
                if tensor.shape != (size,):
                    raise ValueError(f"{name} must have shape ({size},), got {tuple(tensor.shape)}")
                if name.endswith("std") and bool((tensor <= 0).any()):
                    raise ValueError(f"{name} must be positive")
                getattr(self.transformer, name).copy_(tensor)
                if name.startswith("coefficient"):
                    getattr(self.style_encoder, name).copy_(tensor)

    def style(self, reference: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.style_encoder(reference, mask)

    def forward(self, mel: Tensor, reference: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, W, num_mels) windows and (B, T, K) reference dynamics -> (B, K)."""
        return self.transformer(mel, self.style_encoder(reference, mask))

    def forward_sequence(
        self, mel: Tensor, reference: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        """(B, W + mel_per_frame * (L - 1), num_mels) and (B, T, K) -> (B, L, K)."""
        return self.transformer.forward_sequence(mel, self.style_encoder(reference, mask))


def count_parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def export_onnx(transformer: MotionTransformer, path: Path, *, opset: int = 17) -> Path:
    """The per-frame graph ``(mel (B, W, num_mels), style (B, style_dim)) -> coefficients
    (B, K)`` as ONNX, batch axis dynamic. Uses the TorchScript-based exporter: the
    dynamo-based one needs ``onnxscript``, which is not a dependency."""
    if opset < 17:
        raise ValueError(f"opset must be >= 17, got {opset}")
    config = transformer.config
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = transformer.training
    transformer.eval()
    mel = torch.zeros(1, config.window_frames, config.num_mels)
    style = torch.zeros(1, config.style_dim)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=DeprecationWarning)
            torch.onnx.export(
                transformer,
                (mel, style),
                str(path),
                dynamo=False,
                input_names=["mel", "style"],
                output_names=["coefficients"],
                dynamic_axes={
                    "mel": {0: "batch"},
                    "style": {0: "batch"},
                    "coefficients": {0: "batch"},
                },
                opset_version=opset,
            )
    finally:
        transformer.train(was_training)
    return path


@dataclass(frozen=True, kw_only=True)
class MotionCheckpoint:
    """A trained motion model with everything needed to use it."""

    model: MotionModel
    config: MotionConfig
    basis: DynamicsBasis
    template: np.ndarray  # (468, 3) canonical face
    identities: dict[str, np.ndarray]  # subject -> (N, 3) identity shape
    styles: dict[str, np.ndarray]  # subject -> (style_dim,) default style code
    header: dict[str, Any]

    @cached_property
    def mel(self) -> MelConfig:
        """The log-mel the model was trained on (its header's, else the defaults): what its
        front end must compute."""
        values = self.header.get("mel")
        return MelConfig.from_dict(values) if isinstance(values, dict) else MelConfig()


def save_motion_checkpoint(
    path: Path,
    model: MotionModel,
    *,
    basis: DynamicsBasis,
    template: np.ndarray,
    identities: dict[str, np.ndarray],
    styles: dict[str, np.ndarray] | None = None,
    header: dict[str, Any],
) -> None:
    """Model weights (``model.*``), the dynamics basis arrays, template and identity shapes
    (``basis.*``), default style codes per subject (``style/<subject>``), and a JSON header
    that adds ``kind`` and ``motion_config`` to ``header``."""
    tensors: dict[str, Tensor] = {
        MODEL_PREFIX + name: value for name, value in model.state_dict().items()
    }
    for name, array in basis.to_arrays().items():
        tensors[BASIS_PREFIX + name] = torch.from_numpy(np.ascontiguousarray(array))
    tensors[BASIS_PREFIX + TEMPLATE_NAME] = torch.from_numpy(
        np.ascontiguousarray(template, dtype=np.float64)
    )
    for subject, shape in identities.items():
        tensors[BASIS_PREFIX + IDENTITY_PREFIX + subject] = torch.from_numpy(
            np.ascontiguousarray(shape, dtype=np.float32)
        )
    for subject, code in (styles or {}).items():
        if np.shape(code) != (model.config.style_dim,):
            raise ValueError(
                f"style code of {subject!r} must have shape ({model.config.style_dim},)"
            )
        tensors[STYLE_PREFIX + subject] = torch.from_numpy(np.asarray(code, dtype=np.float32))
    record = {**header, "kind": CHECKPOINT_KIND, "motion_config": model.config.to_dict()}
    save_checkpoint(path, tensors, record)


def load_motion_checkpoint(path: Path) -> MotionCheckpoint:
    """A checkpoint written by :func:`save_motion_checkpoint`; the model is in eval mode."""
    tensors, header = load_checkpoint(Path(path))
    if header.get("kind") != CHECKPOINT_KIND or "motion_config" not in header:
        raise EngineError(f"{path} is not a motion model checkpoint")
    config = MotionConfig.from_dict(header["motion_config"])
    model = MotionModel(config)
    state = {
        name[len(MODEL_PREFIX) :]: value
        for name, value in tensors.items()
        if name.startswith(MODEL_PREFIX)
    }
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise EngineError(f"{path} does not match its motion config: {exc}") from exc
    model.eval()
    arrays = {
        name[len(BASIS_PREFIX) :]: value.numpy()
        for name, value in tensors.items()
        if name.startswith(BASIS_PREFIX)
    }
    identities = {
        name[len(IDENTITY_PREFIX) :]: value
        for name, value in arrays.items()
        if name.startswith(IDENTITY_PREFIX)
    }
    styles = {
        name[len(STYLE_PREFIX) :]: value.numpy()
        for name, value in tensors.items()
        if name.startswith(STYLE_PREFIX)
    }
    return MotionCheckpoint(
        model=model,
        config=config,
        basis=DynamicsBasis.from_arrays(arrays),
        template=arrays[TEMPLATE_NAME],
        identities=identities,
        styles=styles,
        header=header,
    )
