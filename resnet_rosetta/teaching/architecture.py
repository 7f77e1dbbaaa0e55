"""What a ResNet computes, read from the model itself and compared with a spec.

The reading is shared with the porter (resnet_torch.from_module, resnet_keras.from_model):
a model of either framework becomes shared_specs.graph's normalised ops, through
resnet_torch.reading (torch.fx) or resnet_keras.reading (the Keras layer graph), and a
spec's plan the same way (`from_plan`). This module gives the seed checker that reading
under one roof: read a model of either framework, cut it into stem, blocks and head
(`segment`), and compare two architectures segment by segment (`compare`).
"""

from __future__ import annotations

from typing import Any

from resnet_rosetta.frameworks import import_frameworks
from shared_specs.graph import (  # noqa: F401  (the checker's vocabulary, re-exported)
    WEIGHTED,
    Arch,
    BlockArch,
    Finding,
    Node,
    compare,
    conv_padding,
    describe_sequences,
    fold_padding,
    from_plan,
    match_layers,
    segment,
)


def from_torch(model: Any) -> list[Node]:
    """The normalised graph of a PyTorch module, traced with torch.fx; nodes are named by module path."""
    import_frameworks()
    from resnet_torch.reading import read_graph

    return read_graph(model)


def from_keras(model: Any) -> list[Node]:
    """The normalised graph of a Keras functional or Sequential model; nodes are named by layer name."""
    import_frameworks()
    from resnet_keras.reading import read_graph

    return read_graph(model)
