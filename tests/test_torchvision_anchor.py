"""Our PyTorch build of each torchvision preset is torchvision's network: same state_dict keys and
shapes, strict loading, identical outputs."""

import numpy as np
import pytest
import torch
import torchvision

import resnet_torch as rt

TORCHVISION_PRESETS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
                       "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"]


def randomized_torchvision(name: str, seed: int) -> torch.nn.Module:
    """torchvision's model with random weights AND non-trivial BN running statistics."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.3)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("name", TORCHVISION_PRESETS)
def test_torchvision_state_dict_loads_strictly_and_outputs_are_identical(name):
    reference = randomized_torchvision(name, seed=len(name))
    model = rt.build(name).eval()
    reference_state = reference.state_dict()
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in reference_state.items()}
    model.load_state_dict(reference_state, strict=True)
    x = torch.randn(2, 3, 45, 39, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # Same ATen kernels on the same tensors in the same order: bit-identical, not merely close.
        assert torch.equal(model(x), reference(x))
    exported = rt.export_weights(model)
    assert exported.keys() == {k for k in reference_state if not k.endswith("num_batches_tracked")}
    assert all(np.array_equal(v, reference_state[k].numpy()) for k, v in exported.items())
