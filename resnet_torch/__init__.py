"""PyTorch builder and canonical weight I/O for resnet-rosetta specs (never imports Keras)."""

from resnet_torch.build import ResNet, build
from resnet_torch.ecosystem import from_torchvision, to_torchvision
from resnet_torch.onnx import export_onnx
from resnet_torch.reading import from_module
from resnet_torch.timm_port import from_timm, timm_spec, to_timm
from resnet_torch.transformers import from_transformers, to_transformers
from resnet_torch.weights import export_weights, import_weights, load_model, load_weights, save_weights

__all__ = [
    "ResNet",
    "build",
    "export_onnx",
    "export_weights",
    "from_module",
    "from_timm",
    "from_torchvision",
    "from_transformers",
    "import_weights",
    "load_model",
    "load_weights",
    "save_weights",
    "timm_spec",
    "to_timm",
    "to_torchvision",
    "to_transformers",
]
