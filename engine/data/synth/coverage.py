"""Minutes and phoneme coverage of a synthetic corpus, read from its clips' sidecars."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import EngineError
from engine.speech.phonemes import ENGLISH_PHONEMES, SILENCE


@dataclass(kw_only=True)
class CorpusCoverage:
    """Phone occurrence counts and speech seconds, per source and split."""

    phone_counts: dict[str, Counter[str]] = field(default_factory=dict)  # by source
    seconds: dict[tuple[str, str], float] = field(default_factory=dict)  # (source, split)
    clips: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def total_counts(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for counts in self.phone_counts.values():
            total.update(counts)
        return total

    def minimum(self) -> tuple[str, int]:
        """The least frequent English phoneme and its count over the whole corpus."""
        total = self.total_counts
        phone = min(ENGLISH_PHONEMES, key=lambda p: total[p])
        return phone, total[phone]

    def minutes(self, source: str | None = None) -> float:
        return sum(s for (src, _), s in self.seconds.items() if source in (None, src)) / 60

    def to_json(self) -> dict[str, object]:
        return {
            "minutes": {
                f"{source}/{split}": round(seconds / 60, 3)
                for (source, split), seconds in sorted(self.seconds.items())
            },
            "clips": {f"{source}/{split}": n for (source, split), n in sorted(self.clips.items())},
            "phone_counts": {
                source: {p: counts[p] for p in ENGLISH_PHONEMES}
                for source, counts in sorted(self.phone_counts.items())
            },
            "total_phone_counts": {p: self.total_counts[p] for p in ENGLISH_PHONEMES},
        }

    def table(self) -> str:
        """A plain-text table: minutes per source/split, then counts per phoneme."""
        sources = sorted(self.phone_counts)
        lines = ["source     split      clips   minutes"]
        for (source, split), seconds in sorted(self.seconds.items()):
            lines.append(
                f"{source:<10} {split:<9} {self.clips[(source, split)]:>6} {seconds / 60:>9.2f}"
            )
        lines.append(f"{'all':<10} {'':<9} {sum(self.clips.values()):>6} {self.minutes():>9.2f}")
        lines.append("")
        lines.append("phone " + "".join(f"{s:>9}" for s in sources) + "    total")
        total = self.total_counts
        for phone in ENGLISH_PHONEMES:
            row = "".join(f"{self.phone_counts[s][phone]:>9}" for s in sources)
            lines.append(f"{phone:<5} {row} {total[phone]:>8}")
        phone, count = self.minimum()
        lines.append(f"least frequent phoneme: {phone} ({count})")
        return "\n".join(lines)


def corpus_coverage(corpus_dir: Path) -> CorpusCoverage:
    """Read every ``clips/*.json`` sidecar of a corpus written by ``data synth``."""
    sidecars = sorted((Path(corpus_dir) / "clips").glob("*.json"))
    if not sidecars:
        raise EngineError(f"no clips found in {corpus_dir}/clips; run `data synth` first")
    coverage = CorpusCoverage()
    for sidecar in sidecars:
        meta = json.loads(sidecar.read_text())
        source, split = str(meta["source"]), str(meta["split"])
        counts = coverage.phone_counts.setdefault(source, Counter())
        counts.update(label for label, _, _ in meta["phones"] if label != SILENCE)
        key = (source, split)
        coverage.seconds[key] = coverage.seconds.get(key, 0.0) + float(meta["speech_seconds"])
        coverage.clips[key] += 1
    return coverage
