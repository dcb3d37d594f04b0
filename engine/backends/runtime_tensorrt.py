"""The graph compiled by Torch-TensorRT (the ``gpu`` extra), CUDA only.

Built with the documented dynamo path::

    torch_tensorrt.compile(module, ir="dynamo",
                           inputs=[torch_tensorrt.Input(min_shape=..., opt_shape=...,
                                                        max_shape=..., dtype=torch.float32)],
                           enabled_precisions={torch.float16})

for a batch range 1 .. planned batch (optimised for the planned batch), then saved with
``torch_tensorrt.save(..., output_format="exported_program")`` into the artefact cache and
loaded with ``torch_tensorrt.load(path).module()``; a cached program skips the build. The
key holds the Torch-TensorRT and TensorRT versions and the GPU's name and architecture.
For fp16 the module and its inputs are half precision (``enabled_precisions={torch.float16}``);
the backend's inputs and outputs are float32 either way.
Importing this module never imports torch_tensorrt: building a runtime does.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from engine.backends.artifact_cache import CacheKey
from engine.backends.graphs import graph_spec
from engine.backends.runtime import BackendError, RuntimeOptions, import_package, one_line
from engine.backends.torch_module import TorchModuleRuntime, device_name, inference_copy


def tensorrt_version(torch_tensorrt: ModuleType) -> str:
    version = f"torch_tensorrt {getattr(torch_tensorrt, '__version__', '?')}"
    try:
        import tensorrt

        version += f" tensorrt {getattr(tensorrt, '__version__', '?')}"
    except ImportError:
        pass
    return f"{version} torch {torch.__version__}"


class TensorRtRuntime(TorchModuleRuntime):
    """A Torch-TensorRT program for batches 1 .. the planned batch."""

    def __init__(self, model: nn.Module, options: RuntimeOptions) -> None:
        super().__init__(model, options)
        # OSError: the package is there, its libraries not
        trt = import_package("torch_tensorrt", errors=(ImportError, OSError))
        spec = graph_spec(model)
        planned, batch = spec.check_shapes(options.shapes)
        self.max_batch = batch
        key = CacheKey.for_model(
            model,
            shapes=planned,
            precision=options.precision,
            runtime="torch_tensorrt",
            runtime_version=tensorrt_version(trt),
            device=device_name(self._device),
        )

        def build(path: Path) -> None:
            # fp16: a half-precision module with half inputs (self._dtype), so that the
            # program is fp16 whether this Torch-TensorRT types the graph explicitly (newer
            # releases: dtypes of the module and inputs rule) or lets TensorRT choose
            # (enabled_precisions).
            module = inference_copy(model, self._device, self._dtype)
            inputs = [
                _input_spec(trt, name, item, batch, self._dtype)
                for name, item in zip(spec.input_names, spec.item_shapes, strict=True)
            ]
            with torch.inference_mode():
                compiled = trt.compile(
                    module,
                    ir="dynamo",
                    inputs=inputs,
                    enabled_precisions={self._dtype},
                    device=self._device,
                )
            trt.save(
                compiled,
                str(path),
                output_format="exported_program",
                arg_inputs=inputs,  # the batch range is saved with the program
                retrace=True,
            )

        try:
            self.artifact, self.cache_hit = options.cache.fetch(key, ".ep", build)
            self._module = trt.load(str(self.artifact)).module()
        except BackendError:
            raise
        except Exception as exc:  # Torch-TensorRT and TensorRT raise many types
            raise BackendError(f"tensorrt build failed: {one_line(exc)}") from exc


def _input_spec(
    trt: ModuleType, name: str, item: tuple[int, ...], batch: int, dtype: torch.dtype
) -> Any:
    """``torch_tensorrt.Input`` of one graph input: batches 1 .. ``batch``, tuned for
    ``batch`` (a static shape when ``batch`` is 1)."""
    if batch == 1:
        return trt.Input(shape=(1, *item), dtype=dtype, name=name)
    return trt.Input(
        min_shape=(1, *item),
        opt_shape=(batch, *item),
        max_shape=(batch, *item),
        dtype=dtype,
        name=name,
    )
