"""Random canonical weights that exercise every tensor: anchors for parity checks and
trap measurements, where no pretrained weights may be downloaded.

Initialised BatchNorm is the identity (mean 0, var 1, gamma 1, beta 0), which hides
every epsilon, statistics or layout mistake in it; these weights make each BN do
real work.
"""

from __future__ import annotations

import math

import numpy as np

from shared_specs.canonical import canonical_shapes
from shared_specs.plan import make_plan
from shared_specs.spec import ResNetSpec


def random_weights(spec: ResNetSpec, seed: int = 0, dtype: type = np.float32) -> dict[str, np.ndarray]:
    """Random canonical weights with non-trivial BatchNorm running statistics.

    Convs are He-normal; norm gamma/beta/mean/var are random (var in [0.5, 2]), and so
    are EvoNorm's v (around 1), FRN's tau and ECA's kernel. The norm (or conv) closing each
    block's branch is scaled by 1/blocks so that eval-mode activations stay bounded even
    in cifar_resnet1202 (frozen BN does not renormalise growth).
    """
    rng = np.random.default_rng(seed)
    blocks = list(make_plan(spec).blocks())
    closing = {(b.last_bn or b.main[-1]).name for b in blocks}
    out: dict[str, np.ndarray] = {}
    for name, shape in canonical_shapes(spec).items():
        layer, kind = name.rsplit(".", 1)
        if kind == "running_var":
            value = rng.uniform(0.5, 2.0, shape)
        elif kind == "running_mean":
            value = rng.normal(0.0, 0.3, shape)
        elif len(shape) == 4:
            value = rng.normal(0.0, math.sqrt(2.0 / math.prod(shape[1:])), shape)
        elif len(shape) == 2:
            value = rng.uniform(-1, 1, shape) / math.sqrt(shape[1])
        elif len(shape) == 3:  # ECA's Conv1d
            value = rng.uniform(-1, 1, shape) / math.sqrt(shape[2])
        elif kind in ("weight", "v"):  # norm gamma, EvoNorm's v
            value = rng.uniform(0.5, 1.5, shape)
        else:  # norm beta, conv/dense bias, FRN's tau
            value = rng.normal(0.0, 0.1, shape)
        if layer in closing and kind in ("weight", "bias"):
            value = value / len(blocks)
        out[name] = value.astype(dtype)
    return out
