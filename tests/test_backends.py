"""Inference backends of the per-frame graphs (motion, generator, the generator's encoder and
synthesis): parity with eager, the artefact cache, ``auto`` and the guarded optional
runtimes."""

from __future__ import annotations

import importlib.util
import logging
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.backend_registry import AUTO, BACKEND_NAMES, RUNTIME_NAMES, RUNTIMES, auto_candidates
from engine.backends import (
    ArtifactCache,
    Backend,
    BackendError,
    CacheKey,
    EncoderBackend,
    GeneratorBackend,
    MotionBackend,
    Runtime,
    SynthesisBackend,
    create_backend,
    graph_spec,
    input_shapes,
    weights_digest,
)
from engine.errors import EngineError
from engine.generator import AvatarGenerator
from engine.generator_parts import GeneratorEncoder, GeneratorSynthesis
from engine.motion import MotionConfig, MotionModel, MotionTransformer
from tests.test_generator_model import TINY
from tests.test_motion_model import _model as small_motion_model

MOTION = MotionConfig(
    num_coefficients=6, width=32, layers=2, heads=2, style_dim=16, style_hidden=24, dropout=0.0
)
GENERATOR = replace(TINY, image_size=64)
KINDS = RUNTIME_NAMES
GRAPHS = ("motion", "generator", "encoder", "synthesis")
BACKEND_OF: dict[str, type[Backend]] = {
    "motion": MotionBackend,
    "generator": GeneratorBackend,
    "encoder": EncoderBackend,
    "synthesis": SynthesisBackend,
}
TOLERANCE = 1e-3


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PRESENTER_HOME in a temporary folder: the artefact cache goes there."""
    path = tmp_path / "home"
    monkeypatch.setenv("PRESENTER_HOME", str(path))
    return path


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _motion(seed: int = 0) -> MotionTransformer:
    return small_motion_model(MOTION, seed).transformer.eval()


def _generator(seed: int = 0) -> AvatarGenerator:
    torch.manual_seed(seed)
    generator = AvatarGenerator(GENERATOR)
    generator.set_coefficient_std(torch.linspace(0.1, 0.6, GENERATOR.num_coefficients))
    return generator.eval()


Graph = MotionTransformer | AvatarGenerator | GeneratorEncoder | GeneratorSynthesis


def _model(graph: str) -> Graph:
    if graph == "motion":
        return _motion()
    if graph == "encoder":
        return GeneratorEncoder(_generator())
    if graph == "synthesis":
        return GeneratorSynthesis(_generator())
    return _generator()


def _reference(model: Graph, inputs: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    with torch.no_grad():
        out = model(*(torch.from_numpy(array) for array in inputs))
    outputs = (out,) if isinstance(out, torch.Tensor) else out
    return tuple(t.numpy() for t in outputs)


def _tensorrt_usable() -> bool:
    return importlib.util.find_spec("torch_tensorrt") is not None and torch.cuda.is_available()


def _unavailable(kind: str) -> str | None:
    """Why ``kind`` cannot run on this machine's CPU (None: it must)."""
    if kind == "openvino" and importlib.util.find_spec("openvino") is None:
        return "the openvino extra is not installed"
    if kind == "compiled" and not (shutil.which("g++") or shutil.which("c++")):
        return "torch.compile on the CPU needs a C++ compiler"
    if kind == "tensorrt":
        return "tensorrt runs on CUDA only (see test_cuda_backends_agree_with_cpu_eager)"
    return None


def test_the_registry_names_every_runtime_once_and_loads_each() -> None:
    assert (AUTO, *RUNTIME_NAMES) == BACKEND_NAMES
    assert sorted(RUNTIME_NAMES) == sorted(set(RUNTIME_NAMES))
    for entry in RUNTIMES:
        runtime = entry.load()
        assert issubclass(runtime, Runtime)
        assert runtime.__module__ == f"engine.backends.runtime_{entry.name}"
        assert set(entry.auto_on) <= {"cpu", "cuda"}
    # auto's order: on CUDA the compiled torch runtimes; on the CPU the two graph runtimes
    assert auto_candidates("cuda") == ("tensorrt", "compiled", "eager")
    assert auto_candidates("cpu") == ("tensorrt", "openvino", "onnxrt", "eager")


def test_the_registry_is_light_to_import() -> None:
    """The command line builds its --backend choices from it without loading torch."""
    code = "import sys, engine.backend_registry; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("kind", KINDS)
def test_backend_matches_eager_torch(kind: str, graph: str) -> None:
    reason = _unavailable(kind)
    if reason:
        pytest.skip(reason)
    if (kind, graph) == ("compiled", "generator"):
        pytest.skip("the engine runs the generator as its encoder and synthesis: compiled on those")
    model = _model(graph)
    spec = graph_spec(model)
    backend = create_backend(kind, model, shapes=input_shapes(model, batch=2), threads=1)
    assert type(backend) is BACKEND_OF[graph]
    assert (backend.name, backend.device, backend.precision) == (kind, "cpu", "fp32")
    for batch in (1, 2):
        inputs = spec.example_inputs(input_shapes(model, batch), seed=10 + batch)
        outputs = backend.run_arrays(inputs)
        expected = _reference(model, inputs)
        assert len(outputs) == len(spec.output_names)
        for output, reference in zip(outputs, expected, strict=True):
            assert output.dtype == np.float32
            assert output.shape == reference.shape
            assert np.abs(output - reference).max() < TOLERANCE
    backend.close()


def test_typed_run_of_each_graph() -> None:
    motion = _motion()
    backend = MotionBackend.create("onnxrt", motion, shapes=input_shapes(motion), threads=1)
    mel, style = graph_spec(motion).example_inputs(input_shapes(motion))
    assert backend(mel, style).shape == (1, MOTION.num_coefficients)
    with pytest.raises(ValueError, match="mel"):
        backend.run(mel[:, 1:], style)

    generator = _generator()
    eager = GeneratorBackend.create("eager", generator, shapes=input_shapes(generator))
    crop, mask = eager.run(*graph_spec(generator).example_inputs(input_shapes(generator)))
    assert crop.shape == (1, 3, 64, 64)
    assert mask.shape == (1, 1, 64, 64)


def test_onnx_cache_hits_on_the_second_creation(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _motion()
    before = weights_digest(model)
    shapes = input_shapes(model)
    first = create_backend("onnxrt", model, shapes=shapes, threads=1)
    assert first.cache_hit is False
    assert first.artifact is not None
    assert first.artifact.parent == home / "cache"
    stamp = first.artifact.stat().st_mtime_ns

    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached ONNX file was exported again")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    second = create_backend("onnxrt", model, shapes=shapes, threads=1)
    assert second.cache_hit is True
    assert second.artifact == first.artifact
    assert second.artifact.stat().st_mtime_ns == stamp
    if _unavailable("openvino") is None:  # the same file serves OpenVINO
        third = create_backend("openvino", model, shapes=shapes, threads=1)
        assert third.cache_hit is True
        assert third.artifact == first.artifact

    inputs = graph_spec(model).example_inputs(shapes)
    assert np.array_equal(first.run_arrays(inputs)[0], second.run_arrays(inputs)[0])
    assert weights_digest(model) == before  # the caller's model is not touched
    cache_files = sorted(p.name for p in (home / "cache").iterdir())
    assert [name for name in cache_files if name.endswith(".onnx")] == [first.artifact.name]
    assert not [name for name in cache_files if "partial" in name]


def test_onnx_cache_misses_when_weights_or_shapes_change() -> None:
    model = _motion()
    base = MotionBackend.create("onnxrt", model, shapes=input_shapes(model, 1), threads=1)
    reshaped = MotionBackend.create("onnxrt", model, shapes=input_shapes(model, 2), threads=1)
    with torch.no_grad():
        model.head.bias.add_(0.5)
    retrained = MotionBackend.create("onnxrt", model, shapes=input_shapes(model, 1), threads=1)
    assert (base.cache_hit, reshaped.cache_hit, retrained.cache_hit) == (False, False, False)
    assert len({base.artifact, reshaped.artifact, retrained.artifact}) == 3

    inputs = graph_spec(model).example_inputs(input_shapes(model))
    (expected,) = _reference(model, inputs)
    assert np.abs(retrained.run(*inputs) - expected).max() < TOLERANCE
    assert np.abs(base.run(*inputs) - expected).max() > 0.01  # the old weights


def _key(
    model: AvatarGenerator,
    *,
    batch: int = 1,
    precision: str = "fp32",
    version: str = "2.0",
    device: str = "gpu a",
) -> str:
    return CacheKey.for_model(
        model,
        shapes=input_shapes(model, batch),
        precision=precision,
        runtime="torch_tensorrt",
        runtime_version=version,
        device=device,
    ).digest()


def test_cache_key_covers_weights_shapes_precision_runtime_and_device() -> None:
    model = _generator()
    key = _key(model)
    assert _key(_generator()) == key  # same weights, same key
    assert _key(_generator(seed=1)) != key
    assert _key(model, batch=2) != key
    assert _key(model, precision="fp16") != key
    assert _key(model, version="2.1") != key
    assert _key(model, device="gpu b") != key


def test_a_failed_build_leaves_nothing_in_the_cache(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    model = _motion()
    key = CacheKey.for_model(
        model,
        shapes=input_shapes(model),
        precision="fp32",
        runtime="test",
        runtime_version="1",
        device="any",
    )

    def broken(path: Path) -> None:
        path.write_bytes(b"half")
        raise RuntimeError("the build fell over")

    with pytest.raises(RuntimeError):
        cache.fetch(key, ".bin", broken)
    assert list((tmp_path / "cache").iterdir()) == []
    path, hit = cache.fetch(key, ".bin", lambda p: p.write_bytes(b"whole"))
    assert (hit, path.read_bytes()) == (False, b"whole")
    assert cache.fetch(key, ".bin", broken) == (path, True)


@pytest.mark.parametrize("graph", ["motion", "generator"])
def test_auto_returns_a_working_measured_backend(
    graph: str, caplog: pytest.LogCaptureFixture
) -> None:
    model = _model(graph)
    shapes = input_shapes(model)
    candidates = ("tensorrt", "openvino", "onnxrt", "eager")
    with caplog.at_level(logging.INFO, logger="engine.backends"):
        backend = create_backend("auto", model, shapes=shapes, threads=1, candidates=candidates)
    assert backend.name in candidates
    assert backend.measured_ms is not None
    assert backend.measured_ms > 0
    if not _tensorrt_usable():
        fallbacks = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
        assert fallbacks[0].startswith("tensorrt unavailable: ")
        assert fallbacks[0].endswith("; trying openvino")
        assert all("\n" not in message for message in fallbacks)
    inputs = graph_spec(model).example_inputs(shapes, seed=3)
    for output, expected in zip(backend.run_arrays(inputs), _reference(model, inputs), strict=True):
        assert np.abs(output - expected).max() < TOLERANCE


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_tensorrt_says_in_one_line_why_it_cannot_run_here(device: str) -> None:
    if _tensorrt_usable() and device == "cuda":
        pytest.skip("torch_tensorrt and CUDA are both here: the CUDA parity test builds it")
    model = _motion()
    with pytest.raises(BackendError) as caught:
        create_backend("tensorrt", model, shapes=input_shapes(model), device=device)
    message = str(caught.value)
    assert isinstance(caught.value, EngineError)
    assert message
    assert "\n" not in message
    assert "CUDA" in message or "torch-tensorrt" in message


def test_openvino_without_the_extra_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    model = _motion()
    with pytest.raises(BackendError, match=r"presenter\[openvino\]") as caught:
        create_backend("openvino", model, shapes=input_shapes(model), threads=1)
    assert "\n" not in str(caught.value)


def test_bad_requests_are_clear_errors() -> None:
    model = _motion()
    shapes = input_shapes(model)
    with pytest.raises(BackendError, match="unknown backend"):
        create_backend("tflite", model, shapes=shapes)
    with pytest.raises(BackendError, match="fp16"):
        create_backend("eager", model, shapes=shapes, precision="fp16")
    with pytest.raises(BackendError, match="fp16"):
        create_backend("onnxrt", model, shapes=shapes, precision="fp16")
    with pytest.raises(ValueError, match="style"):
        create_backend("eager", model, shapes={"mel": shapes["mel"], "style": (1, 3)})
    with pytest.raises(TypeError, match="transformer"):
        create_backend("eager", MotionModel(MOTION), shapes=shapes)  # type: ignore[type-var]


def test_a_typed_backend_runs_its_own_graph_only() -> None:
    generator = _generator()
    with pytest.raises(TypeError, match="motion graph"):
        MotionBackend.create("eager", generator, shapes=input_shapes(generator))  # type: ignore[arg-type]


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("kind", "precision"),
    [("eager", "fp16"), ("compiled", "fp32"), ("tensorrt", "fp32"), ("tensorrt", "fp16")],
)
@pytest.mark.parametrize("graph", GRAPHS)
def test_cuda_backends_agree_with_cpu_eager(kind: str, precision: str, graph: str) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if kind == "tensorrt" and not _tensorrt_usable():
        pytest.skip("needs torch_tensorrt (the gpu extra)")
    model = _model(graph)
    backend = create_backend(
        kind, model, shapes=input_shapes(model, 2), device="cuda", precision=precision
    )
    tolerance = 3e-2 if precision == "fp16" else 1e-2  # fp16; TF32 convolutions
    for batch in (1, 2):
        inputs = graph_spec(model).example_inputs(input_shapes(model, batch), seed=batch)
        outputs = backend.run_arrays(inputs)
        for output, expected in zip(outputs, _reference(model, inputs), strict=True):
            assert np.abs(output - expected).max() < tolerance * max(1.0, np.abs(expected).max())
