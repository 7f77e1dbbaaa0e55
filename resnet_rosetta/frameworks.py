"""The one place a process that holds both frameworks imports them.

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
from collections.abc import Iterator
from types import ModuleType


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
