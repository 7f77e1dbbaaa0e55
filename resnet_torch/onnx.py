"""ONNX export of a PyTorch ResNet with torch.onnx (the Keras twin is resnet_keras/onnx.py).

The dynamo exporter (`torch.onnx.export(dynamo=True)`) is used, not the TorchScript
tracer: the tracer records the 'same'-padding amounts computed from the traced input
size as constants, so a 'same'-padded spec exported that way is silently wrong at
other sizes (measured: 0.02 absolute on outputs of scale 0.05 for
tutorial_keras_resnet18). The exporter's graph optimiser is left off: it folds each
BatchNorm into the conv before it and keeps the conv's name (`conv1.weight`) on the
folded tensor, so the file would no longer hold the model's weights under their
names. Unfolded, every initializer is a state_dict entry and
`resnet_rosetta.from_onnx` reads the weights back exactly; onnxruntime folds
BatchNorm itself when it loads the graph, so inference speed is the same.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import torch
from torch import nn

from shared_specs import ResNetSpec, make_plan, output_shape
from shared_specs import plan as P
from shared_specs.onnx_file import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, check_output_path, finish_onnx

# Size of the example input the exporter traces with. Batch and sides of 2 or more:
# torch.export treats a dimension of size 0 or 1 as a constant.
_EXAMPLE_BATCH, _EXAMPLE_SIDE = 2, 64


def export_onnx(model: nn.Module, path: str | os.PathLike[str], *, opset: int = DEFAULT_OPSET,
                dynamic_batch: bool = True, input_size: tuple[int, int] | None = None) -> Path:
    """Write the eval-mode graph of `model` (NCHW input) to `path` and return the path.

    `input_size=None` keeps height and width dynamic (multiples of the total stride for
    specs with anti_alias="avg", which run on no other sizes); `(H, W)` fixes them.
    `dynamic_batch=False` fixes the batch at 1. Any image model taking NCHW input
    works (a torchvision ResNet too); a resnet_torch ResNet's spec is stored in the
    file's metadata. The graph's input is named `input`, its output `output`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"export_onnx needs a torch.nn.Module, got {type(model).__name__}")
    target = check_output_path(path)
    _refuse_after_tensorflow()
    spec = getattr(model, "spec", None)
    param = next(model.parameters())
    batch = _EXAMPLE_BATCH if dynamic_batch else 1
    hw = input_size if input_size is not None else (_EXAMPLE_SIDE, _EXAMPLE_SIDE)
    example = torch.zeros(batch, _in_channels(model), *hw, dtype=param.dtype, device=param.device)
    if spec is not None and input_size is not None:
        output_shape(spec, input_size)  # a size the network cannot take is a SpecError naming the layer
    dims: dict[int, object] = {}
    if dynamic_batch:
        dims[0] = torch.export.Dim.DYNAMIC  # DYNAMIC, not AUTO: an export that specialises it is an error
    if input_size is None:
        multiple = _size_multiple(spec) if spec is not None else 1
        if multiple == 1:
            dims[2] = dims[3] = torch.export.Dim.DYNAMIC
        else:  # H and W as multiples: torch.export cannot prove the residual shapes agree otherwise
            dims[2], dims[3] = (multiple * torch.export.Dim(f"{side}_div{multiple}") for side in ("height", "width"))
    was_training = model.training
    model.eval()
    try:
        program = torch.onnx.export(
            model, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], dynamic_shapes=(dims,) if dims else None,
            optimize=False, external_data=False, verbose=False,
        )
    finally:
        model.train(was_training)
    return finish_onnx(program.model_proto, target, spec, f"resnet_torch (torch {torch.__version__})")


def _size_multiple(spec: ResNetSpec) -> int:
    """What height and width must be multiples of: 1, or the network's total stride where a
    floor-mode average pool (timm's "avg" anti-aliasing) halves a residual branch whose
    shortcut rounds up, so that only sizes halving evenly at every stride run at all (as in
    timm). torch.export has to be told: it fails to solve that constraint by itself."""
    plan = make_plan(spec)
    if not any(isinstance(op, P.AvgPool) and not op.ceil_mode for op in plan.ops()):
        return 1
    stride = 1
    for op in plan.stem:
        stride *= getattr(op, "stride", 1)
    for block in plan.blocks():
        stride *= block.stride
    return stride


def _in_channels(model: nn.Module) -> int:
    spec = getattr(model, "spec", None)
    if spec is not None:
        return int(spec.in_channels)
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise TypeError(f"export_onnx: {type(model).__name__} has no Conv2d to tell its input channels from")
    return first.in_channels


def _refuse_after_tensorflow() -> None:
    # Trap 21: the dynamo exporter loads triton; if TensorFlow (whose LLVM is loaded with
    # RTLD_GLOBAL) came first, the process dies with a segfault. Say so instead.
    if "tensorflow" in sys.modules and "triton" not in sys.modules and importlib.util.find_spec("triton"):
        raise RuntimeError(
            "export_onnx: TensorFlow was imported before triton in this process, and torch's ONNX "
            "exporter would crash it (segfault). Import triton (or call "
            "resnet_rosetta.frameworks.import_frameworks()) before anything imports TensorFlow."
        )
