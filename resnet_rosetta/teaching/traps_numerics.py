"""Measurements of the numeric and process traps (15-18, 21, 22): float32 accuracy, float64,
shared memory, TF32 (not measurable without a GPU), the import-order segfault and the
float32 batch variance.

15-17 and 22 depend on the Keras backend; run them once per backend (KERAS_BACKEND).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from resnet_rosetta.frameworks import import_frameworks
from resnet_rosetta.interop.layer_outputs import first_divergence, relative_difference
from resnet_rosetta.teaching.measured import Measured, anchor, backend, g, setting
from shared_specs import ResNetSpec


def float32_accuracy(preset: ResNetSpec | str = "resnet50", hw: int = 64) -> Measured:
    """Trap 15: each framework's float32 output against a float64 PyTorch reference."""
    torch, _ = import_frameworks()
    a = anchor(preset, hw)
    exact = a.outputs(a.torch_model(dtype=torch.float64), a.x.astype(np.float64))
    last = next(reversed(exact))
    t32 = a.outputs(a.torch_model())[last]
    k32 = a.outputs(a.keras_model())[last]
    rel = {"torch": relative_difference(exact[last], t32), "keras": relative_difference(exact[last], k32),
           "between": relative_difference(t32, k32)}
    return Measured(
        setting(a.spec, hw, ", float32 against a float64 PyTorch reference"),
        (f"PyTorch float32: {g(rel['torch'])} of the output scale from float64",
         f"Keras float32: {g(rel['keras'])}",
         f"PyTorch vs Keras, both float32: {g(rel['between'])}; a float32 parity bound must be relative to the "
         "output scale and above this (shared_specs.tolerances.F32_PARITY: 1e-4 of the output scale)"),
        {f"{k}_rel": v for k, v in rel.items()},
    )


def float64(preset: ResNetSpec | str = "cifar_resnet20", hw: int = 32) -> Measured:
    """Trap 16: float64 in both frameworks, layer by layer, on the current Keras backend."""
    torch, _ = import_frameworks()
    a = anchor(preset, hw)
    x = a.x.astype(np.float64)
    exact = a.outputs(a.torch_model(dtype=torch.float64), x)
    ported = a.outputs(a.keras_model(dtype="float64"), x)
    last = next(reversed(exact))
    rel = relative_difference(exact[last], ported[last])
    bite = first_divergence(exact, ported, 1e-10)
    dtype = ported[last].dtype
    return Measured(
        setting(a.spec, hw, ", both frameworks asked for float64"),
        (f"Keras model built with dtype='float64' returns {dtype}; vs PyTorch float64: {g(rel)} of the output scale",
         ("no layer differs by more than 1e-10" if bite is None else
          f"first layer off by more than 1e-10: {bite[0]} ({g(bite[1])})"),
         "exact (1e-10) parity holds only where every layer really computes in float64"),
        {"rel": rel, "dtype": str(dtype), "bite": bite[0] if bite else None},
        bite[0] if bite else None,
    )


def shared_memory(preset: ResNetSpec | str = "cifar_resnet20", hw: int = 32) -> Measured:
    """Trap 17: in-place edits of exported and imported arrays."""
    torch, keras = import_frameworks()
    import resnet_keras as rk
    import resnet_torch as rt

    a = anchor(preset, hw)

    def run_torch(model: object) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(a.x)).numpy()  # type: ignore[operator]

    model = a.torch_model()
    before = run_torch(model)
    rt.export_weights(model)["conv1.weight"][...] = 0  # our export copies
    copied = float(np.abs(run_torch(model) - before).max())
    model.state_dict()["conv1.weight"].numpy()[...] = 0  # .numpy() shares the tensor's memory
    aliased = float(np.abs(run_torch(model) - before).max())

    source = {k: v.copy() for k, v in a.weights.items()}
    kmodel = a.keras_model(weights=source)
    x = np.ascontiguousarray(a.x.transpose(0, 2, 3, 1))
    kbefore = keras.ops.convert_to_numpy(kmodel(x, training=False))
    for value in source.values():
        value[...] = 0  # the arrays just imported
    exported = rk.export_weights(kmodel)
    exported["conv1.weight"][...] = 0
    keras.ops.convert_to_numpy(kmodel.get_layer("conv1").kernel)[...] = 0
    kchange = float(np.abs(keras.ops.convert_to_numpy(kmodel(x, training=False)) - kbefore).max())
    return Measured(
        setting(a.spec, hw),
        (f"PyTorch: zeroing the array from state_dict()['conv1.weight'].numpy() changes the model's output by "
         f"{g(aliased)} (shared memory)",
         f"zeroing the array from resnet_torch.export_weights changes it by {g(copied)} (a copy)",
         f"Keras on {keras.backend.backend()}: zeroing the imported arrays, the exported arrays and "
         f"convert_to_numpy(kernel) changes the output by {g(kchange)} "
         "(Keras 3.15 copies here; resnet_keras copies anyway, since backends have aliased before)"),
        {"torch_aliased": aliased, "torch_export": copied, "keras": kchange},
    )


def batch_variance(channels: int = 64, hw: int = 8, offsets: tuple[float, ...] = (0.0, 10.0, 100.0)) -> Measured:
    """Trap 22: one training-mode BatchNorm at batch 2 on channels whose mean dwarfs their
    spread, against float64: torch, Keras's own BatchNormalization (the current backend's
    ops.moments) and ours (UnbiasedBatchNormalization: two passes on every backend)."""
    torch, keras = import_frameworks()
    from resnet_keras.layers import UnbiasedBatchNormalization

    rng = np.random.default_rng(22)
    errors: dict[str, list[float]] = {"torch": [], "keras": [], "ours": []}
    for offset in offsets:
        x = (offset + rng.normal(size=(2, channels, hw, hw))).astype(np.float32)
        exact = torch.nn.functional.batch_norm(torch.from_numpy(x).double(), None, None, training=True).numpy()
        errors["torch"].append(relative_difference(
            exact, torch.nn.functional.batch_norm(torch.from_numpy(x), None, None, training=True).numpy()))
        for key, cls in (("keras", keras.layers.BatchNormalization), ("ours", UnbiasedBatchNormalization)):
            y = keras.ops.convert_to_numpy(cls(epsilon=1e-5)(x.transpose(0, 2, 3, 1), training=True))
            errors[key].append(relative_difference(exact, y.transpose(0, 3, 1, 2)))
    means = ", ".join(f"{o:g}" for o in offsets)
    return Measured(
        f"one BatchNorm2d in training mode, {channels} channels of 2x{hw}x{hw} values with mean {means} and "
        f"spread 1, against float64; Keras on {backend()}",
        (f"PyTorch float32: {', '.join(g(v) for v in errors['torch'])} of the output scale",
         f"keras.layers.BatchNormalization: {', '.join(g(v) for v in errors['keras'])} (its ops.moments; on the "
         "torch backend E[x^2] - E[x]^2)",
         f"our UnbiasedBatchNormalization: {', '.join(g(v) for v in errors['ours'])} (two passes: mean, then the "
         "mean of squared deviations)"),
        {"offsets": offsets, **{f"{k}_rel": v for k, v in errors.items()}},
    )


def tf32() -> Measured:
    """Trap 18: TF32 needs an NVIDIA Ampere+ GPU; reports the settings and why nothing is measured."""
    torch, _ = import_frameworks()
    cuda = torch.cuda.is_available()
    return Measured(
        f"this process: torch.cuda.is_available() = {cuda}",
        (("not measurable here: no CUDA device, and TF32 exists only on NVIDIA Ampere and newer GPUs"
          if not cuda else "a CUDA device is present, but resnet-rosetta has no GPU measurement yet"),
         f"settings a GPU run would use: torch.backends.cuda.matmul.allow_tf32="
         f"{torch.backends.cuda.matmul.allow_tf32}, torch.backends.cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
         f"torch.get_float32_matmul_precision()={torch.get_float32_matmul_precision()!r}",
         "cuDNN convolutions default to TF32 (10-bit mantissa, ~1e-3 relative) on such GPUs; XLA (JAX, TF) "
         "lowers float32 matmuls and convs to reduced precision by default too: pin full precision or widen "
         "the bound explicitly"),
        {"cuda": cuda},
    )


_CRASH = ("import tensorflow, torch; "
          "torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1); print('survived')")
_SAFE = ("from resnet_rosetta.frameworks import import_frameworks; torch, _ = import_frameworks('tensorflow'); "
         "torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1); print('survived')")


def import_order(timeout: float = 300.0) -> Measured:
    """Two fresh interpreters: TensorFlow first, then through `import_frameworks`."""
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}

    def code(source: str) -> int:
        done = subprocess.run([sys.executable, "-c", source], env=env, capture_output=True, timeout=timeout)
        return done.returncode

    crash, safe = code(_CRASH), code(_SAFE)
    shell = lambda rc: 128 - rc if rc < 0 else rc  # noqa: E731  (a signal N shows in a shell as 128 + N)
    return Measured(
        "two fresh Python processes, each building one torch.optim.SGD",
        (f"`import tensorflow, torch` then torch.optim.SGD(...): exit status {shell(crash)}"
         + (" (segmentation fault)" if crash == -11 else ""),
         f"resnet_rosetta.frameworks.import_frameworks() first (imports triton before TensorFlow), then the same "
         f"optimizer: exit status {shell(safe)}"),
        {"tensorflow_first": shell(crash), "import_frameworks": shell(safe)},
    )
