"""ONNX export of a Keras ResNet with Keras's own exporter (the PyTorch twin is resnet_torch/onnx.py).

`model.export(format="onnx")` converts through a different library per backend:
- tensorflow: tf2onnx (in this project's `interop` extra). TensorFlow's graph
  optimiser folds every BatchNorm into the conv before it, so the file computes the
  same function but no longer holds the BatchNorm parameters (see docs/onnx.md).
- torch: torch.onnx's TorchScript tracer, which Keras picks whenever a dimension is
  dynamic. The tracer cannot keep H and W dynamic through Keras's 'same' padding
  (it fails on the padding amounts), so 'same'-padded specs need `input_size`; so do
  anti-aliased ones, since Keras traces dynamic sizes with a 1x1 image, which a 2x2
  average pool or BlurPool's reflect padding cannot take.
- jax: jax2onnx, which pulls in flax, equinox, optax and orbax; it is not a
  dependency of this project, and without it the export stops with an ImportError
  saying so. The weights are canonical: build the model with resnet_torch and
  export it there (docs/onnx.md shows how).
The graph takes NHWC input, as the Keras model does.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import keras

from resnet_keras.build import ResNet
from shared_specs import SpecError, output_shape
from shared_specs.onnx_file import DEFAULT_OPSET, INPUT_NAME, check_output_path, finish_onnx

# The converter Keras imports for each backend, and what it needs that we do not install.
_CONVERTERS = {"tensorflow": ("tf2onnx", "pip install tf2onnx (or resnet-rosetta[interop])"),
               "jax": ("jax2onnx", "pip install jax2onnx (it adds flax, equinox, optax and orbax)"),
               "torch": ("torch", "")}


def export_onnx(model: ResNet, path: str | os.PathLike[str], *, opset: int = DEFAULT_OPSET,
                dynamic_batch: bool = True, input_size: tuple[int, int] | None = None) -> Path:
    """Write the inference graph of `model` (NHWC input) to `path` and return the path.

    `input_size=None` keeps height and width dynamic; `(H, W)` fixes them.
    `dynamic_batch=False` fixes the batch at 1. The spec is stored in the file's
    metadata; the graph's input is named `input`, its output `output`.
    """
    if not isinstance(model, ResNet):
        raise TypeError(f"export_onnx needs a resnet_keras ResNet, got {type(model).__name__}")
    target = check_output_path(path)
    backend = keras.backend.backend()
    module, install = _CONVERTERS.get(backend, (None, ""))
    if module is None:
        raise NotImplementedError(f"Keras exports ONNX from the tensorflow, jax and torch backends, not {backend!r}")
    if importlib.util.find_spec(module) is None:
        raise ImportError(
            f"Keras exports ONNX on the {backend} backend through {module}, which is not installed: {install}. "
            "Or move the weights to PyTorch and use resnet_torch.export_onnx (docs/onnx.md)."
        )
    if backend == "torch" and input_size is None and model.spec.padding == "same":
        raise SpecError(
            f"{model.spec.name} uses Keras 'same' padding, which Keras's torch-backend ONNX export "
            "(TorchScript tracing) cannot keep dynamic in height and width: pass input_size=(H, W), "
            "or export on the tensorflow backend"
        )
    if backend == "torch" and input_size is None and model.spec.anti_alias != "none":
        raise SpecError(
            f"{model.spec.name} has anti_alias={model.spec.anti_alias!r}, which Keras's torch-backend ONNX export "
            "cannot trace with dynamic height and width (it traces a 1x1 image, which a 2x2 pool or a reflect "
            "pad cannot take): pass input_size=(H, W), or export on the tensorflow backend"
        )
    if input_size is not None:
        output_shape(model.spec, input_size)  # a size the network cannot take is a SpecError naming the layer
    dtypes = sorted({str(v.dtype) for v in model.weights})
    if dtypes != ["float32"]:
        raise SpecError(f"Keras exports ONNX from float32 models only; this one holds {', '.join(dtypes)} weights")
    shape = (None if dynamic_batch else 1, *(input_size or (None, None)), model.spec.in_channels)
    signature = [keras.InputSpec(shape=shape, dtype="float32", name=INPUT_NAME)]
    with tempfile.TemporaryDirectory(prefix="resnet_keras_onnx_") as tmp:
        written = Path(tmp) / "model.onnx"
        model.export(str(written), format="onnx", verbose=False, input_signature=signature, opset_version=opset)
        import onnx

        proto = onnx.load(written)
    return finish_onnx(proto, target, model.spec, f"resnet_keras (Keras {keras.__version__}, {backend} backend)")
