"""Measurement stamps: a frame-index pattern painted into each video frame and a tone burst
in the audio at known samples, so that a viewer can measure A/V offset and latency from
what it actually presents (``serve --stamp``; the page's stats overlay reads them).

Video: a strip of ``STAMP_BLOCK`` px blocks along the bottom-left edge of the frame. Block
0 is white and block 1 black (guards, and the reader's threshold); blocks 2 .. 17 carry bits
15 .. 0 of the frame index modulo 65536 (white = 1). 16 px blocks sit on H.264 macroblocks
and survive any sane bitrate.

Audio: every ``CLICK_EVERY`` output samples (1 s) a ``CLICK_MS`` burst of a ``CLICK_HZ``
tone, Hann-windowed, starting exactly at sample ``k * CLICK_EVERY`` — the first sample of
frame ``k * CLICK_EVERY / 1920``. Speech has next to no energy at 15 kHz, so a high-pass
filter and a threshold find the burst's onset to the sample; Opus at 48 kHz keeps it.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from presenter.media import OUTPUT_RATE, AudioChunk, VideoOut

STAMP_BLOCK = 16  # px
STAMP_BITS = 16
STAMP_BLOCKS = 2 + STAMP_BITS
CLICK_EVERY = OUTPUT_RATE  # samples between bursts (1 s at 48 kHz)
CLICK_HZ = 15000.0
CLICK_MS = 5.0
CLICK_AMPLITUDE = 0.5
_WHITE, _BLACK = 235, 16  # video-range luma


def stamp_layout(height: int) -> dict[str, int]:
    """Where the strip is, for the viewer (``hello`` message)."""
    return {"y": height - STAMP_BLOCK, "block": STAMP_BLOCK, "bits": STAMP_BITS}


def _levels(index: int) -> list[int]:
    bits = [(index >> bit) & 1 for bit in range(STAMP_BITS - 1, -1, -1)]
    return [_WHITE, _BLACK] + [_WHITE if bit else _BLACK for bit in bits]


def stamp_video(frame: VideoOut) -> VideoOut:
    """A copy of ``frame`` with its index painted in (RGB, or I420: into its luma plane, the
    chroma under the strip made neutral)."""
    image = frame.image.copy()
    block = STAMP_BLOCK
    planar = frame.format == "yuv420p"
    height = image.shape[0] * 2 // 3 if planar else image.shape[0]
    width = image.shape[1]
    if width < STAMP_BLOCKS * block:
        raise ValueError(f"a {width} px wide frame is too narrow for the stamp")
    top = height - block
    for position, level in enumerate(_levels(frame.index)):
        image[top:height, position * block : (position + 1) * block] = level
    if planar:
        # the U and V planes (H/2 x W/2 each, row-major) follow the Y plane, H/4 rows of W
        span = STAMP_BLOCKS * block // 2
        for plane in range(2):
            start = height + plane * (height // 4)
            chroma = image[start : start + height // 4].reshape(height // 2, width // 2)
            chroma[top // 2 :, :span] = 128
    return replace(frame, image=image)


def read_stamp(rgb: np.ndarray) -> int | None:
    """The frame index (mod 65536) painted into an RGB frame, or None without a stamp."""
    height = rgb.shape[0]
    block = STAMP_BLOCK
    top = height - block
    luma = rgb[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    centre = slice(block // 4, block - block // 4)
    levels = [
        float(luma[top:height][centre, position * block : (position + 1) * block][:, centre].mean())
        for position in range(STAMP_BLOCKS)
    ]
    white, black = levels[0], levels[1]
    if white - black < 100:
        return None
    threshold = (white + black) / 2
    index = 0
    for level in levels[2:]:
        index = index * 2 + (1 if level > threshold else 0)
    return index


def click_burst() -> np.ndarray:
    """The burst put into the audio (float32)."""
    count = round(OUTPUT_RATE * CLICK_MS / 1000)
    t = np.arange(count) / OUTPUT_RATE
    window = np.hanning(count + 2)[1:-1]
    return (CLICK_AMPLITUDE * window * np.sin(2 * math.pi * CLICK_HZ * t)).astype(np.float32)


def stamp_audio(chunk: AudioChunk, burst: np.ndarray) -> AudioChunk:
    """``chunk`` with the part of any burst that falls into it added (a copy when it does)."""
    first = -(-chunk.pts // CLICK_EVERY) * CLICK_EVERY
    # a burst that began in the previous chunk may still run into this one
    starts = [s for s in (first - CLICK_EVERY, first) if s + len(burst) > chunk.pts]
    starts = [s for s in starts if s >= 0 and s < chunk.end]
    if not starts:
        return chunk
    pcm = chunk.pcm.copy()
    for start in starts:
        lo, hi = max(start, chunk.pts), min(start + len(burst), chunk.end)
        pcm[lo - chunk.pts : hi - chunk.pts] += burst[lo - start : hi - start]
    np.clip(pcm, -1.0, 1.0, out=pcm)
    return replace(chunk, pcm=pcm)
