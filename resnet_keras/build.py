"""Build a Keras 3 ResNet from a spec (the PyTorch twin is resnet_torch/build.py)."""

from __future__ import annotations

import sys
from typing import Any

import keras

from resnet_keras.blocks import residual_block
from resnet_keras.layers import initial_draws, run
from shared_specs import ResNetSpec, make_plan, resolve_spec


@keras.saving.register_keras_serializable(package="resnet_keras")
class ResNet(keras.Model):
    """A functional Keras model laid out by `shared_specs.make_plan`, NHWC input of any size.

    Layer names are canonical names with dots as underscores (`layer1_0_conv1`).
    `get_config` is the spec, so `.keras` files rebuild the same network.
    """

    def __init__(self, spec: ResNetSpec, dtype: Any = None, initialize: bool = True, **kwargs: Any) -> None:
        plan = make_plan(spec)
        # torchvision's zero_init_residual: the BN closing each block starts at gamma = 0
        zero_gamma = (frozenset(b.last_bn.name for b in plan.blocks() if b.last_bn) if spec.zero_init_last_bn
                      else frozenset())
        # a mixed-precision policy ("mixed_bfloat16") takes its variables' dtype as input
        input_dtype = None if dtype is None else keras.dtype_policies.get(dtype).variable_dtype
        inputs = keras.Input(shape=(None, None, spec.in_channels), dtype=input_dtype, name="input")
        with initial_draws(initialize):  # Keras creates (and fills) each variable as its layer is called
            x = run(plan.stem, inputs, dtype)
            for block in plan.blocks():
                x = residual_block(x, block, dtype, zero_gamma)
            x = run(plan.post, x, dtype)
            x = run(plan.head, x, dtype)
        kwargs.setdefault("name", spec.name)
        # Keras maps the functional graph recursively, a few frames per layer:
        # cifar_resnet1202's ~3,600 layers exceed Python's default limit of 1,000.
        depth = 4 * sum(1 for _ in plan.ops()) + 1000
        if sys.getrecursionlimit() < depth:
            sys.setrecursionlimit(depth)
        super().__init__(inputs, x, **kwargs)
        self.spec = spec
        self._build_dtype = dtype

    def get_config(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict(), "dtype": self._build_dtype, "name": self.name}

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> ResNet:
        config = dict(config)
        return cls(ResNetSpec.from_dict(config.pop("spec")), **config)


def build(spec_or_name: ResNetSpec | str, *, dtype: Any = None, initialize: bool = True, **overrides: Any) -> ResNet:
    """A Keras ResNet from a spec or a preset name (`overrides` replace spec fields).

    `initialize=False` draws no random values (convs and classifier start at zero): for a
    model whose weights are imported next, where the draws (a third of a resnet50's
    build) would be overwritten.

    >>> model = build("resnet50", num_classes=10)
    """
    return ResNet(resolve_spec(spec_or_name, **overrides), dtype=dtype, initialize=initialize)
