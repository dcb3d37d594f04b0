"""The speaking default avatar: a corpus of talking-head clips with phoneme timings.

A plan (minutes, seed, sources) becomes a deterministic list of clip specs; worker
processes synthesise or load the speech, render the avatar's frames from the phone timeline
and write, per clip, ``clips/<id>.mp4`` (512x512, 25 fps, speech at its native rate),
``clips/<id>.landmarks.safetensors`` (the rig's ground-truth landmarks and controls) and
``clips/<id>.json`` (text, phones, words, source, voice, split; written last, so a clip
with a sidecar is complete). A run that is stopped picks up where it was.

A fixed part of every source is held out for evaluation: one espeak-ng voice and its
sentences, a tenth of the Piper sentences and a tenth of the real prompts. Two sources are
for evaluation only (``EVALUATION_ONLY_SOURCES``: Flite and a second real speaker, see
``evaluation_sources``): all their clips are held out, and they take no part in the shares
of the minutes, so adding them to a plan changes none of its other clips. ``split`` makes
the clips of one split only: the other split's clips are still planned and their speech
synthesised (no video; ``speech_only/<id>.json`` holds its seconds), so the top-up rounds,
which depend on the seconds made, plan the same clips as a run of the whole corpus.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import queue
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from engine.data.synth.voice_plan import (
    ESPEAK_HELDOUT_VOICE,
    espeak_clip_settings,
    training_voices,
    variant_of,
)
from engine.errors import EngineError
from engine.frames import FPS
from engine.speech.espeak import DEFAULT_PITCH_RANGE, DEFAULT_RATE_WPM

if TYPE_CHECKING:
    from engine.data.synth.corpus_speech import SpeechSources

log = logging.getLogger(__name__)

SUBJECT = "default-avatar"
TRAINING_SOURCES = ("espeak", "piper", "human")
EVALUATION_ONLY_SOURCES = ("flite", "human2")  # every clip held out: see evaluation_sources
HELDOUT_FRACTION = 0.1
# Average speech seconds per clip by source, used only to plan how many clips to make
# (espeak's is a plan field: corpora planned before it was measured used 3.5).
_PLANNING_SECONDS_PER_CLIP = {"piper": 5.0, "human": 2.7}
ESPEAK_SECONDS_PER_CLIP = 4.2
SPEECH_ONLY_DIR = "speech_only"


@dataclass(frozen=True, kw_only=True)
class CorpusPlan:
    """What to generate: total speech minutes, shares of sources, seed."""

    minutes: float
    seed: int = 0
    sources: tuple[str, ...] = ("espeak", "piper", "human")
    espeak_voices: tuple[str, ...] | None = None
    espeak_heldout_voice: str = ESPEAK_HELDOUT_VOICE
    human_share: float = 0.25
    piper_share: float = 0.25
    lead_silence_s: float = 0.4
    tail_silence_s: float = 0.5
    espeak_seconds_per_clip: float = ESPEAK_SECONDS_PER_CLIP
    evaluation_clips: int | None = None  # at most this many of each evaluation-only set

    def __post_init__(self) -> None:
        if self.minutes <= 0:
            raise EngineError(f"--minutes must be positive, got {self.minutes}")
        unknown = set(self.sources) - {*TRAINING_SOURCES, *EVALUATION_ONLY_SOURCES}
        if unknown or not self.sources:
            raise EngineError(
                f"unknown speech sources {sorted(unknown)}; choose from "
                f"{', '.join(TRAINING_SOURCES)} or, for evaluation only, "
                f"{', '.join(EVALUATION_ONLY_SOURCES)}"
            )
        if not 0 <= self.human_share <= 1 or not 0 <= self.piper_share <= 1:
            raise EngineError("source shares must be between 0 and 1")
        if self.espeak_seconds_per_clip <= 0:
            raise EngineError("espeak_seconds_per_clip must be positive")
        if self.evaluation_clips is not None and self.evaluation_clips < 1:
            raise EngineError("evaluation_clips must be at least 1 (or None: all of them)")
        held = self.espeak_heldout_voice
        clash = [
            voice
            for voice in self.training_voices()
            if voice == held or (variant_of(held) and variant_of(voice) == variant_of(held))
        ]
        if clash:
            raise EngineError(
                f"training voices {clash} are the held-out voice {held} or share its variant; "
                "leave them out or choose another --heldout-voice"
            )

    def training_voices(self) -> tuple[str, ...]:
        """The given voices, or every accent x variant but the held-out voice's variant
        (:mod:`engine.data.synth.voice_plan`)."""
        return self.espeak_voices or training_voices(self.espeak_heldout_voice)

    def minutes_by_source(self) -> dict[str, float]:
        """Speech minutes of each training source (none when the plan has only
        evaluation-only sources, whose clip sets are fixed)."""
        if not set(self.sources) & set(TRAINING_SOURCES):
            return {}
        shares = {
            "human": self.human_share if "human" in self.sources else 0.0,
            "piper": self.piper_share if "piper" in self.sources else 0.0,
        }
        if "espeak" in self.sources:
            shares["espeak"] = max(0.0, 1.0 - shares["human"] - shares["piper"])
        total = sum(shares.values())
        if total <= 0:
            raise EngineError("the source shares leave no minutes to generate")
        return {source: self.minutes * share / total for source, share in shares.items() if share}


@dataclass(frozen=True, kw_only=True)
class ClipSpec:
    """One clip to make; everything a worker needs, picklable."""

    clip_id: str
    source: str
    split: str
    seed: int
    text: str = ""
    espeak_voice: str = ""
    rate_wpm: int = DEFAULT_RATE_WPM
    pitch: int = 50
    pitch_range: int = DEFAULT_PITCH_RANGE
    length_scale: float = 1.0  # Piper's length scale, Flite's duration stretch: > 1 is slower
    prompt: str = ""  # real recordings: the prompt's name
    flite_voice: str = ""

    def __post_init__(self) -> None:
        if self.source in EVALUATION_ONLY_SOURCES and self.split != "heldout":
            raise EngineError(f"{self.source} is for evaluation only: its clips are held out")


@dataclass(kw_only=True)
class CorpusSummary:
    out_dir: Path
    clips_made: int = 0
    clips_kept: int = 0
    speech_minutes: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0

    def describe(self) -> str:
        minutes = ", ".join(f"{k} {v:.2f} min" for k, v in sorted(self.speech_minutes.items()))
        return (
            f"corpus in {self.out_dir}: {self.clips_made} clips made now, "
            f"{self.clips_kept} already there; speech: {minutes}; "
            f"{self.wall_seconds / 60:.1f} min wall time"
        )


def _stable_hash(*parts: object) -> int:
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _is_heldout(*parts: object) -> bool:
    return _stable_hash("heldout", *parts) % 1000 < HELDOUT_FRACTION * 1000


def plan_clips(
    plan: CorpusPlan,
    *,
    round_index: int = 0,
    seconds_by_source: dict[str, float] | None = None,
    existing: frozenset[str] = frozenset(),
) -> list[ClipSpec]:
    """The clip specs of a plan (deterministic).

    ``round_index`` > 0 plans top-up clips (new sentences, new ids) for the speech seconds
    given in ``seconds_by_source``; real prompts whose clip id is in ``existing`` are skipped.
    The evaluation-only sources' fixed clips come in round 0 only.
    """
    from engine.speech.sentences import SentenceGenerator

    rng = np.random.default_rng(_stable_hash("plan", plan.seed, round_index))
    specs: list[ClipSpec] = []
    seconds = seconds_by_source or {k: v * 60 for k, v in plan.minutes_by_source().items()}
    train_sentences = SentenceGenerator(seed=_stable_hash("train", plan.seed, round_index))
    heldout_sentences = SentenceGenerator(seed=_stable_hash("heldout", plan.seed, round_index))
    tag = f"r{round_index}-" if round_index else ""

    per_clip = {**_PLANNING_SECONDS_PER_CLIP, "espeak": plan.espeak_seconds_per_clip}

    def count_for(source: str, fraction: float) -> int:
        wanted = seconds.get(source, 0.0) * fraction
        return int(np.ceil(wanted / per_clip[source])) if wanted > 0 else 0

    for source in ("espeak", "piper"):
        if seconds.get(source, 0) <= 0:
            continue
        heldout_count = count_for(source, HELDOUT_FRACTION)
        train_count = count_for(source, 1.0) - heldout_count
        for split, count, texts in (
            ("train", train_count, train_sentences),
            ("heldout", heldout_count, heldout_sentences),
        ):
            for index, text in enumerate(texts.take(count)):
                voice_settings: dict[str, Any] = (
                    espeak_clip_settings(
                        rng,
                        split=split,
                        given_voices=plan.espeak_voices,
                        heldout_voice=plan.espeak_heldout_voice,
                        round_seed=_stable_hash("espeak-train", plan.seed, round_index),
                        index=index,
                    )
                    if source == "espeak"
                    else {"length_scale": float(rng.uniform(0.9, 1.15))}
                )
                specs.append(
                    ClipSpec(
                        clip_id=f"{source}-{split}-{tag}{index:05d}",
                        source=source,
                        split=split,
                        seed=_stable_hash(plan.seed, source, split, round_index, index),
                        text=text,
                        **voice_settings,
                    )
                )
    if seconds.get("human", 0) > 0:
        from engine.speech.recordings import list_prompts

        prompts = sorted(list_prompts(), key=lambda p: _stable_hash(plan.seed, "prompt", p.name))
        wanted = seconds["human"]
        total = 0.0
        for prompt in prompts:
            if total >= wanted:
                break
            split = "heldout" if _is_heldout("human", prompt.name) else "train"
            clip_id = f"human-{split}-{prompt.name.replace('/', '_')}"
            if clip_id in existing:
                if round_index == 0:  # already made: counts towards the plan's minutes
                    total += prompt.seconds
                continue
            specs.append(
                ClipSpec(
                    clip_id=clip_id,
                    source="human",
                    split=split,
                    seed=_stable_hash(plan.seed, "human", prompt.name),
                    text=prompt.transcript,
                    prompt=prompt.name,
                )
            )
            total += prompt.seconds
    if round_index == 0 and set(plan.sources) & set(EVALUATION_ONLY_SOURCES):
        from engine.data.synth.evaluation_sources import plan_evaluation_clips

        specs += plan_evaluation_clips(plan.sources, limit=plan.evaluation_clips)
    return specs


def _pad_utterance(utterance, plan: CorpusPlan):  # type: ignore[no-untyped-def]
    """Lead/tail silence around the speech; audio cut to whole video frames.

    Returns (audio, phones as (label, start, end) tuples, words, frame count).
    """
    from engine.speech.phonemes import SILENCE

    rate = utterance.sample_rate
    lead = round(plan.lead_silence_s * rate)
    frames = int(np.ceil((lead + len(utterance.audio)) / rate * FPS + plan.tail_silence_s * FPS))
    total = round(frames * rate / FPS)
    audio = np.zeros(total, np.float32)
    audio[lead : lead + len(utterance.audio)] = utterance.audio
    offset = lead / rate
    end = total / rate
    phones: list[tuple[str, float, float]] = [(SILENCE, 0.0, offset)]
    for span in utterance.phones:
        start, stop = span.start + offset, span.end + offset
        if span.label == SILENCE and phones[-1][0] == SILENCE:
            phones[-1] = (SILENCE, phones[-1][1], stop)
        else:
            phones.append((span.label, start, stop))
    if phones[-1][0] == SILENCE:
        phones[-1] = (SILENCE, phones[-1][1], end)
    else:
        phones.append((SILENCE, phones[-1][2], end))
    words = [(w.label, w.start + offset, w.end + offset) for w in utterance.words]
    return audio, phones, words, frames


def _make_clip(
    spec: ClipSpec,
    plan: CorpusPlan,
    clips_dir: Path,
    sources: SpeechSources,
    renderer: object,
    *,
    split: str | None = None,
) -> float:
    """Make one clip (only its speech when ``split`` names another split); returns its
    speech seconds."""
    from safetensors.numpy import save_file

    from engine.data.synth.render import AvatarRenderer
    from engine.data.synth.visemes import controls_for_phones
    from engine.speech.utterance import TimedSpan
    from engine.video_file import write_mp4

    assert isinstance(renderer, AvatarRenderer)
    utterance = sources.utterance(spec)
    if split is not None and spec.split != split:  # planned only: its seconds, no video
        record: dict[str, object] = {
            "clip_id": spec.clip_id,
            "source": spec.source,
            "split": spec.split,
            "speech_seconds": utterance.duration,
        }
        speech_only = clips_dir.parent / SPEECH_ONLY_DIR
        speech_only.mkdir(exist_ok=True)
        (speech_only / f"{spec.clip_id}.json").write_text(json.dumps(record))
        return float(utterance.duration)
    audio, phones, words, frame_count = _pad_utterance(utterance, plan)
    timeline = tuple(TimedSpan(label=p, start=s, end=e) for p, s, e in phones)
    controls = controls_for_phones(timeline, frame_count, fps=FPS)
    landmarks = np.zeros((frame_count, 478, 2), np.float32)

    def frames() -> Iterator[np.ndarray]:
        for index, (frame, points) in enumerate(renderer.render(controls.values, seed=spec.seed)):
            landmarks[index] = points
            yield frame

    written = write_mp4(
        clips_dir / f"{spec.clip_id}.mp4",
        frames(),
        fps=FPS,
        audio=audio,
        sample_rate=utterance.sample_rate,
    )
    if written != frame_count:
        raise RuntimeError(f"{spec.clip_id}: rendered {written} frames, expected {frame_count}")
    save_file(
        {"landmarks": landmarks, "controls": controls.values.astype(np.float32)},
        str(clips_dir / f"{spec.clip_id}.landmarks.safetensors"),
        metadata={"controls": json.dumps(list(controls.names))},
    )
    sidecar = {
        "clip_id": spec.clip_id,
        "subject": SUBJECT,
        "source": spec.source,
        "voice": utterance.voice,
        "split": spec.split,
        "text": utterance.text,
        "fps": FPS,
        "frames": frame_count,
        "sample_rate": utterance.sample_rate,
        "duration": len(audio) / utterance.sample_rate,
        "speech_seconds": utterance.duration,
        "lead_silence": plan.lead_silence_s,
        "phones": [[p, round(s, 5), round(e, 5)] for p, s, e in phones],
        "words": [[w, round(s, 5), round(e, 5)] for w, s, e in words],
        "spec": asdict(spec),
    }
    partial = clips_dir / f"{spec.clip_id}.json.partial"
    partial.write_text(json.dumps(sidecar, indent=1))
    partial.replace(clips_dir / f"{spec.clip_id}.json")
    return utterance.duration


def _worker_main(
    plan: CorpusPlan, clips_dir: Path, split: str | None, jobs: mp.Queue, results: mp.Queue
) -> None:
    """A worker process: one renderer and one set of voices, then clips until told to stop."""
    import cv2

    from engine.data.synth.corpus_speech import SpeechSources
    from engine.data.synth.render import AvatarRenderer

    cv2.setNumThreads(1)
    logging.basicConfig(level=logging.WARNING)
    sources = SpeechSources()
    renderer = AvatarRenderer()
    while True:
        spec = jobs.get()
        if spec is None:
            return
        try:
            seconds = _make_clip(spec, plan, clips_dir, sources, renderer, split=split)
            results.put((spec.clip_id, spec.source, seconds, ""))
        except Exception as exc:  # reported per clip; the corpus goes on
            log.exception("clip %s failed", spec.clip_id)
            results.put((spec.clip_id, spec.source, 0.0, f"{type(exc).__name__}: {exc}"))


def _made(clips_dir: Path) -> list[Path]:
    """The sidecars of the clips made and the records of those planned only."""
    return [*clips_dir.glob("*.json"), *(clips_dir.parent / SPEECH_ONLY_DIR).glob("*.json")]


def _existing_seconds(clips_dir: Path) -> dict[str, float]:
    seconds: dict[str, float] = {}
    for sidecar in _made(clips_dir):
        meta = json.loads(sidecar.read_text())
        seconds[meta["source"]] = seconds.get(meta["source"], 0.0) + float(meta["speech_seconds"])
    return seconds


def _run_specs(
    specs: Sequence[ClipSpec],
    plan: CorpusPlan,
    clips_dir: Path,
    workers: int,
    progress: tqdm,
    *,
    split: str | None = None,
) -> list[str]:
    """Make the given clips in ``workers`` processes; returns the error lines."""
    context = mp.get_context("spawn")
    jobs: mp.Queue = context.Queue()
    results: mp.Queue = context.Queue()
    for spec in specs:
        jobs.put(spec)
    processes = [
        context.Process(
            target=_worker_main, args=(plan, clips_dir, split, jobs, results), daemon=True
        )
        for _ in range(min(workers, len(specs)))
    ]
    for _ in processes:
        jobs.put(None)
    for process in processes:
        process.start()
    errors: list[str] = []
    pending = len(specs)
    try:
        while pending:
            try:
                clip_id, _source, seconds, error = results.get(timeout=5.0)
            except queue.Empty:
                if not any(p.is_alive() for p in processes):
                    raise EngineError(
                        "corpus workers stopped unexpectedly; see the log above"
                    ) from None
                continue
            pending -= 1
            progress.total = max(progress.total, progress.n + seconds / 60)
            progress.update(seconds / 60)
            if error:
                errors.append(f"{clip_id}: {error}")
                log.warning("clip %s failed: %s", clip_id, error)
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
    return errors


def _plan_from_record(record: dict[str, object]) -> CorpusPlan:
    """A plan as stored in corpus.json (fields added since take their defaults)."""
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in record.items()}
    return CorpusPlan(**values)  # type: ignore[arg-type]


def generate_corpus(
    out_dir: Path, *, plan: CorpusPlan, workers: int | None = None, split: str | None = None
) -> CorpusSummary:
    """Generate (or finish) the corpus of ``plan`` in ``out_dir``; resumable. ``split``
    ("train" or "heldout"): only that split's clips get video (see the module doc)."""
    if split is not None and split not in ("train", "heldout"):
        raise EngineError(f"split must be train or heldout, got {split!r}")
    if split == "train" and set(plan.sources) & set(EVALUATION_ONLY_SOURCES):
        raise EngineError(
            f"{', '.join(sorted(set(plan.sources) & set(EVALUATION_ONLY_SOURCES)))}: "
            "evaluation-only sources have no train split; leave them out or use --split heldout"
        )
    started = time.monotonic()
    out_dir = Path(out_dir)
    clips_dir = out_dir / "clips"
    clips_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "corpus.json"
    plan_record = asdict(plan)
    from engine.data.synth.corpus_speech import check_sources

    check_sources(plan)
    if manifest.exists():
        stored = json.loads(manifest.read_text())
        previous = stored.get("plan")
        if previous is not None and _plan_from_record(previous) != plan:
            raise EngineError(
                f"{out_dir} holds a corpus of another plan ({previous}); use a new --out folder"
            )
        if stored.get("split") != split:
            raise EngineError(
                f"{out_dir} holds the {stored.get('split') or 'whole'} corpus of this plan, "
                f"not the {split or 'whole'} one; use a new --out folder"
            )
    manifest.write_text(json.dumps({"plan": plan_record, "split": split}, indent=1))
    workers = workers or os.cpu_count() or 1
    targets = plan.minutes_by_source()
    summary = CorpusSummary(out_dir=out_dir)
    errors: list[str] = []
    existing_minutes = sum(_existing_seconds(clips_dir).values()) / 60
    with tqdm(
        total=max(plan.minutes, existing_minutes),
        unit="min",
        desc="corpus",
        smoothing=0.05,
        bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} min [{elapsed}<{remaining}]",
    ) as bar:
        bar.update(existing_minutes)
        summary.clips_kept = len(list(clips_dir.glob("*.json")))
        for round_index in range(4):
            done = _existing_seconds(clips_dir)
            missing = {s: targets[s] * 60 - done.get(s, 0.0) for s in targets}
            if round_index and all(m <= 0.02 * targets[s] * 60 for s, m in missing.items()):
                break
            existing = frozenset(p.stem for p in _made(clips_dir))
            specs = [
                spec
                for spec in plan_clips(
                    plan,
                    round_index=round_index,
                    # top-up rounds: only what each source still lacks
                    seconds_by_source=(
                        {s: m for s, m in missing.items() if m > 0} if round_index else None
                    ),
                    existing=existing,
                )
                if spec.clip_id not in existing
            ]
            if not specs:
                continue
            errors += _run_specs(specs, plan, clips_dir, workers, bar, split=split)
            summary.clips_made += len(specs)
    if errors:
        log.warning("%d clips failed (first: %s)", len(errors), errors[0])
    from engine.data.synth.coverage import corpus_coverage

    coverage = corpus_coverage(out_dir)
    summary.speech_minutes = {source: coverage.minutes(source) for source in coverage.phone_counts}
    summary.wall_seconds = time.monotonic() - started
    manifest.write_text(
        json.dumps(
            {
                "plan": plan_record,
                "split": split,
                "coverage": coverage.to_json(),
                "errors": errors,
                "wall_seconds_last_run": summary.wall_seconds,
            },
            indent=1,
        )
    )
    return summary
