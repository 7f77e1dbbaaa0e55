"""Build a PyTorch ResNet from a spec (the Keras twin is resnet_keras/build.py)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from resnet_torch.blocks import ResidualBlock
from resnet_torch.layers import install, run
from shared_specs import ResNetSpec, make_plan, resolve_spec
from shared_specs.plan import Plan


class ResNet(nn.Module):
    """A ResNet laid out by `shared_specs.make_plan`; `state_dict()` keys are canonical names.

    Stem layers sit directly on the model (`conv1`, `bn1`), stages are nn.Sequential
    `layer1` ... of ResidualBlocks, then `post_bn` (pre-activation nets) and the head
    (`avgpool`, `fc`): for torchvision presets, the same tree as torchvision's ResNet.
    """

    def __init__(self, spec: ResNetSpec, initialize: bool = True) -> None:
        super().__init__()
        self.spec = spec
        plan = make_plan(spec)
        self.stem_names = install(self, plan.stem)
        for stage in plan.stages:
            self.add_module(stage.name, nn.Sequential(*(ResidualBlock(b) for b in stage.blocks)))
        self.stage_names = tuple(stage.name for stage in plan.stages)
        self.post_names = install(self, plan.post)
        self.head_names = install(self, plan.head)
        if initialize:
            self._init_weights(plan)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = run(self, self.stem_names, x)
        x = run(self, self.stage_names, x)
        x = run(self, self.post_names, x)
        return run(self, self.head_names, x)

    def _init_weights(self, plan: Plan) -> None:
        # torchvision's scheme, mirrored by resnet_keras: He-normal (fan_out) convs,
        # BN at identity, zero conv biases; Linear keeps PyTorch's default U(+-1/sqrt(fan_in)).
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if self.spec.zero_init_last_bn:  # Goyal et al. 2017: each block starts as the identity
            for block in plan.blocks():
                nn.init.zeros_(self.get_submodule(block.last_bn.name).weight)  # type: ignore[union-attr]


def build(spec_or_name: ResNetSpec | str, *, dtype: torch.dtype | None = None, initialize: bool = True,
          **overrides: Any) -> ResNet:
    """A PyTorch ResNet from a spec or a preset name (`overrides` replace spec fields).

    `initialize=False` skips torchvision's initialisation (the modules keep their
    constructors' values): for a model whose weights are imported next.

    >>> model = build("resnet50", num_classes=10)
    """
    model = ResNet(resolve_spec(spec_or_name, **overrides), initialize)
    return model.to(dtype) if dtype is not None else model
