"""Audio front end: resampling to 16 kHz and the log-mel spectrogram, offline and streaming.

Frame convention
----------------
Mel frame ``m`` is centred on sample ``m * hop`` of the 16 kHz signal. Its analysis window
covers samples ``[m * hop - win / 2, m * hop + win / 2)``; samples before 0 are zeros (explicit
left padding of ``win / 2``). Offline, a signal of ``N`` samples gives ``ceil(N / hop)`` frames
(every frame whose centre lies inside the signal); samples past the end are zeros.

:class:`StreamingLogMel` emits frame ``m`` as soon as sample ``m * hop + win / 2 - 1`` has
arrived, i.e. with a look-ahead of half a window (12.5 ms at the defaults), and ``flush()``
emits the frames that need the zero padding past the end. Pushing any chunking of a signal
followed by ``flush()`` gives exactly the frames of :func:`log_mel` on the whole signal.

With the defaults (10 ms hop) a 25 fps video frame ``t``, whose time span is
``[t * 40 ms, (t + 1) * 40 ms)``, has its centre ``(t + 0.5) * 40 ms`` on mel frame ``4 t + 2``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from fractions import Fraction

import numpy as np
from scipy.signal import resample_poly

from engine.frames import ENGINE_RATE


@dataclass(frozen=True, kw_only=True)
class MelConfig:
    """Log-mel parameters. Power spectrum of a periodic Hann window, HTK mel scale,
    triangular filters normalised to unit area (Slaney style), natural log of
    ``max(energy, log_floor)``."""

    sample_rate: int = ENGINE_RATE  # what the mel front end hears: the engine's clock
    num_mels: int = 80
    window_ms: float = 25.0
    hop_ms: float = 10.0
    fft_size: int = 512
    fmin: float = 55.0
    fmax: float = 7600.0
    log_floor: float = 1e-5

    def __post_init__(self) -> None:
        for name, value_ms in (("window_ms", self.window_ms), ("hop_ms", self.hop_ms)):
            samples = value_ms * self.sample_rate / 1000.0
            if samples <= 0 or abs(samples - round(samples)) > 1e-9:
                raise ValueError(f"{name}={value_ms} is not a whole number of samples")
        if self.win_length % 2:
            raise ValueError("the window must be an even number of samples (centred frames)")
        if self.fft_size < self.win_length:
            raise ValueError(f"fft_size {self.fft_size} < window of {self.win_length} samples")
        if not 0.0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= fmin < fmax <= Nyquist, got {self.fmin}, {self.fmax}")
        if self.log_floor <= 0:
            raise ValueError("log_floor must be positive")

    @property
    def win_length(self) -> int:
        return round(self.window_ms * self.sample_rate / 1000.0)

    @property
    def hop_length(self) -> int:
        return round(self.hop_ms * self.sample_rate / 1000.0)

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, float | int]) -> MelConfig:
        return cls(
            sample_rate=int(values["sample_rate"]),
            num_mels=int(values["num_mels"]),
            window_ms=float(values["window_ms"]),
            hop_ms=float(values["hop_ms"]),
            fft_size=int(values["fft_size"]),
            fmin=float(values["fmin"]),
            fmax=float(values["fmax"]),
            log_floor=float(values["log_floor"]),
        )


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_band_edges(config: MelConfig) -> np.ndarray:
    """(num_mels + 2,) Hz: band ``i`` rises from edge ``i``, peaks at edge ``i + 1`` and
    ends at edge ``i + 2``."""
    mels = np.linspace(hz_to_mel(config.fmin), hz_to_mel(config.fmax), config.num_mels + 2)
    return mel_to_hz(mels)


def mel_center_frequencies(config: MelConfig) -> np.ndarray:
    """(num_mels,) peak frequency in Hz of every mel band."""
    return mel_band_edges(config)[1:-1]


def mel_filterbank(config: MelConfig) -> np.ndarray:
    """(fft_size // 2 + 1, num_mels) float64 triangular filters of unit area."""
    edges = mel_band_edges(config)
    bin_hz = np.arange(config.fft_size // 2 + 1) * config.sample_rate / config.fft_size
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_hz[:, None] - lower[None, :]) / (centre - lower)[None, :]
    falling = (upper[None, :] - bin_hz[:, None]) / (upper - centre)[None, :]
    weights = np.clip(np.minimum(rising, falling), 0.0, None)
    weights *= (2.0 / (upper - lower))[None, :]
    return weights


def pcm_to_float(pcm: np.ndarray) -> np.ndarray:
    """PCM samples as float32 in [-1, 1]: int16 is scaled, float is kept (any shape).
    Raises ``ValueError`` for other sample types."""
    samples = np.asarray(pcm)
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / np.float32(32768.0)
    if samples.dtype.kind == "f":
        return samples.astype(np.float32, copy=False)
    raise ValueError(f"audio must be int16 or float PCM, got {samples.dtype}")


def float_to_pcm16(audio: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] (clipped beyond) as int16 PCM, rounded to the nearest."""
    return np.rint(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)


def _hann(length: int) -> np.ndarray:
    """Periodic Hann window: its peak (index length / 2) is the frame centre."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)


class _MelAnalyser:
    """Window, FFT, filterbank and log for frames cut from a left-padded signal."""

    def __init__(self, config: MelConfig) -> None:
        self.config = config
        self.window = _hann(config.win_length)
        self.filters = mel_filterbank(config)

    def frames(self, padded: np.ndarray, count: int) -> np.ndarray:
        """Log-mel of frames ``0 .. count - 1`` where frame ``j`` is
        ``padded[j * hop : j * hop + win]``; returns (count, num_mels) float32."""
        config = self.config
        if count <= 0:
            return np.zeros((0, config.num_mels), np.float32)
        hop, win = config.hop_length, config.win_length
        needed = (count - 1) * hop + win
        if len(padded) < needed:
            raise ValueError(f"{count} frames need {needed} samples, got {len(padded)}")
        windows = np.lib.stride_tricks.sliding_window_view(padded[:needed], win)[::hop]
        spectrum = np.fft.rfft(windows * self.window[None, :], n=config.fft_size, axis=1)
        power = spectrum.real**2 + spectrum.imag**2
        energy = power @ self.filters
        return np.log(np.maximum(energy, config.log_floor)).astype(np.float32)


def _as_mono_float64(audio: np.ndarray) -> np.ndarray:
    samples = np.asarray(audio)
    if samples.ndim != 1:
        raise ValueError(f"expected mono 1-D audio, got shape {samples.shape}")
    return samples.astype(np.float64, copy=False)


def num_mel_frames(num_samples: int, config: MelConfig | None = None) -> int:
    """Frames :func:`log_mel` gives for ``num_samples`` samples: ``ceil(N / hop)``."""
    hop = (config or MelConfig()).hop_length
    return -(-num_samples // hop)


def log_mel(audio_16k: np.ndarray, config: MelConfig | None = None) -> np.ndarray:
    """(ceil(N / hop), num_mels) float32 log-mel of mono audio at ``config.sample_rate``."""
    config = config or MelConfig()
    samples = _as_mono_float64(audio_16k)
    count = num_mel_frames(len(samples), config)
    half = config.win_length // 2
    total = max((count - 1) * config.hop_length + config.win_length, half + len(samples))
    padded = np.zeros(total, np.float64)
    padded[half : half + len(samples)] = samples
    return _MelAnalyser(config).frames(padded, count)


class StreamingLogMel:
    """Log-mel of audio pushed in chunks of any size; same frames as :func:`log_mel`.

    ``push`` returns the frames completed by the chunk (possibly none); ``flush`` ends the
    stream and returns the last frames, computed with zeros past the end. After ``flush``
    the object can be ``reset`` for a new stream.
    """

    def __init__(self, config: MelConfig | None = None) -> None:
        self.config = config or MelConfig()
        self._analyser = _MelAnalyser(self.config)
        self.reset()

    def reset(self) -> None:
        half = self.config.win_length // 2
        self._buffer = np.zeros(half, np.float64)  # starts at padded sample next_frame * hop
        self._next_frame = 0
        self._samples_in = 0
        self._finished = False

    @property
    def frames_emitted(self) -> int:
        return self._next_frame

    @property
    def samples_received(self) -> int:
        return self._samples_in

    @property
    def lookahead_samples(self) -> int:
        """Samples past a frame's centre needed before the frame is emitted."""
        return self.config.win_length // 2

    def push(self, chunk: np.ndarray) -> np.ndarray:
        if self._finished:
            raise RuntimeError("push after flush: call reset() to start a new stream")
        samples = _as_mono_float64(chunk)
        self._samples_in += len(samples)
        self._buffer = np.concatenate([self._buffer, samples])
        hop, win = self.config.hop_length, self.config.win_length
        count = (len(self._buffer) - win) // hop + 1 if len(self._buffer) >= win else 0
        return self._emit(count)

    def flush(self) -> np.ndarray:
        if self._finished:
            return np.zeros((0, self.config.num_mels), np.float32)
        self._finished = True
        count = num_mel_frames(self._samples_in, self.config) - self._next_frame
        if count <= 0:
            return np.zeros((0, self.config.num_mels), np.float32)
        needed = (count - 1) * self.config.hop_length + self.config.win_length
        if len(self._buffer) < needed:
            self._buffer = np.concatenate(
                [self._buffer, np.zeros(needed - len(self._buffer), np.float64)]
            )
        return self._emit(count)

    def _emit(self, count: int) -> np.ndarray:
        frames = self._analyser.frames(self._buffer, count)
        if count > 0:
            self._buffer = self._buffer[count * self.config.hop_length :]
            self._next_frame += count
        return frames


def resample(audio: np.ndarray, rate_in: int, rate_out: int = ENGINE_RATE) -> np.ndarray:
    """Mono float32 audio from ``rate_in`` to ``rate_out`` Hz.

    Polyphase FIR (``scipy.signal.resample_poly``, Kaiser-windowed sinc, exact rational
    ratio such as 320/441 for 22.05 -> 16 kHz). A fixed linear-phase FIR kernel is chosen
    over a stateful library resampler because the same kernel can run on chunks by carrying
    the last ``len(kernel) / up`` input samples: a streaming version reproduces the offline
    output exactly, with a known, constant delay.
    """
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"expected mono 1-D audio, got shape {samples.shape}")
    if rate_in <= 0 or rate_out <= 0:
        raise ValueError(f"sample rates must be positive, got {rate_in} -> {rate_out}")
    if rate_in == rate_out or len(samples) == 0:
        return samples.copy()
    ratio = Fraction(rate_out, rate_in)
    expected = math.ceil(len(samples) * ratio)
    out = resample_poly(samples.astype(np.float64), ratio.numerator, ratio.denominator)
    return np.asarray(out[:expected], dtype=np.float32)
