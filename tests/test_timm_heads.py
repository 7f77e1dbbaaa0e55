"""timm's heads both ways: drop_rate, a max/avgmax/catavgmax global pool, an nn.Sequential in
fc's place (resnet_torch.timm_port, read through from_module; built with timm's own arguments)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

import resnet_torch as rt
from shared_specs.synthetic import random_weights
from support import random_input, torch_forward


@pytest.mark.parametrize("pool", ["max", "avgmax", "catavgmax"])
def test_timm_heads_both_ways(pool: str) -> None:
    model = ResNet(BasicBlock, [1, 1, 1, 1], channels=(8, 16, 16, 32), drop_rate=0.25, global_pool=pool,
                   num_classes=4)
    if pool == "avgmax":
        model.fc = nn.Sequential(nn.Linear(32, 12), nn.ReLU(), nn.Dropout(0.1), nn.Linear(12, 4))
    spec, weights = rt.from_timm(model.eval())
    assert (spec.head.pool, spec.head.dropout, spec.zero_init_last_bn) == (pool, 0.25, True)
    weights = random_weights(spec, seed=1)
    back = rt.to_timm(spec, weights)
    assert (back.drop_rate, back.global_pool.pool_type, type(back.fc)) == (0.25, pool, type(model.fc))
    ours = rt.build(spec)
    rt.import_weights(ours, weights)
    x = random_input(spec, (37, 41))
    assert np.array_equal(torch_forward(back, x), torch_forward(ours, x))  # the same modules, the same kernels
    assert torch.is_tensor(back.fc.weight if pool != "avgmax" else back.fc[3].weight)
