"""The one place a process that holds both frameworks imports them, and the adapter
(`Framework`) through which the rest of resnet_rosetta uses either one.

TensorFlow >= 2.20 loads its LLVM with RTLD_GLOBAL; if it is loaded before triton,
torch's first optimizer, torch.compile or dynamo ONNX export segfaults (trap 21 in
docs/differences.md). Importing triton first avoids it. Every module of
resnet_rosetta that needs both frameworks calls `import_frameworks()` before
touching Keras.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any

import numpy as np

from shared_specs import SpecError, layout


def import_frameworks(backend: str | None = None) -> tuple[ModuleType, ModuleType]:
    """Import torch and keras in a safe order and return them.

    `backend` sets KERAS_BACKEND when Keras is not imported yet (default:
    the environment's choice, else tensorflow). Raises RuntimeError if Keras
    was already imported with another backend, since it is fixed per process.
    """
    if "keras" not in sys.modules:
        if backend:
            os.environ["KERAS_BACKEND"] = backend
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if "tensorflow" in sys.modules and "triton" not in sys.modules:
            raise RuntimeError("tensorflow was imported before triton: import resnet_rosetta first (trap 21)")
        try:  # triton ships with CUDA builds of torch; CPU-only builds have none and need no guard
            importlib.import_module("triton")
        except ImportError:
            pass
    torch = importlib.import_module("torch")
    with _native_stderr_held_back():
        keras = importlib.import_module("keras")
        if keras.backend.backend() == "tensorflow":  # its devices initialise (and complain) lazily
            importlib.import_module("tensorflow").config.list_physical_devices()
    if backend and keras.backend.backend() != backend:
        raise RuntimeError(f"Keras already runs on {keras.backend.backend()!r}; start a new process for {backend!r}")
    return torch, keras


@contextlib.contextmanager
def _native_stderr_held_back() -> Iterator[None]:
    """Hold back what C++ libraries write to fd 2 while importing TensorFlow (absl's
    pre-init banner and oneDNN/CUDA notices, which no environment variable silences);
    replay it if the import fails, so no diagnostic is lost."""
    if "keras" in sys.modules:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            os.write(2, held.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


FRAMEWORK_NAMES = ("torch", "keras")


class Framework:
    """One framework as the rest of resnet_rosetta sees it: its mirrored packages
    (resnet_torch or resnet_keras, and their training / distributed modules) and the few
    operations whose code differs between the two (forward passes, per-layer outputs,
    tensor layouts, the idioms a naive porter brings along). Everything that works on
    "either framework" takes one of these instead of comparing names.
    """

    name: str
    label: str
    # What a porter who knows only this framework types by habit (teaching.naive):
    padding_idiom: str  # a "same-size" conv: the spec's `padding`
    pool_pad_idiom: str  # what the max-pool pads with: the spec's `stem.pool_pad_value`
    default_bn_epsilon: float  # the BatchNorm layer's default epsilon
    default_gn_epsilon: float  # the GroupNorm layer's default epsilon
    default_frn_epsilon: float  # the ecosystem's FRN layer's default (timm; TF Addons for Keras)

    def __init__(self, device: str | None = None) -> None:
        self.device = device  # torch only: where `build` puts the model
        self.distributed: ModuleType | None = None  # set for data-parallel runs (training.runs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.device!r})"

    @property
    def package(self) -> ModuleType:
        self._import()
        return importlib.import_module(f"resnet_{self.name}")

    @property
    def training(self) -> ModuleType:
        self._import()
        return importlib.import_module(f"resnet_{self.name}.training")

    @property
    def other(self) -> Framework:
        return KerasFramework() if self.name == "torch" else TorchFramework()

    def owns(self, model: Any) -> bool:
        """Whether `model` is this framework's ResNet."""
        return isinstance(model, self.package.ResNet)

    def build(self, spec: Any, weights: Mapping[str, np.ndarray] | None = None, *, dtype: Any = None,
              source: str = "weights") -> Any:
        """Our ResNet of `spec` in inference mode, `weights` (canonical) loaded if given
        (then nothing random is drawn first: it would be overwritten)."""
        model = self.package.build(spec, dtype=dtype, initialize=weights is None)
        if weights is not None:
            self.package.import_weights(model, weights, source=source)
        return self._placed(model)

    def export_weights(self, model: Any) -> dict[str, np.ndarray]:
        return self.package.export_weights(model)

    def forward(self, model: Any, x: np.ndarray, *, training: bool = False) -> np.ndarray:
        """Output of `model` on the NCHW batch `x`, as numpy: NCHW feature maps or (N, classes)."""
        raise NotImplementedError

    def layer_outputs(self, model: Any, x: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """Inference outputs of canonical layers `names` (default: every probe name), NCHW."""
        raise NotImplementedError

    def native(self, kind: str, w: np.ndarray) -> np.ndarray:
        """A canonical "conv" or "dense" weight in this framework's own layout."""
        raise NotImplementedError

    def canonical(self, kind: str, w: np.ndarray) -> np.ndarray:
        """The inverse of `native`."""
        raise NotImplementedError

    def _placed(self, model: Any) -> Any:
        return model

    def _import(self) -> None:
        """Import what the framework's packages need first (torch alone needs nothing)."""


class TorchFramework(Framework):
    name, label = "torch", "PyTorch"
    padding_idiom, pool_pad_idiom, default_bn_epsilon = "symmetric", "-inf", 1e-5
    default_gn_epsilon, default_frn_epsilon = 1e-5, 1e-5  # nn.GroupNorm; timm's FilterResponseNormTlu2d

    def _placed(self, model: Any) -> Any:
        model.eval()
        return model if self.device is None else model.to(self.device)

    def forward(self, model: Any, x: np.ndarray, *, training: bool = False) -> np.ndarray:
        import torch

        model.train(training)
        with torch.no_grad():
            out = model(torch.from_numpy(x).to(next(model.parameters()).dtype)).cpu().numpy()
        model.eval()
        return out

    def layer_outputs(self, model: Any, x: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
        from resnet_rosetta.interop.layer_outputs import torch_outputs

        return torch_outputs(model, x, names)

    def native(self, kind: str, w: np.ndarray) -> np.ndarray:
        return w  # canonical names and layouts are PyTorch's

    def canonical(self, kind: str, w: np.ndarray) -> np.ndarray:
        return w


class KerasFramework(Framework):
    name, label = "keras", "Keras"
    padding_idiom, pool_pad_idiom, default_bn_epsilon = "same", "zero", 1e-3
    default_gn_epsilon, default_frn_epsilon = 1e-3, 1e-6  # GroupNormalization; tfa FilterResponseNormalization

    def _import(self) -> None:
        import_frameworks()  # torch, and triton, before TensorFlow (trap 21)

    def forward(self, model: Any, x: np.ndarray, *, training: bool = False) -> np.ndarray:
        _, keras = import_frameworks()
        y = keras.ops.convert_to_numpy(model(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), training=training))
        return np.ascontiguousarray(y.transpose(0, 3, 1, 2)) if y.ndim == 4 else y

    def layer_outputs(self, model: Any, x: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
        from resnet_rosetta.interop.layer_outputs import keras_outputs

        return keras_outputs(model, x, names)

    def native(self, kind: str, w: np.ndarray) -> np.ndarray:
        return {"conv": layout.conv_to_keras, "dense": layout.dense_to_keras}[kind](w)

    def canonical(self, kind: str, w: np.ndarray) -> np.ndarray:
        return {"conv": layout.conv_from_keras, "dense": layout.dense_from_keras}[kind](w)

    @property
    def backend(self) -> str:
        """The Keras backend of this process."""
        _, keras = import_frameworks()
        return keras.backend.backend()

    @property
    def backend_label(self) -> str:
        """'Keras (jax)': the label with the backend this process runs."""
        return f"Keras ({self.backend})"


def get_framework(name: str, *, backend: str | None = None, device: str | None = None) -> Framework:
    """The adapter for "torch" or "keras". `backend` (Keras only) is set before Keras is
    imported; `device` (torch only) is where built models go (default: CUDA if present)."""
    if name not in FRAMEWORK_NAMES:
        raise SpecError(f"framework must be one of {list(FRAMEWORK_NAMES)}, got {name!r}")
    if name == "keras":
        if device is not None:
            raise SpecError("--device applies to --framework torch (Keras places work by its backend)")
        if backend is not None:  # fixed at Keras's import; otherwise Keras is imported on first use
            import_frameworks(backend)
        return KerasFramework()
    if backend is not None:
        raise SpecError("--backend applies to --framework keras")
    return TorchFramework(device)


def framework_of(model: Any) -> Framework:
    """The adapter of one of our models (a Keras model on the torch backend is an
    nn.Module too, so Keras is asked first)."""
    for framework in (KerasFramework(), TorchFramework()):
        if framework.owns(model):
            return framework
    raise TypeError(f"a {type(model).__name__} is neither a resnet_torch nor a resnet_keras ResNet")
