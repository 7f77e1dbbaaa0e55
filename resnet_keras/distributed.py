"""Data-parallel training with keras.distribution (the PyTorch twin is
resnet_torch/distributed.py). JAX backend; one process drives every local device.

`DataParallel` replicates the variables on every device and splits each batch
along its first axis; the train step is one program over the global batch, so
BatchNorm statistics are the global batch's and the result equals one-device
training up to the order of the sums. To use several CPU "devices" (for testing),
set XLA_FLAGS=--xla_force_host_platform_device_count=N before JAX is imported.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from resnet_keras.build import ResNet
from shared_specs.training import Metrics


@dataclass(frozen=True)
class DataParallel:
    """This process's place in a data-parallel run: the only process, over `world_size` devices."""

    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return True

    def local_batch(self, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The whole global batch: Keras splits it over the devices itself."""
        return images, labels

    def reduce(self, metrics: Metrics) -> Metrics:
        return metrics  # computed over the global batch already

    def barrier(self) -> None:
        pass


def init_data_parallel() -> DataParallel:
    """Set a keras.distribution.DataParallel over every local device. Call it before
    building the model: variables take their layout when they are created."""
    if keras.backend.backend() != "jax":
        raise RuntimeError(f"Keras data parallelism (keras.distribution) needs the JAX backend; "
                           f"this process runs {keras.backend.backend()!r} (set KERAS_BACKEND=jax)")
    devices = keras.distribution.list_devices()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    return DataParallel(0, len(devices))


def data_parallel(model: ResNet, context: DataParallel) -> ResNet:
    """The model as it is: under the distribution set by `init_data_parallel` its
    variables are already replicated and its batches split."""
    if keras.distribution.distribution() is None:
        raise RuntimeError("call init_data_parallel() before building the model")
    return model
