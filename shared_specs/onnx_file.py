"""What both ONNX exporters do around their framework's own exporter.

`resnet_torch.export_onnx` and `resnet_keras.export_onnx` let torch.onnx and Keras
write the graph, then both finish it here: the one input and output are named
`input` and `output`, the spec is stamped into the model's metadata (the same keys
as our safetensors checkpoint, so `resnet_rosetta.from_onnx` knows the network),
and the file is written atomically. It works on an `onnx.ModelProto` through its
protobuf methods alone, so shared_specs still imports nothing beyond numpy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from shared_specs.checkpoint import FORMAT, FORMAT_VERSION, atomic_write
from shared_specs.errors import CheckpointError
from shared_specs.spec import ResNetSpec

# ONNX's own opset the exporters target: every op a ResNet needs exists in it, and
# torch.onnx (dynamo), tf2onnx 1.17 and onnxruntime >= 1.14 all implement it.
DEFAULT_OPSET = 18
INPUT_NAME, OUTPUT_NAME = "input", "output"


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """`path` as a Path if a file can be written there; checked before a slow export starts."""
    target = Path(path)
    if target.is_dir():
        raise CheckpointError(f"{target}: is a directory; name the .onnx file to write")
    if not target.parent.is_dir():
        what = "is not a directory" if target.parent.exists() else "does not exist"
        raise CheckpointError(f"{target}: cannot write: {target.parent} {what}")
    if not os.access(target.parent, os.W_OK):
        raise CheckpointError(f"{target}: cannot write: directory {target.parent} is not writable")
    return target


def finish_onnx(model: Any, path: Path, spec: ResNetSpec | None, producer: str) -> Path:
    """Name the graph's input and output, stamp `spec` and `producer`, write `model` atomically."""
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise CheckpointError(f"{path}: expected a graph with one input and one output, got "
                              f"{len(inputs)} and {len(graph.output)}")
    _rename(graph, inputs[0].name, INPUT_NAME)
    _rename(graph, graph.output[0].name, OUTPUT_NAME)
    meta = {"producer": producer}
    if spec is not None:
        meta.update(format=FORMAT, format_version=str(FORMAT_VERSION), spec=spec.to_json(indent=None))
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in meta]
    del model.metadata_props[:]
    for key, value in [*kept, *meta.items()]:
        model.metadata_props.add(key=key, value=value)
    atomic_write(path, lambda f: f.write(model.SerializeToString()))
    return path


def _rename(graph: Any, old: str, new: str) -> None:
    """Rename one value everywhere the graph names it (tf2onnx calls the output 'Identity:0')."""
    if old == new:
        return
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.name == old:
            value.name = new
