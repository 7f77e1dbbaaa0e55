"""timm's ResNetV2 module names <-> canonical names: one table, read in both directions.

timm's `ResNet` (timm/models/resnet.py) already uses torchvision's names, so its state_dict
is canonical as it is. Its pre-activation `ResNetV2` (timm/models/resnetv2.py) names its
layers its own way; the spec's pre-activation layout holds the same layers (bnK before convK,
post_bn after the last stage, the deep stem at conv1.0/.1/.3/.4/.6), so renaming is all it
takes, plus one reshape: timm's classifier `head.fc` is a 1x1 Conv2d, (out, in, 1, 1), where
the canonical `fc` is a Linear, (out, in).

The shortcut conv's canonical index depends on the shortcut: `downsample.0` for a plain
projection (B), `downsample.1` after the avg-pool of timm's avg_down (D), as in timm's own
ResNet. A state_dict cannot show which (the pool holds no tensors): the caller says.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

from shared_specs.errors import SpecError

# (timm ResNetV2 module, canonical layer); {i} is timm's stage index from 0, {I} = i + 1 the
# canonical layer number, {j} the block index. Rows without tensors (pools, the BiT stem's
# ConstantPad2d) name the modules that make up the canonical op, for checking a model's modules.
V2_NAMES: tuple[tuple[str, str], ...] = (
    ("stem.conv", "conv1"),  # the 7x7 stem
    ("stem.conv1", "conv1.0"),  # the deep (or tiered) stem: conv, norm-act, conv, norm-act, conv
    ("stem.norm1", "conv1.1"),
    ("stem.conv2", "conv1.3"),
    ("stem.norm2", "conv1.4"),
    ("stem.conv3", "conv1.6"),
    ("stem.pad", "maxpool"),  # BiT's stem_type 'fixed': ConstantPad2d(1, 0) + MaxPool2d(3, 2), a zero-padded pool
    ("stem.pool", "maxpool"),
    ("stages.{i}.blocks.{j}.norm1", "layer{I}.{j}.bn1"),  # pre-activation: normK comes before convK
    ("stages.{i}.blocks.{j}.conv1", "layer{I}.{j}.conv1"),
    ("stages.{i}.blocks.{j}.norm2", "layer{I}.{j}.bn2"),
    ("stages.{i}.blocks.{j}.conv2", "layer{I}.{j}.conv2"),
    ("stages.{i}.blocks.{j}.norm3", "layer{I}.{j}.bn3"),
    ("stages.{i}.blocks.{j}.conv3", "layer{I}.{j}.conv3"),
    ("norm", "post_bn"),
    ("head.fc", "fc"),  # reshaped: (out, in, 1, 1) <-> (out, in)
)
SHORTCUT_NAMES: dict[str, tuple[tuple[str, str], ...]] = {
    "B": (("stages.{i}.blocks.{j}.downsample.conv", "layer{I}.{j}.downsample.0"),),
    "D": (("stages.{i}.blocks.{j}.downsample.pool", "layer{I}.{j}.downsample.0"),
          ("stages.{i}.blocks.{j}.downsample.conv", "layer{I}.{j}.downsample.1")),
}
_HEAD = ("head.fc.weight", "fc.weight")

A = TypeVar("A")  # an array: numpy's, or a torch tensor (meta ones included: only shapes are read then)


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile(re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{I\}", r"(?P<I>\d+)")
                      .replace(r"\{j\}", r"(?P<j>\d+)"))


def _rows(shortcut: str, reverse: bool) -> list[tuple[re.Pattern[str], str]]:
    if shortcut not in SHORTCUT_NAMES:
        raise SpecError(f"timm's ResNetV2 builds shortcuts {sorted(SHORTCUT_NAMES)}, not {shortcut!r}")
    rows = V2_NAMES + SHORTCUT_NAMES[shortcut]
    return [(_pattern(c if reverse else t), t if reverse else c) for t, c in rows]


def _rename(name: str, rows: list[tuple[re.Pattern[str], str]]) -> str | None:
    for pattern, target in rows:
        if m := pattern.fullmatch(name):
            found = m.groupdict()
            if "i" in found:
                return target.format(I=int(found["i"]) + 1, j=found["j"])
            if "I" in found:
                return target.format(i=int(found["I"]) - 1, j=found["j"])
            return target
    return None


def canonical_module(timm_name: str, shortcut: str) -> str | None:
    """The canonical layer a ResNetV2 module belongs to (`stages.1.blocks.0.norm1` ->
    `layer2.0.bn1`), or None for containers and modules outside the table."""
    return _rename(timm_name, _rows(shortcut, reverse=False))


def weights_from_timm_v2(state: Mapping[str, A], shortcut: str) -> dict[str, A]:
    """A ResNetV2 state_dict under canonical names, `head.fc` reshaped to a Linear's (out, in)."""
    rows = _rows(shortcut, reverse=False)
    out: dict[str, Any] = {}
    for name, value in state.items():
        layer, _, param = name.rpartition(".")
        canonical = _rename(layer, rows)
        if canonical is None or not param:
            raise SpecError(f"{name} is not a tensor of timm's ResNetV2 (stem.*, stages.I.blocks.J.*, norm.*, "
                            "head.fc.*)")
        if name == _HEAD[0]:
            if len(value.shape) != 4 or tuple(value.shape[2:]) != (1, 1):
                raise SpecError(f"head.fc.weight has shape {tuple(value.shape)}: timm's ResNetV2 classifier is a 1x1 "
                                "conv, (classes, features, 1, 1)")
            value = value.reshape(tuple(value.shape[:2]))
        out[f"{canonical}.{param}"] = value
    return out


def weights_to_timm_v2(weights: Mapping[str, A], shortcut: str) -> dict[str, A]:
    """Canonical weights of a pre-activation spec under ResNetV2's names (the inverse)."""
    rows = _rows(shortcut, reverse=True)
    out: dict[str, Any] = {}
    for name, value in weights.items():
        layer, _, param = name.rpartition(".")
        timm_name = _rename(layer, rows)
        if timm_name is None:
            raise SpecError(f"{name} has no place in timm's ResNetV2 (see shared_specs.timm_names.V2_NAMES)")
        if name == _HEAD[1]:
            value = value.reshape((*value.shape, 1, 1))
        out[f"{timm_name}.{param}"] = value
    return out


def is_timm_v2_state(names: Mapping[str, Any]) -> bool:
    """Whether a state_dict is named as timm's ResNetV2 names it (`stem.*`, `stages.*`)."""
    return any(n.startswith(("stem.", "stages.")) for n in names)


def v2_shortcut_convention(names: Mapping[str, Any]) -> str:
    """The shortcut a bare ResNetV2 state_dict is read with: timm's deep-stem ResNetV2s are its
    avg_down ("D") models (resnetv2_*d, *t, *_gn, *_evos, *_frn), the 7x7 ones its plain and
    BiT ("B") models. A hint overrides it."""
    return "D" if "stem.conv1.weight" in names else "B"
