"""Lip sync through the live microphone path against the same clip rendered offline.

``python -m benchmarks.mic_parity [--seconds 60] [--model default] [--backend auto]
[--mic page|unprocessed|muted] [--out DIR]``

1. *The clip* (``benchmarks/mic_clip.py``): sentences of the sentence generator with a
   seed of this benchmark's own, spoken by the corpus's held-out espeak-ng voice
   (``en-us+f3``: no training clip used it), one after another with short pauses, until
   they last ``--seconds``; the WAV has lead and tail silence around them. *Truth*: the
   corpus rig's mouth for that phone timeline, the inner-lip gap over the eye-corner
   distance (``engine.articulation.gap_and_width``) at 25 fps.
2. *Offline*: ``python -m presenter render --audio CLIP.wav`` (the default avatar), its
   frames read back from the mp4.
3. *Live*: ``python -m presenter serve --source browser-mic`` and one headless Chromium
   viewer whose fake microphone plays the WAV: the page's own microphone request (echo
   cancellation, noise suppression, gain control), Opus to the server, the avatar rendered
   live and sent back as H.264; every frame the page presents is read back in the page
   (``benchmarks/mic_capture.py``) and placed in the stream by its RTP timestamp.
   ``--mic unprocessed`` asks for the microphone without the browser's processing, ``--mic
   muted`` mutes the page's playback: variants that show what that processing costs.
4. Both renderings are cropped to the same face box, turned into RGB by the same
   conversion and tracked by MediaPipe (``engine.tracking.FaceTracker``), mouth gap as for
   the truth. The live frames are placed on the clip's frames by the lag that best matches
   their gap to the offline gap (the same model on the same sound: whatever the connection
   took is taken out, nothing is fitted to the truth), searched over mic-to-screen
   latencies of -1 to 3 s by the page's clock; the best lag over every lag the capture
   allows is reported beside it.

Reported: the correlation of each rendering's gap with the truth over the clip (its
sentences and the pauses around them), pooled and over speech frames only, on the frames
both renderings have (and on all frames of each); live minus offline (goal: within
``GOAL``); the lag of each against the truth (+-5 frames); the alignment (its lag, its peak
and the best correlation away from it); per 10 s window; the approximate time from the
microphone playing a sound to the frame showing it on the page; what the server's input
lost (chunks not filled in time, backlog dropped) and the frames it dropped. Writes
``mic_parity.json`` and ``mic_parity.png`` (gap over time: truth, offline, live; a variant:
``mic_parity_VARIANT.*``) to ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.mic_capture import CropBox, LiveCapture, capture_live, yuv_to_rgb
from benchmarks.mic_clip import (
    LEAD_S,
    PAUSE_S,
    SENTENCE_SEED,
    TAIL_S,
    Clip,
    make_clip,
)
from benchmarks.provenance import REPOSITORY, RESULTS, write_result
from benchmarks.quality_rows import MAX_LAG_FRAMES
from engine.articulation import gap_and_width
from engine.backend_registry import BACKEND_NAMES
from engine.data.synth.corpus import ESPEAK_HELDOUT_VOICE
from engine.frames import FPS
from engine.lipsync_metrics import best_lag, pearson
from presenter.testing.live_harness import write_wav

log = logging.getLogger(__name__)

GOAL = 0.05  # |live - offline| correlation with the truth
CAPTURE_AFTER_S = 1.5  # capture goes on this long after the WAV has played once
WINDOW_S = 10.0  # the per-window figures
BOX_MARGIN = 0.35  # the face box: the landmarks' extent plus this share of it on each side
MIN_OVERLAP = 0.25  # an alignment needs this share of the clip's frames in both renderings
# mic-to-screen latencies (s) the alignment searches: microphone, Opus, the server's stream
# delay, H.264, the page's jitter buffer (about half a second when the machine keeps up)
LATENCY_SEARCH_S = (-1.0, 3.0)
# the server's /status at the end of the live run, as reported (the input side too: chunks
# the microphone did not fill in time, its backlog dropped, the pacing re-anchored)
# How the page's microphone runs: as the page is (the measurement), or a variant that
# shows what the browser's own processing of the microphone costs.
MIC_VARIANTS = {
    "page": "as the page asks for it (echo cancellation, noise suppression, gain control)",
    "unprocessed": "echo cancellation, noise suppression and gain control off",
    "muted": "as the page asks for it, the page's playback muted (the echo canceller hears "
    "no avatar)",
}
UNPROCESSED = ("echoCancellation", "noiseSuppression", "autoGainControl")
MICROPHONE_SETTINGS = (  # what the browser's microphone track ran with, as reported
    "echoCancellation", "noiseSuppression", "autoGainControl", "sampleRate", "channelCount",
)  # fmt: skip
SERVER_FIGURES = (
    "source", "engine", "delayMs", "framesEmitted", "framesDropped", "sourceUnderruns",
    "liveSamplesDropped", "reanchors",
)  # fmt: skip


# -- renderings ---------------------------------------------------------------------------


def render_offline(wav: Path, out: Path, *, model: str, backend: str) -> str:
    """``python -m presenter render --audio WAV --out OUT``; its log (stderr)."""
    command = [sys.executable, "-m", "presenter", "render", "--audio", str(wav), "--out", str(out)]
    command += ["--model", model, "--backend", backend]
    done = subprocess.run(
        command, cwd=REPOSITORY, capture_output=True, text=True, timeout=1800, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"presenter render failed:\n{done.stderr[-3000:]}")
    return done.stderr


def read_planes(path: Path, step: int = 1) -> list[np.ndarray]:
    """Every ``step``-th frame of a video as decoded: packed I420 planes (H * 3 / 2, W)."""
    import av

    with av.open(str(path)) as container:
        frames = container.decode(video=0)
        return [f.to_ndarray(format="yuv420p") for i, f in enumerate(frames) if i % step == 0]


def track(frames: np.ndarray) -> np.ndarray:
    """(T, 478, 2) landmarks of the one face in each image; NaN where none is found."""
    from engine.tracking import FaceTracker

    result = np.full((len(frames), 478, 2), np.nan)
    with FaceTracker(video=False, max_faces=1) as tracker:
        for index, image in enumerate(frames):
            faces = tracker.detect(np.ascontiguousarray(image))
            if faces:
                result[index] = faces[0].landmarks[:, :2]
    return result


def face_box(planes: list[np.ndarray]) -> CropBox:
    """A square around the face in these (packed I420) frames, with :data:`BOX_MARGIN` of
    its size on each side, on even pixels."""
    landmarks = track(np.stack([yuv_to_rgb(frame) for frame in planes]))
    if not np.isfinite(landmarks).any():
        raise RuntimeError("no face found in the offline rendering")
    low, high = np.nanmin(landmarks, axis=(0, 1)), np.nanmax(landmarks, axis=(0, 1))
    height, width = planes[0].shape[0] * 2 // 3, planes[0].shape[1]
    side = min(int(np.ceil(max(high - low) * (1 + 2 * BOX_MARGIN) / 2)) * 2, height, width)
    centre = (low + high) / 2
    x = int(np.clip(round((centre[0] - side / 2) / 2) * 2, 0, width - side))
    y = int(np.clip(round((centre[1] - side / 2) / 2) * 2, 0, height - side))
    return CropBox(x, y, side, side)


# -- alignment and figures ----------------------------------------------------------------


@dataclass(frozen=True)
class Alignment:
    lag: int  # live stream frame = clip frame + lag
    subframe_lag: float  # from a parabola through the peak and its neighbours
    peak: float  # correlation of the live gap with the offline gap at ``lag``
    runner_up: float  # the best correlation more than MAX_LAG_FRAMES away from ``lag``
    searched: tuple[int, int]


def align(
    live: np.ndarray, offline: np.ndarray, span: tuple[int, int], lags: np.ndarray
) -> Alignment:
    """Of ``lags``, the lag of the live gap (on stream frames) against the offline gap over
    ``span`` (clip frames) with the best correlation; a lag that leaves less than
    :data:`MIN_OVERLAP` of the span's frames in both is not taken."""
    first, last = span
    needed = max(25, int(MIN_OVERLAP * (last - first)))
    reference = offline[first:last]
    scores = np.full(lags.size, -np.inf)
    for position, lag in enumerate(lags):
        shifted = on_clip(live, int(lag), last)[first:]
        if int((np.isfinite(shifted) & np.isfinite(reference)).sum()) >= needed:
            scores[position] = pearson(shifted, reference)
    scores = np.where(np.isfinite(scores), scores, -np.inf)
    if not np.isfinite(scores).any():
        raise RuntimeError("the live capture does not overlap the clip enough to align it")
    peak = int(np.argmax(scores))
    offset = 0.0
    if 0 < peak < lags.size - 1 and np.isfinite(scores[peak - 1 : peak + 2]).all():
        left, centre, right = scores[peak - 1 : peak + 2]
        curvature = left - 2 * centre + right
        if curvature < 0:
            offset = float(0.5 * (left - right) / curvature)
    away = (np.abs(lags - lags[peak]) > MAX_LAG_FRAMES) & np.isfinite(scores)
    return Alignment(
        lag=int(lags[peak]),
        subframe_lag=float(lags[peak] + offset),
        peak=float(scores[peak]),
        runner_up=float(scores[away].max()) if away.any() else float("nan"),
        searched=(int(lags[0]), int(lags[-1])),
    )


def every_lag(live: np.ndarray, span: tuple[int, int]) -> np.ndarray:
    """Every lag that puts a frame of the live capture on the clip's span."""
    return np.arange(-span[1] + 1, live.size - span[0])


def timed_lags(capture: LiveCapture) -> tuple[np.ndarray, float] | None:
    """The lags that put the mic-to-screen latency within :data:`LATENCY_SEARCH_S`, from
    the page's clock (the fake microphone starts its file when ``getUserMedia`` resolves;
    a frame's display time), and the lag of zero latency; None without that clock."""
    if capture.mic_granted_ms is None or not len(capture.index):
        return None
    played = (capture.display_ms - capture.mic_granted_ms) * FPS / 1000.0  # clip frames
    zero = float(np.median(capture.index - played))
    low, high = LATENCY_SEARCH_S
    return np.arange(int(np.floor(zero + low * FPS)), int(np.ceil(zero + high * FPS)) + 1), zero


def on_clip(live: np.ndarray, lag: int, frames: int) -> np.ndarray:
    """The live signal (on stream frames) on the clip's frames: clip frame j <- j + lag."""
    placed = np.full(frames, np.nan)
    lo, hi = max(0, -lag), min(frames, live.size - lag)
    if hi > lo:
        placed[lo:hi] = live[lo + lag : hi + lag]
    return placed


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


def correlations(clip: Clip, gap: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """Correlation of ``gap`` with the truth over ``mask``, pooled and speech frames only,
    and the lag with the best correlation (+-MAX_LAG_FRAMES)."""
    kept = np.where(mask, gap, np.nan)
    lag = best_lag([clip.truth], [kept], max_lag=MAX_LAG_FRAMES, fps=FPS)
    return {
        "pooled": _r(pearson(kept, clip.truth)),
        "speech": _r(pearson(np.where(clip.speech, kept, np.nan), clip.truth)),
        "frames": int(np.isfinite(kept).sum()),
        "speech_frames": int((np.isfinite(kept) & clip.speech).sum()),
        "best_lag_frames": lag.frames,
        "best_lag_ms": _r(lag.ms, 1),
        "at_best_lag": _r(lag.correlation),
    }


def windows(clip: Clip, offline: np.ndarray, live: np.ndarray) -> list[dict[str, Any]]:
    """Per WINDOW_S of the clip, on the frames both renderings have."""
    rows = []
    step = round(WINDOW_S * FPS)
    for start in range(clip.span[0], clip.span[1], step):
        mask = np.zeros(clip.frames, bool)
        mask[start : min(start + step, clip.span[1])] = True
        both = mask & np.isfinite(offline) & np.isfinite(live)
        rows.append(
            {
                "from_s": round((start - clip.span[0]) / FPS, 2),
                "frames": int(both.sum()),
                "offline": _r(pearson(np.where(both, offline, np.nan), clip.truth)),
                "live": _r(pearson(np.where(both, live, np.nan), clip.truth)),
            }
        )
    return rows


def figures(
    clip: Clip, offline: np.ndarray, capture: LiveCapture, live_gap: np.ndarray
) -> tuple[dict[str, Any], np.ndarray]:
    """Everything reported, from the offline gap (clip frames) and the live gap (stream
    frames from the first captured); and the live gap placed on the clip's frames."""
    span = clip.in_span()
    timed = timed_lags(capture)
    anywhere = align(live_gap, offline, clip.span, every_lag(live_gap, clip.span))
    alignment = anywhere if timed is None else align(live_gap, offline, clip.span, timed[0])
    live = on_clip(live_gap, alignment.lag, clip.frames)
    presented = np.zeros(live_gap.size)
    presented[capture.index] = 1.0
    shown = on_clip(presented, alignment.lag, clip.frames) > 0
    both = span & np.isfinite(offline) & np.isfinite(live)
    result: dict[str, Any] = {
        "offline": correlations(clip, offline, both),
        "live": correlations(clip, live, both),
    }
    difference = {}
    for key in ("pooled", "speech"):
        a, b = result["live"][key], result["offline"][key]
        difference[key] = None if a is None or b is None else _r(a - b)
    result["difference"] = difference
    met = [abs(value) <= GOAL for value in difference.values() if value is not None]
    result["goal"] = f"|live - offline| <= {GOAL} (pooled and speech frames)"
    result["goal_met"] = bool(met) and all(met)
    result["all_frames"] = {
        "offline": correlations(clip, offline, span & np.isfinite(offline)),
        "live": correlations(clip, live, span & np.isfinite(live)),
    }
    result["frames"] = {
        "clip": int(span.sum()),
        "compared": int(both.sum()),
        "offline_tracked": int((span & np.isfinite(offline)).sum()),
        "live_presented": int((span & shown).sum()),
        "live_tracked": int((span & np.isfinite(live)).sum()),
    }
    result["alignment"] = {
        "method": "the lag of the live gap (stream frames, by RTP timestamp) against the "
        "offline gap with the best correlation, over mic-to-screen latencies of "
        f"{LATENCY_SEARCH_S[0]:g} to {LATENCY_SEARCH_S[1]:g} s by the page's clock",
        "lag_frames": alignment.lag,
        "subframe_lag_frames": _r(alignment.subframe_lag, 2),
        "clip_start_stream_frame": alignment.lag + clip.span[0],
        "live_vs_offline_correlation": _r(alignment.peak),
        "best_correlation_elsewhere": _r(alignment.runner_up),
        "searched_lags": list(alignment.searched),
        # the best lag over every lag the capture allows (the clock not used): the same
        # lag when the alignment is unambiguous
        "best_lag_unconstrained": anywhere.lag,
        # the frame on the page's screen minus the microphone playing its sound (the fake
        # device starts its file about when getUserMedia resolves): approximate
        "mic_to_screen_ms_approx": None
        if timed is None
        else _r((alignment.subframe_lag - timed[1]) * 1000.0 / FPS, 1),
    }
    result["by_window"] = windows(clip, offline, live)
    return result, live


def plot(path: Path, clip: Clip, offline: np.ndarray, live: np.ndarray, title: str) -> None:
    """The gap over the clip: truth, offline, live; 20 s per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first, last = clip.span
    times = np.arange(last - first) / FPS
    row_s = min(20.0, float(np.ceil(times[-1])))
    rows = max(1, int(np.ceil(times[-1] / row_s)))
    figure, axes = plt.subplots(rows, 1, figsize=(15, 2.6 * rows + 0.6), squeeze=False)
    series = (
        ("truth (rig)", clip.truth, "black", 1.6),
        ("offline", offline, "tab:blue", 1.1),
        ("live (browser microphone)", live, "tab:orange", 1.1),
    )
    for row, axis in enumerate(axes[:, 0]):
        for label, values, colour, width in series:
            axis.plot(times, values[first:last], color=colour, linewidth=width, label=label)
        speech = clip.speech[first:last].astype(float)
        axis.fill_between(times, 0, speech * np.nanmax(clip.truth), color="0.92", step="mid")
        axis.set_xlim(row * row_s, (row + 1) * row_s)
        axis.set_ylabel("gap / eye corners")
    axes[0, 0].legend(loc="upper right", ncol=3, fontsize="small")
    axes[-1, 0].set_xlabel("clip time (s); grey: speech")
    figure.suptitle(title, fontsize="medium")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def runtimes(text: str) -> dict[str, str]:
    """The runtime of each of the engine's graphs, from a ``render`` or ``serve`` log."""
    found = re.findall(r"(\w+): (\w+) on (\S+) \((\w+)\)", text)
    return {graph: f"{name} on {device} ({precision})" for graph, name, device, precision in found}


def result_name(mic: str) -> str:
    """The result's file name (without suffix) for the microphone variant ``mic``."""
    return "mic_parity" if mic == "page" else f"mic_parity_{mic}"


def measure(
    seconds: float,
    *,
    model: str,
    backend: str,
    render_budget: str | None,
    mic: str,
    out: Path,
) -> dict[str, Any]:
    """The whole run; writes the plot to ``out``, returns the report."""
    began = time.perf_counter()
    clip = make_clip(seconds)
    log.info("clip: %d sentences, %.1f s in a %.1f s WAV", len(clip.sentences),
             (clip.span[1] - clip.span[0]) / FPS, clip.seconds)  # fmt: skip
    serve = ["--model", model, "--backend", backend]
    if render_budget is not None:
        serve += ["--render-budget", render_budget]
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        wav = write_wav(work / "clip.wav", clip.audio, clip.rate)
        video = work / "offline.mp4"
        used = {"offline": runtimes(render_offline(wav, video, model=model, backend=backend))}
        box = face_box(read_planes(video, step=10))
        planes = read_planes(video)
        if len(planes) != clip.frames:
            raise RuntimeError(f"render gave {len(planes)} frames for {clip.frames}")
        crops = np.stack([yuv_to_rgb(box.cut_i420(frame)) for frame in planes])
        del planes
        offline, _ = gap_and_width(track(crops))
        del crops
        log.info("offline: tracked; the live run (%.0f s)", clip.seconds)
        capture = capture_live(
            wav, seconds=clip.seconds + CAPTURE_AFTER_S, box=box, serve_args=serve,
            log=work / "serve.log", mute_playback=mic == "muted",
            audio_constraints=dict.fromkeys(UNPROCESSED, False) if mic == "unprocessed" else None,
        )  # fmt: skip
        used["live"] = runtimes((work / "serve.log").read_text())
    if not len(capture.index):
        raise RuntimeError(f"the page presented no frame: {capture.page}")
    if capture.index[-1] > 3 * clip.frames:
        raise RuntimeError("the stream's frame numbers jumped: the page reconnected")
    log.info("live: %d frames presented; tracking", len(capture.index))
    live_gap = np.full(int(capture.index[-1]) + 1, np.nan)
    live_gap[capture.index], _ = gap_and_width(track(capture.crops))
    result, live = figures(clip, offline, capture, live_gap)
    out.mkdir(parents=True, exist_ok=True)
    title = (
        f"mouth gap, model {model}: offline r={result['offline']['pooled']} (speech "
        f"{result['offline']['speech']}), live r={result['live']['pooled']} (speech "
        f"{result['live']['speech']}), on {result['frames']['compared']} frames"
    )
    picture = out / f"{result_name(mic)}.png"
    plot(picture, clip, offline, live, title)
    settings = capture.page.get("microphone_settings") or {}
    return {
        "what": "mouth-opening correlation with the truth (the rig's mouth for the phone "
        "timeline) of the avatar driven live through the browser's microphone, against the "
        "same clip rendered offline",
        "model": model,
        "backend": backend,
        "runtimes": used,
        "clip": {
            "voice": ESPEAK_HELDOUT_VOICE,
            "sentence_seed": SENTENCE_SEED,
            "sentences": len(clip.sentences),
            "seconds": round((clip.span[1] - clip.span[0]) / FPS, 2),
            "wav_seconds": round(clip.seconds, 2),
            "lead_pause_tail_s": [LEAD_S, PAUSE_S, TAIL_S],
            "text": list(clip.sentences),
        },
        "face_box": box.as_dict(),
        "results": result,
        "live_path": {
            "mic": mic,
            "mic_variant": MIC_VARIANTS[mic],
            "microphone": {key: settings.get(key) for key in MICROPHONE_SETTINGS},
            "microphone_request": (capture.page.get("microphone_request") or {}).get("constraints"),
            "frames_presented_in_page": capture.presented,
            "page_capture": capture.page.get("capture"),
            "server": {key: capture.server.get(key) for key in SERVER_FIGURES},
            "page_errors": capture.page.get("errors", []),
        },
        "plot": str(picture),
        "seconds": round(time.perf_counter() - began, 1),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.mic_parity", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=60.0,
        help="the clip: sentences are added until they and their pauses last this long "
        "(default 60)",
    )
    parser.add_argument("--model", default="default", help="model name or folder")
    parser.add_argument(
        "--backend",
        default="auto",
        choices=BACKEND_NAMES,
        help="inference runtime of render and serve (default auto, as the presenter's)",
    )
    parser.add_argument(
        "--render-budget", default=None, help="serve --render-budget (default: the server's)"
    )
    parser.add_argument(
        "--mic",
        choices=tuple(MIC_VARIANTS),
        default="page",
        help="the page's microphone: "
        + "; ".join(f"{name}: {text}" for name, text in MIC_VARIANTS.items())
        + " (default page; a variant writes mic_parity_VARIANT.json)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for mic_parity.json")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("GLOG_minloglevel", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    report = measure(
        args.seconds,
        model=args.model,
        backend=args.backend,
        render_budget=args.render_budget,
        mic=args.mic,
        out=args.out,
    )
    name = f"{result_name(args.mic)}.json"
    write_result(args.out / name, report, "benchmarks.mic_parity", argv)
    shown = {k: v for k, v in report["results"].items() if k != "by_window"}
    print(json.dumps(shown, indent=1))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
