"""Streaming polyphase resampler that reproduces :func:`engine.audio.resample` exactly.

Filter
------
For ``rate_out / rate_in = up / down`` in lowest terms, :func:`scipy.signal.resample_poly`
(as used by :func:`engine.audio.resample`) designs a linear-phase low-pass FIR ``h`` of
``L = 2 * half_len + 1`` taps with ``half_len = 10 * max(up, down)``
(``firwin(L, 1 / max(up, down), window=("kaiser", 5.0)) * up``), filters the zero-stuffed
input and keeps the output samples centred on the input. Working through its padding and
trimming, output sample ``n`` is, with ``x[i] = 0`` for ``i < 0`` and ``i >= N``::

    y[n] = sum_i x[i] * h[n * down + half_len - i * up]      (0 <= index < L)

so it depends on the input samples ``i`` with
``ceil((n * down - half_len) / up) <= i <= floor((n * down + half_len) / up)``, and there are
``ceil(N * up / down)`` output samples. :class:`StreamingResampler` evaluates this sum
directly (one polyphase branch per output sample, vectorised with numpy) for exactly the
output samples whose inputs have all arrived, keeping only the ``ceil(L / up)`` most recent
input samples as history.

Timing
------
Output sample ``n`` (time ``n / rate_out``) is *final*, and emitted by ``push``, once
``input_needed(n) = floor((n * down + half_len) / up) + 1`` input samples have arrived,
i.e. once the input reaches ``delay_samples_out = half_len / down`` output samples past
``n`` (equivalently ``half_len / up`` input samples past its time), rounded down to a whole
input sample. The latency is constant: 10 output samples (0.625 ms at 16 kHz) whenever the
signal is downsampled (``down > up``, e.g. 22.05/44.1/48 kHz -> 16 kHz) and ``10 * up / down``
output samples when it is upsampled (20 samples, 1.25 ms, for 8 kHz -> 16 kHz). Only the
Kaiser-windowed edge taps of ``h`` sit on the last input, so they are small, but they are
part of the offline sum and the streaming resampler waits for them. ``flush()`` emits the
remaining ``ceil(N * up / down) - samples_out`` samples, computed with zeros past the end
like the offline function. With ``rate_in == rate_out`` samples pass through unchanged with
zero delay.

The computation is in float64 like the offline path (input cast to float32 first, exactly as
:func:`engine.audio.resample` does); outputs are float32 and match the offline ones to within
float32 rounding of a float64 sum taken in a different order.
"""

from __future__ import annotations

from fractions import Fraction
from numbers import Integral

import numpy as np
from numpy.lib.stride_tricks import as_strided
from scipy.signal import firwin

from engine.frames import ENGINE_RATE

KAISER_BETA = 5.0  # resample_poly's default window=("kaiser", 5.0)
HALF_LENGTH_FACTOR = 10  # resample_poly: half_len = 10 * max(up, down)


def _empty() -> np.ndarray:
    return np.zeros(0, np.float32)


def _check_rate(name: str, rate: object) -> int:
    if isinstance(rate, bool) or not isinstance(rate, Integral):
        raise TypeError(f"{name} must be an integer number of Hz, got {rate!r}")
    if int(rate) <= 0:
        raise ValueError(f"sample rates must be positive, got {name}={rate}")
    return int(rate)


def _validated_pcm(pcm: np.ndarray) -> np.ndarray:
    """The chunk as float32 (the dtype :func:`engine.audio.resample` works from)."""
    samples = np.asarray(pcm)
    if samples.ndim != 1:
        raise ValueError(f"expected mono 1-D audio, got shape {samples.shape}")
    if samples.dtype.kind != "f":
        raise ValueError(f"expected floating-point PCM, got dtype {samples.dtype}")
    samples = samples.astype(np.float32, copy=False)
    if not np.isfinite(samples).all():
        raise ValueError("audio contains NaN or infinite samples")
    return samples


class StreamingResampler:
    """Mono float32 PCM from ``rate_in`` to ``rate_out`` Hz, pushed in chunks of any size.

    ``push`` returns the output samples made final by the chunk (possibly none), ``flush``
    ends the stream and returns the rest; the concatenation equals
    :func:`engine.audio.resample` on the whole signal. After ``flush``, ``push`` raises
    until ``reset``. See the module docstring for the timing.
    """

    def __init__(self, rate_in: int, rate_out: int = ENGINE_RATE) -> None:
        self._rate_in = _check_rate("rate_in", rate_in)
        self._rate_out = _check_rate("rate_out", rate_out)
        ratio = Fraction(self._rate_out, self._rate_in)
        self._up = ratio.numerator
        self._down = ratio.denominator
        self._identity = self._up == self._down == 1
        if self._identity:
            self._half_len = 0
            self._taps = 1
            self._phases = np.ones((1, 1), np.float64)
        else:
            max_rate = max(self._up, self._down)
            self._half_len = HALF_LENGTH_FACTOR * max_rate
            length = 2 * self._half_len + 1
            h = firwin(length, 1.0 / max_rate, window=("kaiser", KAISER_BETA))
            h = np.asarray(h, np.float64) * self._up
            self._taps = -(-length // self._up)  # taps per polyphase branch, ceil(L / up)
            padded = np.zeros(self._taps * self._up, np.float64)
            padded[:length] = h
            # branch[p, j] multiplies x[i_hi - (taps - 1) + j] where i_hi is the newest input
            # and p = (n * down + half_len) mod up the output sample's phase.
            branches = padded.reshape(self._taps, self._up).T[:, ::-1]
            self._phases = np.ascontiguousarray(branches)
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next ``push`` starts a new signal at sample 0."""
        self._samples_in = 0
        self._samples_out = 0
        self._flushed = False
        # History of input samples [base, samples_in); indices < 0 are the zero padding.
        self._base = min(0, self._first_input(0))
        self._history = np.zeros(-self._base, np.float64)

    # -- description ---------------------------------------------------------------------

    @property
    def rate_in(self) -> int:
        return self._rate_in

    @property
    def rate_out(self) -> int:
        return self._rate_out

    @property
    def up(self) -> int:
        """Numerator of ``rate_out / rate_in`` in lowest terms."""
        return self._up

    @property
    def down(self) -> int:
        """Denominator of ``rate_out / rate_in`` in lowest terms."""
        return self._down

    @property
    def half_length(self) -> int:
        """``half_len`` of the FIR filter (0 for the identity ratio)."""
        return self._half_len

    @property
    def samples_in(self) -> int:
        """Input samples received since the last ``reset``."""
        return self._samples_in

    @property
    def samples_out(self) -> int:
        """Output samples returned since the last ``reset``."""
        return self._samples_out

    @property
    def flushed(self) -> bool:
        return self._flushed

    @property
    def taps_per_branch(self) -> int:
        """Input samples each output sample is computed from: ``ceil(L / up)``."""
        return self._taps

    @property
    def buffered_samples(self) -> int:
        """Input history held between pushes (always fewer than ``taps_per_branch``)."""
        return len(self._history)

    @property
    def delay_samples_out(self) -> float:
        """Constant latency in output samples: ``half_len / down``."""
        return self._half_len / self._down

    @property
    def delay_samples_in(self) -> float:
        """The same latency in input samples: ``half_len / up``."""
        return self._half_len / self._up

    @property
    def delay_seconds(self) -> float:
        return self._half_len / (self._down * self._rate_out)

    def input_needed(self, n: int) -> int:
        """Input samples that must have arrived before output sample ``n`` is final:
        ``floor((n * down + half_len) / up) + 1``, i.e. ``floor((n + delay_samples_out)
        * rate_in / rate_out) + 1``."""
        if n < 0:
            raise ValueError(f"output sample index must be >= 0, got {n}")
        return (n * self._down + self._half_len) // self._up + 1

    def outputs_ready(self, samples_in: int) -> int:
        """Output samples that are final once ``samples_in`` input samples have arrived
        (the largest ``c`` with ``input_needed(c - 1) <= samples_in``)."""
        if samples_in < 0:
            raise ValueError(f"sample count must be >= 0, got {samples_in}")
        return max(0, (samples_in * self._up - 1 - self._half_len) // self._down + 1)

    def output_length(self, samples_in: int) -> int:
        """Output samples of a whole signal of ``samples_in`` samples:
        ``ceil(samples_in * rate_out / rate_in)``."""
        if samples_in < 0:
            raise ValueError(f"sample count must be >= 0, got {samples_in}")
        return -(-samples_in * self._up // self._down)

    # -- streaming -----------------------------------------------------------------------

    def push(self, pcm: np.ndarray) -> np.ndarray:
        """Append a chunk; returns the float32 output samples that became final."""
        if self._flushed:
            raise RuntimeError("push after flush: call reset() to start a new stream")
        samples = _validated_pcm(pcm)
        if self._identity:
            self._samples_in += len(samples)
            self._samples_out += len(samples)
            return samples.copy()
        if len(samples) == 0:
            return _empty()
        self._history = np.concatenate([self._history, samples.astype(np.float64)])
        self._samples_in += len(samples)
        return self._emit(self.outputs_ready(self._samples_in))

    def flush(self) -> np.ndarray:
        """End the stream: the remaining output samples, with zeros past the end."""
        if self._flushed:
            return _empty()
        self._flushed = True
        total = self.output_length(self._samples_in)
        if self._identity or total <= self._samples_out:
            return _empty()
        needed = self.input_needed(total - 1) - self._base  # history length the last needs
        if len(self._history) < needed:
            padding = np.zeros(needed - len(self._history), np.float64)
            self._history = np.concatenate([self._history, padding])
        return self._emit(total)

    # -- internals -----------------------------------------------------------------------

    def _first_input(self, n: int) -> int:
        """Oldest input index in output ``n``'s window of ``taps`` samples."""
        return (n * self._down + self._half_len) // self._up - self._taps + 1

    def _emit(self, end: int) -> np.ndarray:
        """Output samples ``[samples_out, end)``; the history must reach their inputs."""
        start = self._samples_out
        if end <= start:
            return _empty()
        history, taps, step = self._history, self._taps, self._history.strides[0]
        if self._up == 1:
            # Integer decimation: one branch, and each output's window starts `down` input
            # samples after the previous one, so the windows are a strided view of history.
            first = self._first_input(start) - self._base
            windows = as_strided(
                history[first:],
                shape=(end - start, taps),
                strides=(self._down * step, step),
                writeable=False,
            )
            out = windows @ self._phases[0]
        else:
            n = np.arange(start, end, dtype=np.int64)
            centre = n * self._down + self._half_len
            newest = centre // self._up
            phase = centre - newest * self._up
            first_all = newest - (taps - 1) - self._base
            windows = as_strided(
                history,
                shape=(len(history) - taps + 1, taps),
                strides=(step, step),
                writeable=False,
            )
            out = np.einsum("ij,ij->i", self._phases[phase], windows[first_all])
        self._samples_out = end
        # Keep only the history the next output sample needs.
        drop = self._first_input(end) - self._base
        if drop > 0:
            self._history = self._history[drop:].copy()
            self._base += drop
        return out.astype(np.float32)
