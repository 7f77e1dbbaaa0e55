"""Keras 3 builder and canonical weight I/O for resnet-rosetta specs (never imports torch).

Works on the TensorFlow, JAX and torch Keras backends; the backend is fixed per
process by KERAS_BACKEND, as Keras itself requires.
"""

from resnet_keras.build import ResNet, build
from resnet_keras.ecosystem import from_keras_applications, to_keras_applications
from resnet_keras.keras_hub import from_keras_hub, to_keras_hub
from resnet_keras.onnx import export_onnx
from resnet_keras.reading import from_model
from resnet_keras.weights import export_weights, import_weights, load_model, load_weights, save_weights

__all__ = [
    "ResNet",
    "build",
    "export_onnx",
    "export_weights",
    "from_keras_applications",
    "from_keras_hub",
    "from_model",
    "import_weights",
    "load_model",
    "load_weights",
    "save_weights",
    "to_keras_applications",
    "to_keras_hub",
]
