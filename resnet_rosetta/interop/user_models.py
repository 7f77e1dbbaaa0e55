"""A checkpoint of the user's own model class, ported through the class itself.

A checkpoint of a hand-written ResNet names its tensors after the user's attributes, so
no convention reads it. With `resnet-rosetta convert WEIGHTS OUT --module file.py:Name`
the user opts in to running their code: `Name(**kwargs)` builds the model, WEIGHTS are
loaded into it as data only (torch.load(weights_only=True), safetensors, or Keras's
load_weights for a Keras model), and the model's graph is read into (spec, canonical
weights) by resnet_torch.from_module or resnet_keras.from_model. Nothing else of the
user's runs, and nothing is unpickled.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from resnet_rosetta.frameworks import import_frameworks
from shared_specs import CheckpointError, ResNetSpec, SpecError
from shared_specs.checkpoint import read_checkpoint


def load_factory(reference: str) -> Callable[..., Any]:
    """The class or function `path/to/file.py:Name` names, its file executed as a module."""
    file, sep, name = reference.rpartition(":")
    if not sep or not file or not name:
        raise SpecError(f"--module {reference!r}: expected path/to/file.py:ClassName")
    path = Path(file)
    if not path.is_file():
        raise CheckpointError(f"--module {reference!r}: no file {path}")
    module_name = f"_resnet_rosetta_user_{abs(hash(path.resolve()))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise CheckpointError(f"--module {reference!r}: {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look their module up here
    spec.loader.exec_module(module)  # the user's code: they asked for it with --module
    factory = getattr(module, name, None)
    if not callable(factory):
        raise SpecError(f"--module {reference!r}: {path} defines no class or function {name!r}")
    return factory


def port_module(weights_path: str | os.PathLike[str], reference: str, kwargs: Mapping[str, Any] | None = None
                ) -> tuple[ResNetSpec, dict[str, np.ndarray], dict[str, str]]:
    """(spec, canonical weights, the model's names -> canonical) of WEIGHTS in the model that
    `reference`'s class builds with `kwargs`: a torch.nn.Module (weights from a torch.save or
    safetensors file) or a keras.Model (a Keras weights file)."""
    torch, keras = import_frameworks()
    factory = load_factory(reference)
    try:
        model = factory(**dict(kwargs or {}))
    except TypeError as err:
        raise SpecError(f"--module {reference!r}: {getattr(factory, '__name__', reference)}(**{dict(kwargs or {})}) "
                        f"failed: {err}") from None
    path = Path(weights_path)
    if isinstance(model, torch.nn.Module):
        from resnet_rosetta.interop.files import _read_torch, detect_format
        from resnet_torch import from_module

        fmt = detect_format(path)
        if fmt not in ("torch", "safetensors"):
            raise CheckpointError(f"{path}: a {fmt} file; a PyTorch module loads a torch.save or safetensors file")
        state = _read_torch(path) if fmt == "torch" else read_checkpoint(path)[1]
        _load_state(model, state, path, torch)
        return from_module(model.eval())
    if isinstance(model, keras.Model):
        from resnet_keras import from_model

        try:
            model.load_weights(path)
        except Exception as err:  # Keras raises ValueError and others for weights of another model
            text = " ".join(str(err).split())
            raise CheckpointError(f"{path}: cannot load into {model.name!r}: {text[:300]}") from None
        return from_model(model)
    raise SpecError(f"--module {reference!r} built a {type(model).__name__}, not a torch.nn.Module or keras.Model")


def _load_state(model: Any, state: Mapping[str, np.ndarray], path: Path, torch: Any) -> None:
    """Load strictly: every tensor the model has, nothing else, shapes equal; else one message."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} (model: {tuple(own[k].shape)})" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = [f"{label} {len(items)}: {', '.join(items[:4])}{' ...' if len(items) > 4 else ''}"
                for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes))
                if items]
    if problems:
        raise CheckpointError(f"{path} does not fit {type(model).__name__}: " + "; ".join(problems))
    with torch.no_grad():
        for k, v in own.items():
            if k in state:
                v.copy_(torch.as_tensor(np.array(state[k])))  # a copy: the model never aliases the file's arrays
