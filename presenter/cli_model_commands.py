"""The command line's commands that make models: ``data synth | prep | stats`` (training data)
and ``train motion | generator | joint``. :mod:`presenter.cli` adds them to its parser and
runs them."""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import replace
from pathlib import Path

from presenter.errors import PresenterError

log = logging.getLogger("presenter")


def add_model_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``data`` and ``train`` to the parser's ``commands`` (its subparsers)."""
    data = commands.add_parser("data", help="training data: synthetic corpus, video preparation")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    synth = data_commands.add_parser(
        "synth", help="generate a talking-head corpus of the default avatar"
    )
    synth.add_argument("--out", type=Path, required=True, help="output folder (resumable)")
    synth.add_argument("--minutes", type=float, required=True, help="total speech minutes")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument(
        "--voices",
        nargs="+",
        default=None,
        metavar="VOICE",
        help="espeak-ng training voices (e.g. en-us en-gb en-us+m3); default: every English "
        "accent with every variant, less the held-out voice and its variant",
    )
    synth.add_argument(
        "--heldout-voice",
        default="en-us+f3",
        help="espeak-ng voice kept for evaluation only (default en-us+f3)",
    )
    synth.add_argument(
        "--sources",
        default="espeak,piper,human",
        help="comma-separated speech sources: espeak, piper, human (default: all three); for "
        "evaluation only, with fixed clip sets that are all held out: flite (a TTS engine no "
        "training source uses), human2 (a second real speaker)",
    )
    synth.add_argument(
        "--human-share",
        type=float,
        default=0.25,
        help="fraction of the minutes taken from real human speech (default 0.25)",
    )
    synth.add_argument(
        "--split",
        choices=("train", "heldout"),
        default=None,
        help="make only this split's clips (the others are planned, their speech synthesised "
        "for the plan's top-up rounds, no video); default: both",
    )
    synth.add_argument(
        "--espeak-clip-seconds",
        type=float,
        default=None,
        help="planning: average espeak speech seconds per clip (default: the current "
        "figure; the 30-minute corpus of the shipped model was planned with 3.5)",
    )
    synth.add_argument("--workers", type=int, default=None, help="processes (default: cores)")

    prep = data_commands.add_parser(
        "prep", help="prepare talking-head videos (or a synth corpus) as a training dataset"
    )
    prep.add_argument("videos", nargs="+", type=Path, help="video files or folders of them")
    prep.add_argument("--out", type=Path, required=True, help="dataset folder")
    prep.add_argument("--crop-size", type=int, default=256, help="face crop size in px")
    prep.add_argument("--subject", default=None, help="subject name for all videos given")
    prep.add_argument(
        "--max-skipped",
        type=float,
        default=0.1,
        help="reject a clip when more than this fraction of frames has no single face",
    )
    prep.add_argument(
        "--basis",
        type=Path,
        default=None,
        help="take the dynamics basis and identity shapes from this motion checkpoint (or "
        "model folder, or prepared dataset) instead of fitting them: a held-out set in a "
        "trained model's coordinates",
    )
    prep.add_argument(
        "--components",
        type=int,
        default=None,
        help="dynamics components to fit (default: as many as 98%% of the variance needs); "
        "a generator fine-tuned from another must have its number",
    )
    prep.add_argument("--workers", type=int, default=None, help="processes (default: cores)")

    stats = data_commands.add_parser("stats", help="phoneme coverage and minutes of a corpus")
    stats.add_argument("corpus", type=Path, help="a folder written by `data synth`")

    train = commands.add_parser(
        "train",
        help="train the motion model, the generator, or the joint stage",
        description="Stages: motion (audio -> dynamics), generator (dynamics -> face, on "
        "tracked dynamics), joint (the generator fine-tuned on the motion model's "
        "predictions; needs --motion and --generator).",
    )
    train.add_argument("stage", choices=("motion", "generator", "joint"), help="what to train")
    train.add_argument("--data", type=Path, required=True, help="a dataset from `data prep`")
    train.add_argument(
        "--out",
        required=True,
        help="run folder (a bare name goes under $PRESENTER_HOME/runs); rerun to resume",
    )
    train.add_argument("--steps", type=int, default=None, help="training steps")
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument("--threads", type=int, default=None, help="torch threads (default: cores)")
    train.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="motion: train on augmented versions of the clips' audio too (other vocal "
        "tracts, rooms, noise, levels, Opus and telephone; the dataset must keep its audio); "
        "default: the training config's",
    )
    train.add_argument(
        "--motion", default=None, help="joint: a motion run folder or motion.safetensors"
    )
    train.add_argument(
        "--generator",
        default=None,
        help="joint: a generator run folder or generator.safetensors; generator: one to "
        "start from (fine-tuning; the same size and number of dynamics components)",
    )


def _checkpoint(value: str | None, file_name: str, option: str) -> Path:
    if value is None:
        raise PresenterError(f"train joint needs {option} (a run folder or a {file_name})")
    path = _run_folder(value)
    return path / file_name if path.is_dir() else path


def _run_folder(out: str) -> Path:
    from engine.weights import presenter_home

    path = Path(out)
    return path if len(path.parts) > 1 or path.is_absolute() else presenter_home() / "runs" / out


def run_train(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    if not (args.data / "dataset.json").is_file():
        raise PresenterError(
            f"{args.data} is not a dataset made by `data prep` (no dataset.json in it)"
        )
    out = _run_folder(args.out)
    steps = {"steps": args.steps} if args.steps else {}
    if args.augment is not None and args.stage != "motion":
        raise PresenterError("--augment / --no-augment apply to train motion only")
    if args.stage == "motion":
        from engine.train.audio_augment import AugmentConfig
        from engine.train.motion import MotionTrainConfig, train_motion

        config = MotionTrainConfig(data_dir=args.data, out_dir=out, seed=args.seed, **steps)
        if args.augment is not None:
            config = replace(config, augment=AugmentConfig() if args.augment else None)
        checkpoint = train_motion(config)
    elif args.stage == "generator":
        from engine.train.generator import GeneratorTrainConfig, train_generator

        start = (
            None
            if args.generator is None
            else _checkpoint(args.generator, "generator.safetensors", "--generator")
        )
        checkpoint = train_generator(
            GeneratorTrainConfig(
                dataset=args.data,
                output=out,
                seed=args.seed,
                initial_weights=start,
                description="" if start is None else f"fine-tuned from {start}",
                **steps,
            )
        )
    else:
        from engine.train.joint import JointTrainConfig, train_joint

        checkpoint = train_joint(
            JointTrainConfig(
                dataset=args.data,
                output=out,
                motion=_checkpoint(args.motion, "motion.safetensors", "--motion"),
                generator=_checkpoint(args.generator, "generator.safetensors", "--generator"),
                seed=args.seed,
                **steps,
            )
        )
    log.info("trained %s: %s", args.stage, checkpoint)
    return 0


def run_data(args: argparse.Namespace) -> int:
    if args.data_command == "synth":
        from engine.data.synth.corpus import CorpusPlan, generate_corpus

        plan = CorpusPlan(
            minutes=args.minutes,
            seed=args.seed,
            sources=tuple(s.strip() for s in args.sources.split(",") if s.strip()),
            espeak_voices=tuple(args.voices) if args.voices else None,
            espeak_heldout_voice=args.heldout_voice,
            human_share=args.human_share,
            **(
                {"espeak_seconds_per_clip": args.espeak_clip_seconds}
                if args.espeak_clip_seconds
                else {}
            ),
        )
        summary = generate_corpus(args.out, plan=plan, workers=args.workers, split=args.split)
        log.info("%s", summary.describe())
        from engine.data.synth.preview import write_key_shapes, write_preview

        seconds = write_preview(args.out, args.out / "preview.mp4")
        shapes = write_key_shapes(args.out, args.out)
        log.info(
            "to watch: %s (%.0f s with sound); mouth shapes: %s",
            args.out / "preview.mp4",
            seconds,
            ", ".join(str(p) for p in shapes),
        )
        return 0
    if args.data_command == "prep":
        from engine.data.prep.pipeline import PrepareConfig, prepare

        prepare(
            args.videos,
            args.out,
            crop_size=args.crop_size,
            max_skipped_fraction=args.max_skipped,
            subject=args.subject,
            workers=args.workers,
            basis=args.basis,
            config=PrepareConfig(dynamics_components=args.components),
        )
        return 0
    if args.data_command == "stats":
        from engine.data.synth.coverage import corpus_coverage

        print(corpus_coverage(args.corpus).table())  # noqa: T201 - the command output
        return 0
    raise AssertionError(args.data_command)
