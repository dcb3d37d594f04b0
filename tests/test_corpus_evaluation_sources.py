"""The evaluation-only speech sources of the corpus (flite, human2): every clip they give
is held out, no training plan contains them, and adding them changes no other clip."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest

from engine.data.synth.corpus import (
    EVALUATION_ONLY_SOURCES,
    ClipSpec,
    CorpusPlan,
    generate_corpus,
    plan_clips,
)
from engine.data.synth.evaluation_sources import FLITE_CLIP_COUNT
from engine.errors import EngineError

TRAINING = ("espeak", "piper")  # the training sources that need no installed data to plan


def _has_warzone_data() -> bool:
    from engine.speech.warzone_announcer import WarzoneAnnouncer

    try:
        WarzoneAnnouncer()
    except EngineError:
        return False
    return True


def _evaluation_sources() -> tuple[str, ...]:
    return EVALUATION_ONLY_SOURCES if _has_warzone_data() else ("flite",)


def test_no_training_plan_contains_evaluation_only_sources() -> None:
    evaluation = _evaluation_sources()
    plan = CorpusPlan(minutes=20, seed=0, sources=TRAINING)
    with_evaluation = CorpusPlan(minutes=20, seed=0, sources=TRAINING + evaluation)
    base = plan_clips(plan)
    specs = plan_clips(with_evaluation)
    assert not {spec.source for spec in base} & set(EVALUATION_ONLY_SOURCES)
    # adding them changes none of the training sources' clips, held-out ones included
    assert [s for s in specs if s.source not in EVALUATION_ONLY_SOURCES] == base
    added = [s for s in specs if s.source in EVALUATION_ONLY_SOURCES]
    assert {s.source for s in added} == set(evaluation)
    assert {s.split for s in added} == {"heldout"}
    assert all(s.clip_id.startswith(f"{s.source}-heldout-") for s in added)
    # the fixed sentences are none of those the plan speaks
    assert not {s.text for s in base} & {s.text for s in added}
    # top-up rounds plan training sources only
    topped = plan_clips(with_evaluation, round_index=1, seconds_by_source={"espeak": 60.0})
    assert topped and {s.source for s in topped} == {"espeak"}
    with pytest.raises(EngineError, match="evaluation only"):
        ClipSpec(clip_id="flite-train-00000", source="flite", split="train", seed=0)


def test_evaluation_sets_are_fixed_whatever_the_plan() -> None:
    first = plan_clips(CorpusPlan(minutes=30, seed=0, sources=("flite",)))
    other = plan_clips(CorpusPlan(minutes=5, seed=7, sources=("espeak", "flite")))
    assert len(first) == FLITE_CLIP_COUNT
    assert [s for s in other if s.source == "flite"] == first
    assert {s.flite_voice for s in first} == {"slt", "rms", "awb"}
    assert all(0.9 <= s.length_scale <= 1.15 for s in first)
    assert not {s.text for s in other if s.source == "espeak"} & {s.text for s in first}
    # a limited set is the start of the full one
    assert plan_clips(CorpusPlan(minutes=1, sources=("flite",), evaluation_clips=2)) == first[:2]
    with pytest.raises(EngineError, match="unknown speech sources"):
        CorpusPlan(minutes=1, sources=("festival",))


def test_evaluation_only_sources_have_no_train_split(tmp_path: Path) -> None:
    plan = CorpusPlan(minutes=1, sources=("espeak", "flite"))
    with pytest.raises(EngineError, match="no train split"):
        generate_corpus(tmp_path / "c", plan=plan, workers=1, split="train")


def test_evaluation_clips_go_through_the_pipeline(tmp_path: Path) -> None:
    from engine.speech.flite import FliteLibrary

    try:
        FliteLibrary()
    except EngineError as error:
        pytest.skip(f"Flite (Debian package flite, scripts/setup installs it) is absent: {error}")
    sources = _evaluation_sources()
    plan = CorpusPlan(minutes=1, seed=0, sources=sources, evaluation_clips=1)
    summary = generate_corpus(tmp_path / "c", plan=plan, workers=1, split="heldout")
    clips = tmp_path / "c" / "clips"
    sidecars = [json.loads(path.read_text()) for path in sorted(clips.glob("*.json"))]
    assert [meta["source"] for meta in sidecars] == sorted(sources)
    assert not (tmp_path / "c" / "speech_only").exists()  # nothing else was planned
    for meta in sidecars:
        assert meta["split"] == "heldout" and meta["text"]
        assert meta["phones"][0][0] == "SIL" and len(meta["phones"]) > 5
        assert meta["words"] and meta["frames"] > 25
        with av.open(str(clips / f"{meta['clip_id']}.mp4")) as container:
            assert container.streams.audio[0].rate == meta["sample_rate"]
            assert container.streams.video[0].frames == meta["frames"]
        assert (clips / f"{meta['clip_id']}.landmarks.safetensors").is_file()
    flite = next(meta for meta in sidecars if meta["source"] == "flite")
    assert flite["voice"].startswith("flite:slt:")
    if "human2" in sources:
        human2 = next(meta for meta in sidecars if meta["source"] == "human2")
        assert human2["voice"] == "warzone2100-en-f1" and human2["sample_rate"] == 11025
    assert set(summary.speech_minutes) == set(sources)
