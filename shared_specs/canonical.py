"""Canonical weights: what both frameworks exchange.

Canonical weights are a `dict[str, numpy.ndarray]` keyed by canonical tensor name
(torchvision's state_dict keys) in PyTorch layout: conv kernels (out, in/groups, kH,
kW), dense kernels (out, in). A torchvision state_dict converted to numpy is one as
it is. `check_weights` is the single gate every importer goes through, so a model is
never half-loaded: it lists every problem at once or returns weights that fit.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from shared_specs.errors import WeightsError
from shared_specs.plan import IGNORED_SUFFIXES, make_plan
from shared_specs.spec import ResNetSpec


def canonical_shapes(spec: ResNetSpec) -> dict[str, tuple[int, ...]]:
    """Every canonical tensor name of `spec` with its PyTorch-layout shape, in plan order."""
    return {name: shape for name, shape, _ in make_plan(spec).tensors()}


def check_weights(spec: ResNetSpec, weights: Mapping[str, object], *, source: str = "weights") -> dict[str, np.ndarray]:
    """Validate `weights` against `spec` and return them as float numpy arrays.

    Every missing, unexpected, mis-shaped, non-floating or non-finite tensor is
    listed in one WeightsError; `source` names where the weights came from.
    Keys ending in `num_batches_tracked` (torchvision's BN step counter) are dropped.
    """
    expected = canonical_shapes(spec)
    given = {k: v for k, v in weights.items() if not k.endswith(IGNORED_SUFFIXES)}
    problems: list[str] = []
    missing = [k for k in expected if k not in given]
    unexpected = sorted(k for k in given if k not in expected)
    if missing:
        problems.append(f"missing {len(missing)}: {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {_preview(unexpected)}")
    out: dict[str, np.ndarray] = {}
    for name, shape in expected.items():
        if name not in given:
            continue
        value = given[name]
        if not isinstance(value, np.ndarray):
            problems.append(f"{name} is a {type(value).__name__}, not a numpy array")
            continue
        if value.shape != shape:
            problems.append(f"{name} has shape {value.shape}, expected {shape}")
        elif not np.issubdtype(value.dtype, np.floating):
            problems.append(f"{name} has dtype {value.dtype}, expected a floating type")
        elif not np.isfinite(value).all():
            problems.append(f"{name} holds {int((~np.isfinite(value)).sum())} NaN/Inf values")
        elif name.endswith(".running_var") and (value < 0).any():
            problems.append(f"{name} holds negative variances")
        else:
            out[name] = value
    if problems:
        raise WeightsError(f"{source} do not fit spec {spec.name!r}: " + "; ".join(problems))
    return out


def _preview(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
