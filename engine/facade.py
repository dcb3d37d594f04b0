"""``AvatarEngine``: audio in, finished frames out. The presenter never does model arithmetic.

Pipeline per video frame ``t`` (on the model's clock, :attr:`AvatarEngine.timeline`: 25 fps,
640 samples of 16 kHz, for the shipped model):

    PCM (any rate, any chunk) -> StreamingResampler (16 kHz, exact)
      -> MotionFrontEnd (log-mel window of frame t, once its look-ahead has arrived)
      -> motion model (style code of the avatar) -> SilenceGate (rest on silence)
      -> generator (the avatar's loop frame crop with the lower face masked, the reference
         crop, the geometry map) -> compositor (paste into the full frame)
      -> RenderedFrame(index t, RGB or yuv420p)

The generator runs as its two parts (:mod:`engine.generator_parts`): the encoder reads only
the loop frame's masked crop and the reference, so its feature maps are computed once per
loop frame and kept (``EngineConfig.feature_cache_mb`` bounds them; the shipped model's
sizes are in benchmarks/README.md, "Engine"); only the synthesis runs per frame.

Timing is counted in samples of the engine clock (16 kHz). Frame ``t`` covers engine samples
``[t * 640, (t + 1) * 640)`` and can be rendered once ``(t + 1) * 640 + delay_samples``
engine samples have arrived (:attr:`AvatarEngine.delay_samples`: the motion look-ahead, half
a mel window less one hop, and the resampler's filter delay). The presenter holds audio back
by that delay plus its render time so that sound and lips leave together.

The same audio pushed in any chunking at any rate gives the same frames as one offline
push: every stage is exact under re-chunking, and the generator runs in fixed batch slots
so batching never changes the arithmetic.

``reset()`` (an interruption) drops all pending audio and frames at once; the clock moves on
to the next frame boundary after the last frame handed out, so frame indices and the idle
loop's phase continue. ``flush()`` ends an utterance: the look-ahead is filled with silence
and the remaining frames become ready.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import cv2
import numpy as np
import torch

from engine.audio import pcm_to_float
from engine.avatar import DEFAULT_AVATAR, Avatar, load_avatar
from engine.avatar_model import AvatarModel, load_avatar_model
from engine.backends import (
    Backend,
    EncoderBackend,
    MotionBackend,
    SynthesisBackend,
    input_shapes,
)
from engine.compositor import CompositorConfig, FrameDetail, paste
from engine.errors import EngineError
from engine.frames import (
    OUTPUT_FORMATS,
    STAGES,
    OutputFormat,
    RenderedFrame,
    SpeakingStyle,
    Timeline,
)
from engine.generator_parts import GeneratorEncoder, GeneratorSynthesis
from engine.motion import MotionTransformer
from engine.motion_frontend import MotionFrontEnd
from engine.silence_gate import SilenceGate, rest_coefficients
from engine.streaming_resample import StreamingResampler

log = logging.getLogger(__name__)
B = TypeVar("B", bound=Backend[Any])

Driver = Callable[[int], "np.ndarray | None"]
"""A video driver: given a frame index, the (K,) dynamics to render instead of the audio's
(or None to keep the audio's)."""


class StageTimes:
    """Wall time spent per pipeline stage (seconds) and frames rendered, since ``clear()``;
    and the time spent since the last ``take_ms()`` (what one ``pull()`` hands its frames)."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.frames = 0
        self._pending = dict.fromkeys(STAGES, 0.0)

    def clear(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.frames = 0
        self._pending = dict.fromkeys(STAGES, 0.0)

    def add(self, stage: str, began: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] += now - began
        self._pending[stage] += now - began
        return now

    def take_ms(self, frames: int) -> dict[str, float]:
        """The time spent per stage since the last call, in ms per frame of ``frames`` (they
        share it); counting starts over."""
        pending, self._pending = self._pending, dict.fromkeys(STAGES, 0.0)
        share = 1000.0 / max(frames, 1)
        return {stage: value * share for stage, value in pending.items()}

    def ms_per_frame(self) -> dict[str, float]:
        frames = max(self.frames, 1)
        return {stage: 1000.0 * value / frames for stage, value in self.seconds.items()}


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    backend: str = "auto"  # one of engine.backends' names (BACKEND_NAMES)
    device: str = "cpu"
    threads: int | None = None  # intra-op threads of the graph runtimes (None: theirs)
    precision: str = "fp32"
    batch: int = 1  # frames per model call (padded when fewer): 1 for streaming on a CPU
    output: OutputFormat = "rgb24"
    gate: SilenceGate = field(default_factory=SilenceGate)
    compositor: CompositorConfig = field(default_factory=CompositorConfig)
    # the encoder's feature maps of every loop frame are kept when they fit in this much
    # memory; otherwise the encoder runs with every frame (the same pixels, slower)
    feature_cache_mb: float = 512.0

    def __post_init__(self) -> None:
        if self.feature_cache_mb < 0:
            raise ValueError(f"feature_cache_mb must be >= 0, got {self.feature_cache_mb}")
        if self.batch < 1:
            raise ValueError(f"batch must be at least 1, got {self.batch}")
        if self.output not in OUTPUT_FORMATS:
            raise ValueError(f"output must be rgb24 or yuv420p, got {self.output!r}")


def _to_unit(image: np.ndarray, size: int) -> np.ndarray:
    """(S, S, 3) uint8 -> (3, size, size) float32 in [0, 1] (area resampling down)."""
    if image.shape[0] != size:
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / 255.0


class AvatarEngine:
    """Lip-syncs an avatar to streamed audio; see the module docstring for the timing.

    ``model`` and ``avatar`` default to the shipped model and the stored default avatar
    (made once by :mod:`engine.data.synth.default_avatar`; the presenter makes it on first
    use).
    """

    def __init__(
        self,
        *,
        model: AvatarModel | None = None,
        avatar: Avatar | None = None,
        config: EngineConfig | None = None,
        motion_runner: MotionBackend | None = None,
        encoder_runner: EncoderBackend | None = None,
        synthesis_runner: SynthesisBackend | None = None,
    ) -> None:
        self.config = config or EngineConfig()
        self.model = model or load_avatar_model()
        crop = self.model.crop
        self.avatar = avatar or load_avatar(DEFAULT_AVATAR, crop=crop)
        if self.avatar.crop != crop:
            raise EngineError(
                f"avatar {self.avatar.name!r} is cut as {self.avatar.crop}, the model was "
                f"trained on crops cut as {crop}"
            )
        subject = self.avatar.subject
        self._mapper = self.model.generator.mapper(subject)
        self._motion_config = self.model.motion.config
        self._mel = self.model.motion.mel
        self._silence = float(np.float32(np.log(self._mel.log_floor)))
        transformer = self.model.motion.model.transformer
        self._motion = motion_runner or self._backend(MotionBackend, transformer)
        network = self.model.generator.generator
        self._encoder = encoder_runner or self._backend(EncoderBackend, GeneratorEncoder(network))
        self._synthesis = synthesis_runner or self._backend(
            SynthesisBackend, GeneratorSynthesis(network)
        )
        size = self.model.generator.config.image_size
        self._size = size
        # Every loop frame's crop at the generator's size, and its masked copy (done once).
        targets = np.stack(
            [_to_unit(self.avatar.crop_of(i), size) for i in range(self.avatar.num_frames)]
        )
        self._targets = targets
        self._masked = self.model.mask_lower_face(targets)
        self._reference = _to_unit(self.avatar.reference_crop(), size)
        # the encoder's feature maps per loop frame (each with a batch axis of 1), if kept
        self._features: dict[int, tuple[np.ndarray, ...]] = {}
        self._keep_features = (
            self.avatar.num_frames * self.model.feature_bytes
            <= self.config.feature_cache_mb * 2**20
        )
        self._support = self.model.support_box
        self._paste_cache: dict[int, dict[tuple[int, ...], FrameDetail]] = {}
        self._style = np.asarray(self.model.style(subject), dtype=np.float32)
        self._rest = rest_coefficients(self.model.motion.model, self._style, silence=self._silence)
        # finished frames at rest per loop frame (read-only, shared by every idle pass)
        self._idle_images: dict[int, np.ndarray] = {}
        self._driver: Driver | None = None
        self._frontend = MotionFrontEnd(self._motion_config, self._mel)
        self._resampler: StreamingResampler | None = None
        self._windows: list[np.ndarray] = []  # ready windows not yet rendered, in order
        self._next_index = 0  # index of the next frame handed out
        self.times = StageTimes()

    def _backend(
        self, typed: type[B], network: MotionTransformer | GeneratorEncoder | GeneratorSynthesis
    ) -> B:
        config = self.config
        backend = typed.create(
            config.backend,
            network,
            shapes=input_shapes(network, batch=config.batch),
            device=config.device,
            threads=config.threads,
            precision=config.precision,
        )
        log.info(
            "%s: %s on %s (%s)", type(network).__name__, backend.name, backend.device,
            backend.precision,
        )  # fmt: skip
        return backend

    # -- timing ---------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return "model"

    @property
    def timeline(self) -> Timeline:
        """The model's clock (:attr:`engine.avatar_model.AvatarModel.timeline`)."""
        return self.model.timeline

    @property
    def delay_samples(self) -> int:
        """Engine samples past the end of frame t's span needed before it can be rendered
        (the resampler's delay is counted for the current input rate)."""
        resampler = self._resampler
        extra = 0 if resampler is None else int(np.ceil(resampler.delay_samples_out))
        return self._frontend.delay_samples + extra

    @property
    def frame_size(self) -> tuple[int, int]:
        return self.avatar.frame_size

    @property
    def loop_frames(self) -> int:
        """Frames after which an idle stream repeats itself: the avatar's loop, forth and
        back."""
        return max(1, 2 * self.avatar.num_frames - 2)

    # -- input ----------------------------------------------------------------------------
    def push_audio(self, pcm: np.ndarray, sample_rate: int) -> None:
        """Mono PCM (float in [-1, 1] or int16) at any rate; any chunk size."""
        if np.ndim(pcm) != 1:
            raise EngineError(f"audio must be mono (1-D), got shape {np.shape(pcm)}")
        try:
            samples = pcm_to_float(pcm)
        except ValueError as exc:
            raise EngineError(str(exc)) from exc
        if not np.all(np.isfinite(samples)):
            raise EngineError("audio contains NaN or infinite samples")
        if self._resampler is None or self._resampler.rate_in != sample_rate:
            if self._resampler is not None and self._resampler.samples_in > 0:
                raise EngineError(
                    f"the stream's rate is {self._resampler.rate_in} Hz, got {sample_rate} Hz; "
                    "flush() or reset() before changing rates"
                )
            if sample_rate <= 0:
                raise EngineError(f"sample rate must be positive, got {sample_rate}")
            self._resampler = StreamingResampler(int(sample_rate), self.timeline.rate)
        began = time.perf_counter()
        self._take(self._frontend.push(self._resampler.push(samples)).windows)
        self.times.add("features", began)

    def flush(self) -> None:
        """End of speech: what the look-ahead still holds becomes ready (silence after it)."""
        began = time.perf_counter()
        if self._resampler is not None:
            self._take(self._frontend.push(self._resampler.flush()).windows)
        self._take(self._frontend.finish().windows)
        self.times.add("features", began)
        self._restart_stream()

    def reset(self) -> None:
        """Interruption: drop pending audio and frames now; the clock moves to the next
        frame boundary."""
        self._windows.clear()
        self._restart_stream()

    def set_style(self, style: SpeakingStyle) -> str:
        """Speaking style from (T, K) reference dynamics, a (style_dim,) code or the default
        style of a subject the model knows; none of them: the avatar's default style. Returns
        what the style now is (the subject's name, ``"code"`` or ``"reference"``)."""
        motion = self.model.motion
        subject, code, reference = style.subject, style.code, style.reference
        described = "reference" if reference is not None else "code"
        if subject is not None:
            self._style = np.asarray(self.model.style(subject), dtype=np.float32)
            described = subject
        elif code is not None:
            values = np.asarray(code, dtype=np.float32)
            if values.shape != (motion.config.style_dim,):
                raise EngineError(f"a style code has shape ({motion.config.style_dim},)")
            self._style = values
        elif reference is not None:
            values = np.asarray(reference, dtype=np.float32)
            if values.ndim != 2 or values.shape[1] != motion.config.num_coefficients:
                raise EngineError(
                    f"reference dynamics must be (T, {motion.config.num_coefficients})"
                )
            with torch.inference_mode():
                self._style = motion.model.style(torch.from_numpy(values)[None])[0].numpy()
        else:
            self._style = np.asarray(self.model.style(self.avatar.subject), dtype=np.float32)
            described = self.avatar.subject
        self._rest = rest_coefficients(motion.model, self._style, silence=self._silence)
        self._idle_images.clear()
        return described

    @property
    def rest(self) -> np.ndarray:
        """(K,) the dynamics of the mouth at rest with the current style."""
        return self._rest.copy()

    def set_driver(self, driver: Driver | None) -> None:
        """Drive the face from another source (e.g. tracked video) frame by frame."""
        self._driver = driver

    # -- output ---------------------------------------------------------------------------
    def pull(self) -> list[RenderedFrame]:
        """Every frame that is ready, in order; each carries this call's stage times per
        frame (``stages_ms``)."""
        frames: list[RenderedFrame] = []
        while self._windows:
            count = min(self.config.batch, len(self._windows))
            batch = np.stack(self._windows[:count])
            del self._windows[:count]
            frames.extend(self._render(batch))
        if not frames:
            return frames
        stages = self.times.take_ms(len(frames))
        return [replace(frame, stages_ms=dict(stages)) for frame in frames]

    @property
    def frames_ready(self) -> int:
        return len(self._windows)

    def drop_ready(self, keep: int = 0) -> int:
        """Skip every ready frame but the newest ``keep`` (a consumer that fell behind real
        time); their indices are used up, so the clock stays exact. Returns how many."""
        count = max(0, len(self._windows) - max(0, keep))
        del self._windows[:count]
        self._next_index += count
        return count

    # -- internals ------------------------------------------------------------------------
    def _take(self, windows: np.ndarray) -> None:
        self._windows.extend(np.ascontiguousarray(w) for w in windows)

    def _restart_stream(self) -> None:
        # Queued windows keep their places (frame indices are given out at render time),
        # so the next stream starts right after them.
        self._frontend.reset()
        self._resampler = None

    def _coefficients(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        count = windows.shape[0]
        slot = self.config.batch
        padded = np.concatenate([windows, np.repeat(windows[-1:], slot - count, axis=0)])
        style = np.repeat(self._style[None], slot, axis=0)
        began = time.perf_counter()
        raw = self._motion(padded.astype(np.float32), style)[:count]
        weights = self.config.gate.window_weights(windows, self._motion_config)
        self.times.add("motion", began)
        return SilenceGate.apply(raw, weights, self._rest), weights

    def _render(self, windows: np.ndarray) -> list[RenderedFrame]:
        count = windows.shape[0]
        coefficients, weights = self._coefficients(windows)
        indices = list(range(self._next_index, self._next_index + count))
        self._next_index += count
        if self._driver is not None:
            for row, index in enumerate(indices):
                driven = self._driver(index)
                if driven is not None:
                    coefficients[row] = np.asarray(driven, dtype=np.float32)
                    weights[row] = 1.0
        loops = [self.avatar.loop_index(index) for index in indices]
        at_rest = [bool(weights[row] == 0.0) and self._driver is None for row in range(count)]
        needed = [
            row for row in range(count) if not (at_rest[row] and loops[row] in self._idle_images)
        ]
        generated = self._generate([loops[row] for row in needed], coefficients[needed])
        crops = dict(zip(needed, generated, strict=True))
        out = []
        for row, index in enumerate(indices):
            loop = loops[row]
            image = self._idle_images.get(loop) if row not in crops else None
            if image is None:
                image = self._composite(loop, *crops[row])
                if at_rest[row]:
                    image.flags.writeable = False
                    self._idle_images[loop] = image
            self.times.frames += 1
            out.append(
                RenderedFrame(
                    index=index,
                    image=image,
                    speaking=float(weights[row]),
                    format=self.config.output,
                )
            )
        return out

    def _generate(
        self, loops: list[int], coefficients: np.ndarray
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(crop, mask) of the generator for each (loop frame, dynamics) pair, in batch slots
        of ``config.batch`` (the last one padded)."""
        results: list[tuple[np.ndarray, np.ndarray]] = []
        slot = self.config.batch
        for start in range(0, len(loops), slot):
            rows = list(range(start, min(start + slot, len(loops))))
            padded = rows + [rows[-1]] * (slot - len(rows))
            chosen = coefficients[padded]
            began = time.perf_counter()
            geometry = self._mapper(chosen.astype(np.float64)).astype(np.float32)
            began = self.times.add("geometry", began)
            features = self._loop_features([loops[r] for r in padded])
            crop, mask = self._synthesis(features, geometry, chosen.astype(np.float32))
            self.times.add("generator", began)
            results.extend((crop[position], mask[position]) for position in range(len(rows)))
        return results

    def _loop_features(self, loops: list[int]) -> tuple[np.ndarray, ...]:
        """The encoder's feature maps of loop frames ``loops`` (one batch slot), from those
        kept or by running the encoder (and keeping them, when they fit)."""
        missing = [loop for loop in loops if loop not in self._features]
        if missing:
            encoded = self._encoder(
                self._masked[loops], np.repeat(self._reference[None], len(loops), axis=0)
            )
            if not self._keep_features:
                return encoded
            for position, loop in enumerate(loops):
                self._features[loop] = tuple(f[position : position + 1].copy() for f in encoded)
        if len(loops) == 1:
            return self._features[loops[0]]
        kept = [self._features[loop] for loop in loops]
        return tuple(np.concatenate(maps) for maps in zip(*kept, strict=True))

    def _composite(self, loop: int, crop: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The generator's crop pasted into loop frame ``loop``, in the output format."""
        began = time.perf_counter()
        image = paste(
            self.avatar.frames[loop],
            crop.transpose(1, 2, 0),
            mask[0],
            target=self._targets[loop].transpose(1, 2, 0),
            frame_to_crop=self.avatar.crop_matrices[loop],
            crop_size=self.avatar.crop.size,
            config=self.config.compositor,
            support=self._support,
            frame_cache=self._paste_cache.setdefault(loop, {}),
        )
        began = self.times.add("compositing", began)
        if self.config.output == "yuv420p":
            image = cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420)
            self.times.add("colour", began)
        return image

    def encode_loop(self) -> int:
        """Run the generator's encoder on every loop frame whose feature maps are kept but not
        yet computed (they are otherwise computed the first time each loop frame is
        rendered). Returns the loop frames encoded."""
        if not self._keep_features:
            return 0
        missing = [loop for loop in range(self.avatar.num_frames) if loop not in self._features]
        slot = self.config.batch
        for start in range(0, len(missing), slot):
            chunk = missing[start : start + slot]
            self._loop_features(chunk + [chunk[-1]] * (slot - len(chunk)))
        return len(missing)

    def warm_idle(self) -> int:
        """Render every frame of the idle loop at rest once: from then on an idle stream costs
        next to nothing (frames at rest are kept, read-only). Returns the frames rendered."""
        if self._driver is not None:
            return 0
        missing = [loop for loop in range(self.avatar.num_frames) if loop not in self._idle_images]
        rest = np.repeat(self._rest[None], len(missing), axis=0)
        for loop, (crop, mask) in zip(missing, self._generate(missing, rest), strict=True):
            image = self._composite(loop, crop, mask)
            image.flags.writeable = False
            self._idle_images[loop] = image
        self.times.take_ms(0)  # not the cost of the frames pulled next
        return len(missing)

    def close(self) -> None:
        """Free the kept feature maps and frames (the engine is not used afterwards)."""
        self._features.clear()
        self._idle_images.clear()
        self._paste_cache.clear()
