"""Waveform augmentation for motion training: other speakers, rooms, microphones and codecs.

The motion model hears 16 kHz audio through :func:`engine.audio.log_mel`; trained on a few
voices it follows them and little else. :func:`augment` passes a clip's audio through a
seeded chain of conditions, each with its own probability (:class:`AugmentConfig`), in the
order a live signal meets them:

1. *vocal-tract length* (:func:`vtlp`): the frequency axis warped by a factor (0.85-1.15),
   formants and pitch together, piecewise linear so that the band up to Nyquist stays
   covered (Jaitly and Hinton's warp), by a phase vocoder: the time axis is untouched;
2. *reverberation* (:func:`reverberate`): a synthetic room impulse response, the direct
   sound then exponentially decaying noise (RT60 0.1-0.7 s) at a direct-to-reverberant
   ratio of 0-12 dB;
3. *noise* (:func:`add_noise`): white, pink, or babble (other clips' speech, several at
   once) at an SNR of 10-40 dB against the speech's active power;
4. *gain* (±12 dB; at -12 dB the silence gate of :mod:`engine.silence_gate` still passes
   97-99.5 % of the speech frames of the held-out set);
5. *codec*: an Opus round trip at 12-32 kbps (:func:`opus_round_trip`, what a browser
   microphone sends), or a telephone line (:func:`telephone`: 300-3400 Hz, 8 kHz,
   8-bit mu-law);

then clipping to [-1, 1]. Every step keeps the signal's length and its alignment with the
video frames. The result is turned into log-mel by :func:`engine.audio.log_mel`, exactly as
the model's front end does (:func:`augmented_mels`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np
from scipy.signal import butter, fftconvolve, sosfiltfilt

from engine.audio import MelConfig, log_mel, pcm_to_float, resample
from engine.frames import ENGINE_RATE

NOISE_KINDS = ("white", "pink", "babble")
TELEPHONE_RATE = 8000
TELEPHONE_BAND_HZ = (300.0, 3400.0)
MU_LAW = 255.0
VTLP_BOUNDARY_HZ = 4800.0  # at 16 kHz: the warp is linear up to here (scaled by the factor)
_STFT_SIZE = 512  # vtlp's phase vocoder: 32 ms frames, 75 % overlap
_STFT_HOP = 128
_POWER_FRAME = 320  # samples (20 ms) of the active-power estimate
_ACTIVE_RANGE_DB = 40.0  # frames within this of the loudest count as speech


@dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    """Which conditions a training clip's augmented versions go through, and how often.

    ``versions`` augmented log-mel versions are made per train clip when the clips are
    loaded (each its own seeded chain); a training sequence takes the clean mel or one of
    them with equal chances."""

    versions: int = 4
    seed: int = 0
    vtlp_probability: float = 0.8
    vtlp_factors: tuple[float, float] = (0.85, 1.15)
    reverb_probability: float = 0.3
    rt60_s: tuple[float, float] = (0.1, 0.7)
    direct_to_reverb_db: tuple[float, float] = (0.0, 12.0)
    noise_probability: float = 0.5
    snr_db: tuple[float, float] = (10.0, 40.0)
    gain_probability: float = 0.5
    gain_db: tuple[float, float] = (-12.0, 12.0)
    codec_probability: float = 0.4
    opus_share: float = 0.7  # of the codec cases; the others: telephone
    opus_kbps: tuple[float, float] = (12.0, 32.0)

    def __post_init__(self) -> None:
        if self.versions < 1:
            raise ValueError(f"versions must be >= 1, got {self.versions}")
        for name in ("vtlp", "reverb", "noise", "gain", "codec"):
            value = getattr(self, f"{name}_probability")
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}_probability must be in [0, 1], got {value}")
        if not 0.0 <= self.opus_share <= 1.0:
            raise ValueError(f"opus_share must be in [0, 1], got {self.opus_share}")
        ranges = {
            "vtlp_factors": self.vtlp_factors,
            "rt60_s": self.rt60_s,
            "direct_to_reverb_db": self.direct_to_reverb_db,
            "snr_db": self.snr_db,
            "gain_db": self.gain_db,
            "opus_kbps": self.opus_kbps,
        }
        for name, (low, high) in ranges.items():
            if low > high:
                raise ValueError(f"{name} must be (low, high), got ({low}, {high})")
        if self.vtlp_factors[0] <= 0 or self.rt60_s[0] <= 0 or self.opus_kbps[0] < 6:
            raise ValueError("vtlp factors and RT60 must be positive, Opus at least 6 kbps")

    def to_dict(self) -> dict[str, Any]:
        """JSON values (ranges as lists, as they come back from a stored header)."""
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


# ------------------------------------------------------------------------------ conditions


def vtlp_warp(frequency_hz: np.ndarray, factor: float, *, sample_rate: int) -> np.ndarray:
    """Jaitly and Hinton's piecewise-linear warp: ``f -> factor * f`` up to
    ``VTLP_BOUNDARY_HZ * min(factor, 1) / factor``, then the straight line to Nyquist."""
    nyquist = sample_rate / 2.0
    boundary = VTLP_BOUNDARY_HZ * sample_rate / ENGINE_RATE * min(factor, 1.0) / factor
    f = np.asarray(frequency_hz, dtype=np.float64)
    upper = nyquist - (nyquist - factor * boundary) / (nyquist - boundary) * (nyquist - f)
    return np.where(f <= boundary, factor * f, upper)


def _stft(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frames, bins) complex STFT of the centred-padded signal, and the window."""
    window = np.hanning(_STFT_SIZE + 1)[:-1]
    half = _STFT_SIZE // 2
    frames = -(-len(audio) // _STFT_HOP) + 1
    padded = np.zeros((frames - 1) * _STFT_HOP + _STFT_SIZE)
    padded[half : half + len(audio)] = audio
    cut = np.lib.stride_tricks.sliding_window_view(padded, _STFT_SIZE)[::_STFT_HOP]
    return np.fft.rfft(cut * window, axis=1), window


def _istft(spectrum: np.ndarray, window: np.ndarray, length: int) -> np.ndarray:
    frames = np.fft.irfft(spectrum, n=_STFT_SIZE, axis=1) * window
    total = (len(frames) - 1) * _STFT_HOP + _STFT_SIZE
    out = np.zeros(total)
    norm = np.zeros(total)
    for index, frame in enumerate(frames):
        start = index * _STFT_HOP
        out[start : start + _STFT_SIZE] += frame
        norm[start : start + _STFT_SIZE] += window**2
    half = _STFT_SIZE // 2
    return out[half : half + length] / np.maximum(norm[half : half + length], 1e-8)


def _princarg(phase: np.ndarray) -> np.ndarray:
    return np.asarray(np.mod(phase + np.pi, 2.0 * np.pi) - np.pi)


def _peak_owners(magnitude: np.ndarray) -> np.ndarray:
    """(frames, bins) -> (frames, bins) int: the bin of the local maximum of each frame
    nearest to every bin (the bin itself in a frame without one)."""
    frames, bins = magnitude.shape
    inner = magnitude[:, 1:-1]
    peak = np.zeros_like(magnitude, dtype=bool)
    peak[:, 1:-1] = (inner > magnitude[:, :-2]) & (inner >= magnitude[:, 2:])
    index = np.broadcast_to(np.arange(bins), (frames, bins))
    left = np.maximum.accumulate(np.where(peak, index, -1), axis=1)
    right = np.minimum.accumulate(np.where(peak, index, bins)[:, ::-1], axis=1)[:, ::-1]
    use_left = (left >= 0) & ((right >= bins) | (index - left <= right - index))
    owner = np.where(use_left, left, right)
    return np.where((owner < 0) | (owner >= bins), index, owner)


def vtlp(audio: np.ndarray, factor: float, *, sample_rate: int = ENGINE_RATE) -> np.ndarray:
    """The signal with its frequency axis warped by :func:`vtlp_warp` (a factor above 1
    moves formants and harmonics up: a shorter vocal tract); same length, timing and
    active power.

    Phase vocoder with identity phase locking: every output bin takes the magnitude of the
    input at the frequency that warps onto it; the spectral peaks of the output advance
    their phase at the warped instantaneous frequency, the bins around a peak keep their
    input phase relative to it (which keeps a partial's lobe coherent)."""
    samples = np.asarray(audio, dtype=np.float64)
    if factor == 1.0 or len(samples) == 0:
        return samples.astype(np.float32)
    spectrum, window = _stft(samples)
    bins = spectrum.shape[1]
    bin_hz = sample_rate / _STFT_SIZE
    centres = np.arange(bins) * bin_hz
    # The input frequency that lands on every output bin (the warp is increasing).
    position = np.interp(centres, vtlp_warp(centres, factor, sample_rate=sample_rate), centres)
    position /= bin_hz
    nearest = np.clip(np.rint(position).astype(np.int64), 0, bins - 1)
    low = np.clip(np.floor(position).astype(np.int64), 0, bins - 1)
    high = np.clip(low + 1, 0, bins - 1)
    weight = position - low
    magnitude = np.abs(spectrum)
    warped_magnitude = (1.0 - weight) * magnitude[:, low] + weight * magnitude[:, high]
    # Instantaneous frequency (Hz) of every input bin from its phase advance over a hop.
    phase = np.angle(spectrum)
    expected = 2.0 * np.pi * np.arange(bins) * _STFT_HOP / _STFT_SIZE
    advance = np.diff(phase, axis=0, prepend=phase[:1] - expected[None, :])
    instantaneous = (expected + _princarg(advance - expected)) * sample_rate
    instantaneous /= 2.0 * np.pi * _STFT_HOP
    warped_hz = vtlp_warp(np.abs(instantaneous[:, nearest]), factor, sample_rate=sample_rate)
    step = 2.0 * np.pi * warped_hz * _STFT_HOP / sample_rate
    running = phase[:1, nearest] + np.cumsum(step, axis=0) - step[:1]
    source_phase = phase[:, nearest]
    owner = _peak_owners(warped_magnitude)
    output_phase = (
        np.take_along_axis(running, owner, axis=1)
        + source_phase
        - np.take_along_axis(source_phase, owner, axis=1)
    )
    warped = _istft(warped_magnitude * np.exp(1j * output_phase), window, len(samples))
    before, after = active_power(samples), active_power(warped)
    if after > 0:
        warped *= np.sqrt(before / after)
    return warped.astype(np.float32)


def active_power(audio: np.ndarray) -> float:
    """Mean power of the 20 ms frames within 40 dB of the loudest (the speech), 0 for
    digital silence."""
    samples = np.asarray(audio, dtype=np.float64)
    usable = len(samples) // _POWER_FRAME * _POWER_FRAME
    if usable == 0:
        return float(np.mean(samples**2)) if len(samples) else 0.0
    powers = (samples[:usable].reshape(-1, _POWER_FRAME) ** 2).mean(axis=1)
    loudest = float(powers.max())
    if loudest <= 0:
        return 0.0
    return float(powers[powers >= loudest * 10.0 ** (-_ACTIVE_RANGE_DB / 10.0)].mean())


def pink_noise(length: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise with a 1/f power spectrum."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    frequency = np.arange(len(spectrum), dtype=np.float64)
    spectrum[1:] /= np.sqrt(frequency[1:])
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n=length)
    return noise / max(float(np.sqrt(np.mean(noise**2))), 1e-12)


def babble(length: int, pool: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Unit-power babble: three to six random stretches of ``pool`` (other clips'
    speech) at equal active power, summed."""
    total = np.zeros(length)
    for _ in range(int(rng.integers(3, 7))):
        talker = np.asarray(pool[int(rng.integers(len(pool)))], dtype=np.float64)
        if len(talker) == 0:
            continue
        repeated = np.tile(talker, -(-length // len(talker)) + 1)
        start = int(rng.integers(len(talker)))
        segment = repeated[start : start + length]
        total += segment / np.sqrt(max(active_power(segment), 1e-12))
    return total / max(float(np.sqrt(np.mean(total**2))), 1e-12)


def add_noise(
    audio: np.ndarray,
    snr_db: float,
    kind: str,
    rng: np.random.Generator,
    pool: Sequence[np.ndarray] = (),
) -> np.ndarray:
    """``audio`` plus ``kind`` noise (white, pink, babble from ``pool``; pink when the
    pool is empty) at ``snr_db`` below the speech's active power."""
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise kind must be one of {NOISE_KINDS}, got {kind!r}")
    samples = np.asarray(audio, dtype=np.float64)
    power = active_power(samples)
    if power <= 0 or len(samples) == 0:
        return samples.astype(np.float32)
    if kind == "white":
        noise = rng.standard_normal(len(samples))
    elif kind == "babble" and pool:
        noise = babble(len(samples), pool, rng)
    else:
        noise = pink_noise(len(samples), rng)
    scale = np.sqrt(power / 10.0 ** (snr_db / 10.0))
    return (samples + scale * noise).astype(np.float32)


def room_impulse_response(
    rt60_s: float,
    direct_to_reverb_db: float,
    rng: np.random.Generator,
    *,
    sample_rate: int = ENGINE_RATE,
) -> np.ndarray:
    """A synthetic room: 1 at sample 0 (the direct sound), then from 2 ms on Gaussian
    noise decaying by 60 dB over ``rt60_s``, its energy ``direct_to_reverb_db`` below the
    direct sound's."""
    length = max(int(rt60_s * sample_rate), 2)
    time = np.arange(length) / sample_rate
    tail = rng.standard_normal(length) * np.exp(-3.0 * np.log(10.0) * time / rt60_s)
    tail[: int(0.002 * sample_rate) + 1] = 0.0
    energy = float(np.sum(tail**2))
    if energy > 0:
        tail *= np.sqrt(10.0 ** (-direct_to_reverb_db / 10.0) / energy)
    tail[0] = 1.0
    return tail


def reverberate(audio: np.ndarray, impulse_response: np.ndarray) -> np.ndarray:
    """``audio`` through the room, same length and active power (the direct sound at
    sample 0 keeps the timing)."""
    samples = np.asarray(audio, dtype=np.float64)
    if len(samples) == 0:
        return samples.astype(np.float32)
    wet = fftconvolve(samples, impulse_response)[: len(samples)]
    before, after = active_power(samples), active_power(wet)
    if after > 0:
        wet *= np.sqrt(before / after)
    return wet.astype(np.float32)


def opus_round_trip(
    audio: np.ndarray, bitrate: int, *, sample_rate: int = ENGINE_RATE
) -> np.ndarray:
    """``audio`` encoded with Opus (libopus through PyAV, 20 ms frames, ``bitrate`` bit/s)
    and decoded: same length, aligned (the encoder's pre-skip removed)."""
    samples = np.asarray(audio, dtype=np.float32)
    if len(samples) == 0:
        return samples.copy()
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = sample_rate
    encoder.layout = "mono"
    encoder.format = "flt"
    encoder.bit_rate = int(bitrate)
    encoder.time_base = Fraction(1, sample_rate)
    encoder.open()
    size = encoder.frame_size
    # Two frames of silence past the end flush the encoder's look-ahead.
    padded = np.zeros(len(samples) + (-len(samples)) % size + 2 * size, np.float32)
    padded[: len(samples)] = np.clip(samples, -1.0, 1.0)
    packets = []
    for start in range(0, len(padded), size):
        frame = av.AudioFrame.from_ndarray(
            padded[None, start : start + size], format="flt", layout="mono"
        )
        frame.sample_rate = sample_rate
        frame.pts = start
        packets.extend(encoder.encode(frame))
    packets.extend(encoder.encode(None))
    pre_skip = -int(packets[0].pts or 0)
    decoder = av.CodecContext.create("libopus", "r")
    decoded: list[np.ndarray] = []
    rate_out = sample_rate
    for packet in packets:
        for frame in decoder.decode(packet):
            rate_out = frame.sample_rate
            data = frame.to_ndarray()
            channel = (
                data[0]
                if frame.format.is_planar
                else data.reshape(-1, frame.layout.nb_channels)[:, 0]
            )
            decoded.append(pcm_to_float(channel))
    out = resample(np.concatenate(decoded), rate_out, sample_rate)[pre_skip:]
    result = np.zeros(len(samples), np.float32)
    result[: min(len(out), len(samples))] = out[: len(samples)]
    return result


def telephone(audio: np.ndarray, *, sample_rate: int = ENGINE_RATE) -> np.ndarray:
    """A telephone line: 300-3400 Hz (zero-phase band-pass), 8 kHz, 8-bit mu-law, back at
    ``sample_rate``; same length, aligned."""
    samples = np.asarray(audio, dtype=np.float64)
    if len(samples) < 64:
        return samples.astype(np.float32)
    sos = butter(4, TELEPHONE_BAND_HZ, btype="bandpass", fs=sample_rate, output="sos")
    narrow = resample(sosfiltfilt(sos, samples).astype(np.float32), sample_rate, TELEPHONE_RATE)
    clipped = np.clip(narrow.astype(np.float64), -1.0, 1.0)
    companded = np.sign(clipped) * np.log1p(MU_LAW * np.abs(clipped)) / np.log1p(MU_LAW)
    quantised = np.round(companded * 127.0) / 127.0
    expanded = np.sign(quantised) * np.expm1(np.abs(quantised) * np.log1p(MU_LAW)) / MU_LAW
    back = resample(expanded.astype(np.float32), TELEPHONE_RATE, sample_rate)
    result = np.zeros(len(samples), np.float32)
    result[: min(len(back), len(samples))] = back[: len(samples)]
    return result


# ----------------------------------------------------------------------------------- chain


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def augment(
    audio: np.ndarray,
    config: AugmentConfig,
    rng: np.random.Generator,
    pool: Sequence[np.ndarray] = (),
) -> tuple[np.ndarray, dict[str, Any]]:
    """One seeded pass of the chain (module docstring) over mono float32 16 kHz audio;
    returns the audio (same length, in [-1, 1]) and what was applied. Every condition
    draws its coin and its settings whether it applies or not, so one condition's
    probability does not change another's draws."""
    samples = np.asarray(audio, dtype=np.float32)
    applied: dict[str, Any] = {}
    coins = rng.random(5)
    factor = _uniform(rng, config.vtlp_factors)
    rt60, drr = _uniform(rng, config.rt60_s), _uniform(rng, config.direct_to_reverb_db)
    room_seed, noise_seed = (int(value) for value in rng.integers(0, 2**63 - 1, size=2))
    snr, kind = _uniform(rng, config.snr_db), NOISE_KINDS[int(rng.integers(len(NOISE_KINDS)))]
    gain = _uniform(rng, config.gain_db)
    opus, kbps = bool(rng.random() < config.opus_share), _uniform(rng, config.opus_kbps)
    if coins[0] < config.vtlp_probability:
        samples = vtlp(samples, factor)
        applied["vtlp"] = round(factor, 3)
    if coins[1] < config.reverb_probability:
        room = room_impulse_response(rt60, drr, np.random.default_rng(room_seed))
        samples = reverberate(samples, room)
        applied["reverb"] = {"rt60_s": round(rt60, 3), "drr_db": round(drr, 1)}
    if coins[2] < config.noise_probability:
        if kind == "babble" and not pool:
            kind = "pink"
        samples = add_noise(samples, snr, kind, np.random.default_rng(noise_seed), pool)
        applied["noise"] = {"kind": kind, "snr_db": round(snr, 1)}
    if coins[3] < config.gain_probability:
        samples = (samples * np.float32(10.0 ** (gain / 20.0))).astype(np.float32)
        applied["gain_db"] = round(gain, 1)
    if coins[4] < config.codec_probability:
        if opus:
            samples = opus_round_trip(samples, round(kbps * 1000))
            applied["codec"] = f"opus {kbps:.0f} kbps"
        else:
            samples = telephone(samples)
            applied["codec"] = "telephone"
    return np.clip(samples, -1.0, 1.0).astype(np.float32), applied


def clip_seed(seed: int, clip_id: str, version: int) -> list[int]:
    """The seed of a clip's augmented version: a function of the clip's id, not of its
    place in the dataset."""
    digest = hashlib.sha256(clip_id.encode("utf-8")).digest()
    return [seed, int.from_bytes(digest[:8], "little"), version]


def augmented_mels(
    audio: np.ndarray,
    clip_id: str,
    config: AugmentConfig,
    mel_config: MelConfig,
    pool: Sequence[np.ndarray] = (),
) -> list[np.ndarray]:
    """``config.versions`` (M, num_mels) float32 log-mels of augmented versions of a clip's
    audio (int16 or float, 16 kHz), each from :func:`engine.audio.log_mel`."""
    samples = pcm_to_float(audio)
    mels = []
    for version in range(config.versions):
        rng = np.random.default_rng(clip_seed(config.seed, clip_id, version))
        augmented, _ = augment(samples, config, rng, pool)
        mels.append(log_mel(augmented, mel_config))
    return mels
