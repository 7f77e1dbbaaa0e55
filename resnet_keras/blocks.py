"""The residual block as Keras functional layers (the PyTorch twin is resnet_torch/blocks.py)."""

from __future__ import annotations

from typing import Any

from keras import layers

from resnet_keras.layers import keras_name, run
from shared_specs.plan import Block


def residual_block(x: Any, block: Block, dtype: Any = None, zero_gamma: frozenset[str] = frozenset()) -> Any:
    """out = post(main(pre(x)) + shortcut(pre(x) if the plan says so, else x))."""
    pre = run(block.pre, x, dtype, zero_gamma)
    out = run(block.main, pre, dtype, zero_gamma)
    shortcut = run(block.shortcut, pre if block.shortcut_reads_pre else x, dtype, zero_gamma)
    summed = layers.Add(name=keras_name(block.name) + "_add", dtype=dtype)([out, shortcut])
    return run(block.post, summed, dtype, zero_gamma)
