"""Subprocess half of tests/test_distributed.py: data-parallel training, whose results
the test compares with single-process training.

    torchrun --nproc_per_node 2 tests/data_parallel_worker.py torch OUT_DIR
    JAX_ENABLE_X64=1 XLA_FLAGS=--xla_force_host_platform_device_count=2 KERAS_BACKEND=jax \\
        python tests/data_parallel_worker.py keras OUT_DIR

Each writes, in OUT_DIR, a small network trained through the library (weights +
momentum buffers) in float64, where data parallelism must equal one process up to
the order of sums, and in float32, where the test bounds the difference by float32
rounding; and OUT_DIR/cli/, a `train --distributed` run.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared_specs import ResNetSpec, StageSpec, StemSpec, write_checkpoint  # noqa: E402
from shared_specs.training import SGDConfig, epoch_batches, initial_weights  # noqa: E402

SPEC = ResNetSpec(name="tiny", block="basic", stages=(StageSpec(1, 4, 1), StageSpec(1, 8, 2)),
                  stem=StemSpec(widths=(4,), kernel_size=3, stride=1, pool="none"), num_classes=5)
SGD = SGDConfig(lr=0.1, momentum=0.9, weight_decay=1e-3)
GLOBAL_BATCH, STEPS_PER_EPOCH, EPOCHS = 8, 4, 2
CLI_ARGS = ["train", "--preset", "cifar_resnet20", "--data", "digits", "--subset", "16", "--batch-size", "8",
            "--epochs", "1", "--quiet", "--distributed"]
DTYPES = {"float64": np.float64, "float32": np.float32}


def data(dtype: type) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    n = GLOBAL_BATCH * STEPS_PER_EPOCH
    return rng.normal(size=(n, 3, 16, 16)).astype(dtype), rng.integers(0, SPEC.num_classes, n)


def start_weights(dtype: type) -> dict[str, np.ndarray]:
    """The same float32-representable start for every run (a float64 copy for float64 runs)."""
    return {k: v.astype(dtype) for k, v in initial_weights(SPEC, 0).items()}


def train_library(package, training, model, trained, local_batch, dtype: type) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """EPOCHS epochs of the shared batch order; `trained` is the model as data parallelism wraps it."""
    optimizer = training.make_optimizer(model, SGD)
    images, labels = data(dtype)
    for epoch in range(EPOCHS):
        for x, y in epoch_batches(images, labels, GLOBAL_BATCH, seed=0, epoch=epoch):
            training.train_step(trained, optimizer, *local_batch(x, y))
    return {**package.export_weights(model), **training.optimizer_state(model, optimizer)}


def float64_build(build: Any, dtype: Any) -> Any:
    """`build` that builds in `dtype` whatever it is asked: how the test runs
    `train --distributed`, which has no dtype option, in float64."""

    def build_in_dtype(spec: Any, *args: Any, **kwargs: Any) -> Any:
        return build(spec, *args, **{**kwargs, "dtype": dtype})

    return build_in_dtype


@contextlib.contextmanager
def keras_float64() -> Iterator[None]:
    """Keras's own type promotion computes in float64 on the JAX backend too.

    keras.backend.result_type maps every 64-bit result to 32 bits on all backends but
    TensorFlow (BIT64_TO_BIT32_DTYPE in keras/src/backend/common/dtypes.py, "aligned with
    JAX's default"), and BatchNormalization computes in result_type(inputs.dtype, "float32"):
    a float64 model's BatchNorms run in float32 on JAX even with JAX_ENABLE_X64 (trap 16).
    Lifting that one entry makes the whole network float64; nothing else changes.
    """
    from keras.src.backend.common import dtypes

    table = dtypes.BIT64_TO_BIT32_DTYPE
    saved = table["float64"]
    table["float64"] = "float64"
    try:
        yield
    finally:
        table["float64"] = saved


def torch_main(out: Path) -> None:
    import torch  # and no Keras: torch training never loads it

    import resnet_torch as rt
    from resnet_rosetta import cli
    from resnet_torch import distributed as rd
    from resnet_torch import training as tt

    context = rd.init_data_parallel()
    results = {}
    for name, dtype in DTYPES.items():
        model = rt.build(SPEC, dtype=getattr(torch, name))
        rt.import_weights(model, start_weights(dtype))
        results[f"parallel-{name}"] = train_library(rt, tt, model, rd.data_parallel(model, context),
                                                    context.local_batch, dtype)
    # DDP as it comes: each process's BatchNorm sees only its half of the batch
    plain = rt.build(SPEC, dtype=torch.float64)
    rt.import_weights(plain, start_weights(np.float64))
    results["unsynced-float64"] = train_library(rt, tt, plain, torch.nn.parallel.DistributedDataParallel(plain),
                                                context.local_batch, np.float64)
    if context.is_main:
        for name, result in results.items():
            write_checkpoint(out / f"{name}.safetensors", result)
    rt.build = float64_build(rt.build, torch.float64)  # the framework adapter builds through it
    assert cli.main([*CLI_ARGS, "--framework", "torch", "--out", str(out / "cli")]) == 0


def keras_main(out: Path) -> None:
    import jax
    import keras

    import resnet_keras as rk
    from resnet_keras import distributed as kd
    from resnet_keras import training as kt
    from resnet_rosetta import cli

    assert jax.config.jax_enable_x64, "float64 on JAX needs JAX_ENABLE_X64=1 before JAX starts"

    def run(name: str, data_parallel: kd.DataParallel | None) -> None:
        dtype = DTYPES[name]
        with keras_float64() if name == "float64" else contextlib.nullcontext():
            model = rk.build(SPEC, dtype=name)
            rk.import_weights(model, start_weights(dtype))
            if data_parallel is None:
                result = train_library(rk, kt, model, model, lambda x, y: (x, y), dtype)
            else:
                assert len(model.trainable_variables[0].value.sharding.device_set) == 2  # replicated on both
                result = train_library(rk, kt, model, kd.data_parallel(model, data_parallel),
                                       data_parallel.local_batch, dtype)
        assert {str(v.dtype) for v in result.values()} == {name}
        write_checkpoint(out / f"{'single' if data_parallel is None else 'parallel'}-{name}.safetensors", result)

    for name in DTYPES:
        run(name, None)
    context = kd.init_data_parallel()
    assert context.world_size == 2, keras.distribution.list_devices()
    for name in DTYPES:
        run(name, context)
    assert cli.main([*CLI_ARGS, "--framework", "keras", "--out", str(out / "cli")]) == 0


if __name__ == "__main__":
    {"torch": torch_main, "keras": keras_main}[sys.argv[1]](Path(sys.argv[2]))
