"""presenter/stamp.py: frame numbers survive H.264, bursts land on their samples."""

from __future__ import annotations

from dataclasses import replace

import av
import numpy as np

from engine.frames import FPS
from presenter.media import AudioChunk, VideoOut
from presenter.stamp import CLICK_EVERY, click_burst, read_stamp, stamp_audio, stamp_video
from presenter.webrtc import SharedVideoEncoder


def _i420(rgb: np.ndarray) -> np.ndarray:
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray()


def test_stamps_survive_h264_in_both_formats() -> None:
    rng = np.random.default_rng(1)
    encoder = SharedVideoEncoder(subscription=None, fps=FPS)  # type: ignore[arg-type]  # _encode only
    decoder = av.CodecContext.create("h264", "r")
    indices = [0, 1, 2, 25, 4095, 40000, 65535, 65536 + 7]
    decoded: list[int | None] = []
    for step, index in enumerate(indices):
        # a smooth picture with some grain (a face, not noise: noise at 1.5 Mbps is mush)
        ramp = np.linspace(40, 200, 512, dtype=np.float32)
        grain = rng.normal(0, 6, (512, 512, 3))
        rgb = np.clip(ramp[None, :, None] + ramp[:, None, None] * 0.2 + grain, 0, 255)
        rgb = rgb.astype(np.uint8)
        if step % 2:
            frame = VideoOut(image=_i420(rgb), pts_90k=0, index=index, speaking=0, format="yuv420p")
        else:
            frame = VideoOut(image=rgb, pts_90k=0, index=index, speaking=0)
        stamped = stamp_video(frame)
        assert stamped.image is not frame.image  # the source frame is untouched
        for packet in encoder._encode(replace(stamped, pts_90k=3600 * step), False):
            decoded += [read_stamp(f.to_ndarray(format="rgb24")) for f in decoder.decode(packet)]
    assert decoded == [index % 65536 for index in indices]
    # an unstamped frame reads as none
    assert read_stamp(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)) is None


def test_bursts_start_at_whole_seconds_whatever_the_chunking() -> None:
    burst = click_burst()
    total = 3 * CLICK_EVERY
    for size in (960, 100, 7):
        out = np.concatenate(
            [
                stamp_audio(
                    AudioChunk(np.zeros(min(size, total - p), np.float32), 48000, p), burst
                ).pcm
                for p in range(0, total, size)
            ]
        )
        onsets = np.flatnonzero(np.abs(out) > 0)
        assert onsets[0] == 1  # a Hann window is zero at its very first sample
        starts = [k * CLICK_EVERY for k in range(3)]
        for start in starts:
            np.testing.assert_allclose(out[start : start + len(burst)], burst, atol=1e-7)
        assert np.count_nonzero(out) == np.count_nonzero(np.tile(burst, 3))
