"""What needs both frameworks: the CLI, conversions between model files, parity and the
per-layer diff, training runs, and the teaching tools (docs/design.md shows the rooms).

The names below are the package's public API; each is imported on first use, so
`import resnet_rosetta` loads neither framework.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "import_frameworks": "resnet_rosetta.frameworks",
    "get_framework": "resnet_rosetta.frameworks",
    "framework_of": "resnet_rosetta.frameworks",
    "detect_format": "resnet_rosetta.interop.files",
    "read_model": "resnet_rosetta.interop.files",
    "read_model_file": "resnet_rosetta.interop.files",
    "write_model_file": "resnet_rosetta.interop.files",
    "from_onnx": "resnet_rosetta.interop.onnx_import",
    "measure_parity": "resnet_rosetta.interop.parity",
    "diff": "resnet_rosetta.interop.diff",
    "naive_port": "resnet_rosetta.teaching.naive",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'resnet_rosetta' has no attribute {name!r}")
