"""The residual block as a PyTorch module (the Keras twin is resnet_keras/blocks.py)."""

from __future__ import annotations

import torch
from torch import nn

from resnet_torch.layers import install, run
from shared_specs.plan import Block


class ResidualBlock(nn.Module):
    """out = post(main(pre(x)) + shortcut(pre(x) if the plan says so, else x)).

    Submodules carry the canonical names relative to the block (`conv1`, `bn1`,
    `downsample.0`), so a torchvision BasicBlock/Bottleneck's state_dict loads as is.
    """

    def __init__(self, block: Block) -> None:
        super().__init__()
        prefix = block.name + "."
        self.pre_names = install(self, block.pre, prefix)
        self.main_names = install(self, block.main, prefix)
        self.shortcut_names = install(self, block.shortcut, prefix)
        self.post_names = install(self, block.post, prefix)
        self.shortcut_reads_pre = block.shortcut_reads_pre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = run(self, self.pre_names, x)
        out = run(self, self.main_names, pre)
        shortcut = run(self, self.shortcut_names, pre if self.shortcut_reads_pre else x)
        out += shortcut  # in place, as torchvision's: `out` is the branch's own new tensor
        return run(self, self.post_names, out)
