"""The packages' import boundaries, proven in fresh processes with the other frameworks blocked."""

import subprocess
import sys
import textwrap

import pytest

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    ALLOWED = {allowed}
    BLOCKED = {blocked}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            top = name.split(".")[0]
            if top in BLOCKED or (ALLOWED and top not in ALLOWED and top not in sys.stdlib_module_names):
                raise ImportError(f"blocked by test: {{name}}")
            return None

    sys.meta_path.insert(0, Block())
    """
)


def run_blocked(code: str, *, allowed=(), blocked=(), env_backend=None) -> subprocess.CompletedProcess:
    script = BLOCKER.format(allowed=set(allowed), blocked=set(blocked)) + textwrap.dedent(code)
    env = None
    if env_backend:
        import os

        env = {**os.environ, "KERAS_BACKEND": env_backend}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)


def test_shared_specs_needs_only_numpy_and_the_standard_library():
    result = run_blocked(
        """
        import shared_specs as S
        spec = S.get_spec("resnet50")
        assert S.count_params(spec).trainable == 25_557_032
        frameworks = ("torch", "keras", "tensorflow", "jax")
        print(len(S.list_presets()), sorted(m for m in sys.modules if m.split(".")[0] in frameworks))
        """,
        allowed={"shared_specs", "numpy", "_distutils_hack"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split(" ", 1)[1].strip() == "[]"


def test_resnet_torch_works_without_keras_tensorflow_or_jax():
    result = run_blocked(
        """
        import resnet_torch, torch
        model = resnet_torch.build("resnet18").eval()
        print(model(torch.zeros(1, 3, 32, 32)).shape)
        """,
        blocked={"keras", "tensorflow", "jax", "jaxlib", "resnet_keras", "resnet_rosetta"},
    )
    assert result.returncode == 0, result.stderr
    assert "torch.Size([1, 1000])" in result.stdout


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_resnet_keras_works_without_torch(backend):
    result = run_blocked(
        """
        import numpy as np, resnet_keras
        model = resnet_keras.build("resnet18")
        print(tuple(model(np.zeros((1, 32, 32, 3), "float32")).shape))
        """,
        blocked={"torch", "torchvision", "resnet_torch", "resnet_rosetta"},
        env_backend=backend,
    )
    assert result.returncode == 0, result.stderr
    assert "(1, 1000)" in result.stdout


def test_one_process_with_both_frameworks_survives_torch_optimizers():
    """Trap 21: TensorFlow loaded before triton segfaults the first torch optimizer.
    import_frameworks() orders the imports so that the same steps run cleanly."""
    code = """
        from resnet_rosetta.frameworks import import_frameworks
        torch, keras = import_frameworks("tensorflow")
        import tensorflow
        opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
        print("survived", keras.backend.backend())
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.strip() == "survived tensorflow"
