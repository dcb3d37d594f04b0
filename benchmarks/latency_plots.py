"""The latency benchmark's plots: a histogram per stage, and the A/V offset over the run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from presenter.testing.latency import ENGINE_STAGES, PRODUCTION_SYNC, STAGES

COLOURS = {"model": "tab:blue", "prerendered": "tab:orange"}  # by configuration


def plot_stages(plots: dict[str, Any], path: Path, result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        *[(name, f"{name}: {a} -> {b}") for name, a, b in STAGES],
        ("pipeline", "server pipeline: audio_in -> sent_first"),
        ("glass_to_glass", "glass to glass (page)"),
        *[(f"engine_{key}", f"engine: {key}") for key in ENGINE_STAGES],
        ("engine_total", "engine: all five stages"),
    ]
    columns = 4
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.8 * rows))

    def values_of(config: str, key: str) -> list[float]:
        data = plots[config]
        return list(data["glass_to_glass"] if key == "glass_to_glass" else data["stages"][key])

    for axis, (key, title) in zip(axes.flat, panels, strict=False):
        every = [v for config in plots for v in values_of(config, key)]
        if every:  # the same bins for both configurations
            low, high = min(every), max(every)
            pad = max(1.0, 0.02 * (high - low))
            bins = np.linspace(low - pad, high + pad, 61)
        for config in plots:
            values = values_of(config, key)
            if not values:
                continue
            p50 = float(np.median(values))
            axis.hist(
                values,
                bins=bins,
                alpha=0.55,
                color=COLOURS[config],
                label=f"{config} (p50 {p50:.1f})",
            )
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("ms", fontsize=8)
        axis.tick_params(labelsize=7)
        if axis.has_data():
            axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(panels) :]:
        axis.axis("off")
    config = result["config"]
    figure.suptitle(
        f"Latency per stage, {config['viewers']} viewer(s), {config['seconds']:g} s of espeak-ng "
        f"speech, {result['machine']['cores']} cores, Chromium on the same machine",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def plot_av_offset(plots: dict[str, Any], path: Path, result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 4.5))
    axis.axhspan(-20, 20, color="0.92", label="goal: |offset| <= 20 ms")
    for config in plots:
        for number, (mode, series) in enumerate(plots[config]["av_offset"], 1):
            if not series:
                continue
            t = np.asarray([s for s, _ in series])
            y = np.asarray([ms for _, ms in series])
            settle = result["configurations"][config]["viewers"][number - 1]["av_offset"][
                "settle_20ms_s"
            ]
            label = f"{config}, viewer {number}, sync={mode}" + (
                f" (within 20 ms from {settle:g} s)" if settle is not None else ""
            )
            style = "o-" if mode == PRODUCTION_SYNC else "x:"
            axis.plot(t, y, style, color=COLOURS[config], alpha=0.8, markersize=3, label=label)
    axis.axhline(0, color="0.5", linewidth=0.8)
    axis.set_xlabel("s from the page's first click (stream time of each 1 s click)")
    axis.set_ylabel("A/V offset, ms (positive: audio late)")
    axis.set_title(
        "A/V offset per click, both configurations, each lip-sync correction (page-measured, "
        "Chromium on the same machine)",
        fontsize=10,
    )
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
