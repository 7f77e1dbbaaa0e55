"""Canonical weights in and out of a PyTorch ResNet (the Keras twin is resnet_keras/weights.py).

Canonical names are this model's state_dict keys, so no renaming happens here:
tensors are copied out (never shared, trap 17) and copied in only after
`shared_specs.check_weights` accepted all of them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch

from resnet_torch.build import ResNet, build
from shared_specs import canonical_shapes, check_weights, write_checkpoint
from shared_specs.checkpoint import read_spec_and_weights, read_weights_for


def export_weights(model: ResNet) -> dict[str, np.ndarray]:
    """The model's canonical weights: numpy copies in PyTorch layout, in plan order."""
    state = model.state_dict()
    return {name: state[name].detach().cpu().numpy().copy() for name in canonical_shapes(model.spec)}


def import_weights(model: ResNet, weights: Mapping[str, np.ndarray | torch.Tensor], *, source: str = "weights") -> None:
    """Load canonical weights (numpy arrays or torch tensors, e.g. a torchvision state_dict).

    Strict and all-or-nothing: every missing, unexpected or mis-shaped tensor is
    listed in one WeightsError and the model is left untouched.
    """
    arrays = {k: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v for k, v in weights.items()}
    checked = check_weights(model.spec, arrays, source=source)
    state = model.state_dict()
    with torch.no_grad():
        for name, value in checked.items():
            state[name].copy_(torch.from_numpy(value))  # copy_ casts to the model's dtype


def save_weights(model: ResNet, path: str | os.PathLike[str]) -> None:
    """Write the canonical checkpoint (safetensors + spec JSON + format version), atomically."""
    write_checkpoint(path, export_weights(model), model.spec)


def load_weights(model: ResNet, path: str | os.PathLike[str]) -> None:
    """Load a canonical checkpoint into `model`; its stored spec must match the model's."""
    import_weights(model, read_weights_for(path, model.spec, "resnet_torch.load_model"), source=str(path))


def load_model(path: str | os.PathLike[str]) -> ResNet:
    """Build the model a canonical checkpoint describes and load its weights."""
    spec, weights = read_spec_and_weights(path)
    model = build(spec, initialize=False)  # every value is imported next
    import_weights(model, weights, source=str(path))
    return model
