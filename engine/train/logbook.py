"""A training run's loss log (JSON lines) and its plot (PNG)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path


class LossLog:
    """Appends one JSON object per logged step to ``path``; survives restarts (append mode)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, step: int, values: Mapping[str, float], **extra: object) -> None:
        record = {"step": step, **{k: round(float(v), 6) for k, v in values.items()}, **extra}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, object]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (a resumed run starts again from its checkpoint)."""
        kept = [r for r in self.read() if int(r["step"]) <= step]  # type: ignore[call-overload]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def plot(self, png: Path, *, title: str = "") -> None:
        """One panel per loss name: training curves, and evaluation points where present."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        series: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for record in self.read():
            step = int(record["step"])  # type: ignore[call-overload]
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float):
                    series[key].append((step, float(value)))
        if not series:
            return
        names = sorted(series)
        columns = min(3, len(names))
        rows = (len(names) + columns - 1) // columns
        figure, axes = plt.subplots(
            rows, columns, figsize=(4.2 * columns, 3.0 * rows), squeeze=False
        )
        for axis, name in zip(axes.ravel(), names, strict=False):
            steps, values = zip(*series[name], strict=True)
            axis.plot(steps, values, linewidth=1)
            axis.set_title(name, fontsize=9)
            axis.set_xlabel("step", fontsize=8)
            if min(values) > 0 and max(values) / max(min(values), 1e-12) > 20:
                axis.set_yscale("log")
        for axis in axes.ravel()[len(names) :]:
            axis.axis("off")
        figure.suptitle(title, fontsize=10)
        figure.tight_layout()
        figure.savefig(png, dpi=90)
        plt.close(figure)
