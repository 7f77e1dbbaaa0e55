"""Subprocess half of tests/test_distributed.py: data-parallel training, whose results
the test compares with single-process training.

    torchrun --nproc_per_node 2 tests/data_parallel_worker.py torch OUT_DIR
    XLA_FLAGS=--xla_force_host_platform_device_count=2 KERAS_BACKEND=jax \\
        python tests/data_parallel_worker.py keras OUT_DIR

Each writes OUT_DIR/library.safetensors (a small network trained through the
library, weights + momentum buffers) and OUT_DIR/cli/ (a `train --distributed` run).
"""

from __future__ import annotations

import sys
from pathlib import Path

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


def data(dtype: type) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    n = GLOBAL_BATCH * STEPS_PER_EPOCH
    return rng.normal(size=(n, 3, 16, 16)).astype(dtype), rng.integers(0, SPEC.num_classes, n)


def train_library(package, training, model, trained, local_batch, dtype: type) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """EPOCHS epochs of the shared batch order; `trained` is the model as data parallelism wraps it."""
    optimizer = training.make_optimizer(model, SGD)
    images, labels = data(dtype)
    for epoch in range(EPOCHS):
        for x, y in epoch_batches(images, labels, GLOBAL_BATCH, seed=0, epoch=epoch):
            training.train_step(trained, optimizer, *local_batch(x, y))
    return {**package.export_weights(model), **training.optimizer_state(model, optimizer)}


def torch_main(out: Path) -> None:
    import torch  # and no Keras: torch training never loads it

    import resnet_torch as rt
    from resnet_rosetta import cli
    from resnet_torch import distributed as rd
    from resnet_torch import training as tt

    context = rd.init_data_parallel()
    start = {k: v.astype(np.float64) for k, v in initial_weights(SPEC, 0).items()}
    model = rt.build(SPEC, dtype=torch.float64)
    rt.import_weights(model, start)
    result = train_library(rt, tt, model, rd.data_parallel(model, context), context.local_batch, np.float64)
    # DDP as it comes: each process's BatchNorm sees only its half of the batch
    plain = rt.build(SPEC, dtype=torch.float64)
    rt.import_weights(plain, start)
    unsynced = train_library(rt, tt, plain, torch.nn.parallel.DistributedDataParallel(plain), context.local_batch,
                             np.float64)
    if context.is_main:
        write_checkpoint(out / "library.safetensors", result)
        write_checkpoint(out / "unsynced.safetensors", unsynced)
    assert cli.main([*CLI_ARGS, "--framework", "torch", "--out", str(out / "cli")]) == 0


def keras_main(out: Path) -> None:
    import keras

    import resnet_keras as rk
    from resnet_keras import distributed as kd
    from resnet_keras import training as kt
    from resnet_rosetta import cli

    start = initial_weights(SPEC, 0)
    single = rk.build(SPEC)
    rk.import_weights(single, start)
    write_checkpoint(out / "single.safetensors", train_library(rk, kt, single, single, lambda x, y: (x, y), np.float32))
    context = kd.init_data_parallel()
    assert context.world_size == 2, keras.distribution.list_devices()
    model = rk.build(SPEC)
    rk.import_weights(model, start)
    assert len(model.trainable_variables[0].value.sharding.device_set) == 2  # replicated on both devices
    result = train_library(rk, kt, model, kd.data_parallel(model, context), context.local_batch, np.float32)
    write_checkpoint(out / "library.safetensors", result)
    assert cli.main([*CLI_ARGS, "--framework", "keras", "--out", str(out / "cli")]) == 0


if __name__ == "__main__":
    {"torch": torch_main, "keras": keras_main}[sys.argv[1]](Path(sys.argv[2]))
