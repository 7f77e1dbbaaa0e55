"""The package's public API: what README and docs import from `resnet_rosetta` and the
three libraries beside it stays importable, and `import resnet_rosetta` loads no framework."""

from __future__ import annotations

import subprocess
import sys

import resnet_rosetta


def test_every_public_name_resolves() -> None:
    for name in resnet_rosetta.__all__:
        assert callable(getattr(resnet_rosetta, name)), name


def test_importing_the_package_loads_no_framework() -> None:
    code = ("import sys, resnet_rosetta; "
            "print(sorted(m for m in ('torch', 'keras', 'tensorflow', 'jax') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"
