"""The speech of a corpus's clips: whether a plan's sources can be used here, and each
clip's utterance from its source (every worker process has its own sources)."""

from __future__ import annotations

from engine.data.synth.corpus import EVALUATION_ONLY_SOURCES, ClipSpec, CorpusPlan
from engine.errors import EngineError
from engine.speech.utterance import Utterance


def check_sources(plan: CorpusPlan) -> None:
    """Fail before any work when a source of the plan cannot be used here (clear message)."""
    try:
        if "espeak" in plan.sources:
            from engine.speech.espeak import EspeakLibrary

            library = EspeakLibrary()
            for voice in (*plan.training_voices(), plan.espeak_heldout_voice):
                library.resolve_voice_name(voice)
        if "piper" in plan.sources:
            from engine.speech.piper_voice import default_voice_path

            default_voice_path()
            import piper  # noqa: F401 - only checks that the optional extra is installed
        if "human" in plan.sources:
            from engine.speech.recordings import list_prompts

            list_prompts()
        if set(plan.sources) & set(EVALUATION_ONLY_SOURCES):
            from engine.data.synth.evaluation_sources import check_evaluation_sources

            check_evaluation_sources(plan.sources)
    except ImportError as exc:
        raise EngineError(
            f"speech source unavailable ({exc}); install the extra or leave the source out "
            "with --sources"
        ) from exc


class SpeechSources:
    """Per-process speech sources, made on first use (each loads a library or a model)."""

    def __init__(self) -> None:
        self._espeak: dict[tuple[str, int, int, int], object] = {}
        self._piper: object | None = None
        self._evaluation: object | None = None

    def utterance(self, spec: ClipSpec) -> Utterance:
        result: Utterance
        if spec.source in EVALUATION_ONLY_SOURCES:
            from engine.data.synth.evaluation_sources import EvaluationSpeech

            if self._evaluation is None:
                self._evaluation = EvaluationSpeech()
            assert isinstance(self._evaluation, EvaluationSpeech)
            result = self._evaluation.utterance(spec)
        elif spec.source == "espeak":
            from engine.speech.espeak import EspeakVoice

            key = (spec.espeak_voice, spec.rate_wpm, spec.pitch, spec.pitch_range)
            voice = self._espeak.get(key)
            if voice is None:
                voice = EspeakVoice(voice=key[0], rate_wpm=key[1], pitch=key[2], pitch_range=key[3])
                self._espeak[key] = voice
            assert isinstance(voice, EspeakVoice)
            result = voice.synthesize(spec.text)
        elif spec.source == "piper":
            from engine.speech.piper_voice import PiperSpeaker

            if self._piper is None:
                self._piper = PiperSpeaker()
            assert isinstance(self._piper, PiperSpeaker)
            result = self._piper.synthesize(spec.text, length_scale=spec.length_scale)
        else:
            from engine.speech.recordings import load_prompt_utterance

            result = load_prompt_utterance(spec.prompt)
        return result
