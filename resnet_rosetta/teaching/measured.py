"""What a trap measurement returns, and the anchors every measurement starts from.

An anchor is a preset built in both frameworks with the same random weights and
random BatchNorm statistics (`shared_specs.synthetic`), evaluated on one random batch:
no pretrained weights, nothing downloaded, the same numbers on every run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from resnet_rosetta.frameworks import Framework, KerasFramework, TorchFramework, framework_of, import_frameworks
from resnet_rosetta.interop.layer_outputs import first_divergence, relative_difference
from shared_specs import ResNetSpec, resolve_spec
from shared_specs.synthetic import random_weights
from shared_specs.tolerances import F32_PARITY

# A layer "diverges" once it differs by more than the float32 parity bound (conv
# accumulation order alone gives ~5e-6; shared_specs.tolerances says why).
BITE = F32_PARITY
BATCH = 2


@dataclass(frozen=True)
class Measured:
    """One trap measured now: the setting, one line per fact, the numbers behind them."""

    setting: str
    facts: tuple[str, ...]
    values: dict[str, Any] = field(default_factory=dict)
    first_bite: str | None = None  # canonical layer where the mistake first changes the output


def g(x: float) -> str:
    """Two significant digits: enough to teach, stable from run to run."""
    return f"{x:.2g}"


def backend() -> str:
    """The Keras backend of this process."""
    _, keras = import_frameworks()
    return keras.backend.backend()


def setting(spec: ResNetSpec, hw: int, extra: str = "") -> str:
    """One line saying what a measurement ran on."""
    return (f"{spec.name} at {hw}x{hw}, batch {BATCH}, random weights and BN statistics, "
            f"Keras on {backend()}{extra}")


@dataclass
class Anchor:
    """A spec, its random canonical weights and a random NCHW input batch."""

    spec: ResNetSpec
    weights: dict[str, np.ndarray]
    x: np.ndarray
    hw: int

    def model(self, framework: Framework, spec: ResNetSpec | None = None,
              weights: dict[str, np.ndarray] | None = None, dtype: Any = None) -> Any:
        """The anchor's network (or `spec`) with its weights (or `weights`) in `framework`, inference mode."""
        return framework.build(spec or self.spec, self.weights if weights is None else weights, dtype=dtype)

    def torch_model(self, spec: ResNetSpec | None = None, weights: dict[str, np.ndarray] | None = None,
                    dtype: Any = None) -> Any:
        return self.model(TorchFramework(), spec, weights, dtype)

    def keras_model(self, spec: ResNetSpec | None = None, weights: dict[str, np.ndarray] | None = None,
                    dtype: Any = None) -> Any:
        return self.model(KerasFramework(), spec, weights, dtype)

    def outputs(self, model: Any, x: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Per-layer outputs of a model of either framework, NCHW, keyed by canonical name."""
        return framework_of(model).layer_outputs(model, self.x if x is None else x)


def anchor(preset: ResNetSpec | str, hw: int, seed: int = 0, **overrides: Any) -> Anchor:
    """Random weights (`seed`) and a random batch (`seed + 1`) for a preset or spec with `overrides`."""
    spec = resolve_spec(preset, **overrides)
    x = np.random.default_rng(seed + 1).normal(size=(BATCH, spec.in_channels, hw, hw)).astype(np.float32)
    return Anchor(spec, random_weights(spec, seed), x, hw)


@dataclass(frozen=True)
class PortComparison:
    """A port compared with its source, layer by layer."""

    max_abs: float
    rel: float  # of the output scale
    scale: float
    bite: tuple[str, float] | None


def compare(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> PortComparison:
    """Final-output and first-divergence comparison of two per-layer output dicts."""
    last = next(reversed(reference))
    ref, out = reference[last], other[last]
    max_abs = float(np.abs(ref.astype(np.float64) - out).max()) if ref.shape == out.shape else float("inf")
    return PortComparison(max_abs, relative_difference(ref, out), float(np.abs(ref).max()),
                          first_divergence(reference, other, BITE))


def describe_port(label: str, c: PortComparison) -> str:
    """'label: max |diff| 3.1 = 0.52 of the output scale 6; first bites at conv1 (0.8)'."""
    if c.max_abs == float("inf"):
        text = f"{label}: output shapes differ"
    else:
        text = f"{label}: max |diff| {g(c.max_abs)} = {g(c.rel)} of the output scale {g(c.scale)}"
    if c.bite is None:
        return text + f"; no layer differs by more than {g(BITE)}"
    name, rel = c.bite
    where = "shape differs" if rel == float("inf") else f"{g(rel)} of its scale"
    return text + f"; first layer off: {name} ({where})"
