"""Data-parallel training with torch DistributedDataParallel (the Keras twin is
resnet_keras/distributed.py). Launch with torchrun; gloo on CPU, NCCL on GPU.

DDP averages gradients, but each process's BatchNorm sees only its share of the
batch, so by default the result depends on the number of processes, and
nn.SyncBatchNorm, which fixes that, runs on GPUs only. `SyncBatchNorm2d` reduces
batch statistics over the process group on any backend, so N processes with B/N
examples each train exactly as one process with B (the keras.distribution twin
does the same by construction: it computes one global batch).
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from resnet_torch.layers import BiasedBatchNorm2d, update_running_stats
from shared_specs.training import Metrics, shard


@dataclass(frozen=True)
class DataParallel:
    """This process's place in a data-parallel run."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and prints (rank 0)."""
        return self.rank == 0

    def local_batch(self, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """This process's contiguous share of a global batch."""
        return shard(images, labels, self.rank, self.world_size)

    def reduce(self, metrics: Metrics) -> Metrics:
        """Example-weighted means over every process's share."""
        t = torch.tensor([metrics.loss * metrics.count, metrics.accuracy * metrics.count, metrics.count],
                         dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return Metrics(float(t[0] / t[2]), float(t[1] / t[2]), int(t[2]))

    def barrier(self) -> None:
        dist.barrier()


def init_data_parallel() -> DataParallel:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise RuntimeError("distributed torch training runs under torchrun: "
                           "torchrun --nproc_per_node N -m resnet_rosetta.cli train ... --distributed")
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
        # left to interpreter teardown, gloo's worker threads may release tensors after Python is gone:
        # "terminate called without an active exception", SIGABRT at exit (pytorch/pytorch#179291)
        atexit.register(_leave_process_group)
    return DataParallel(dist.get_rank(), dist.get_world_size(), device)


def _leave_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def data_parallel(model: nn.Module, context: DataParallel) -> nn.parallel.DistributedDataParallel:
    """`model` with synchronised BatchNorm, on this process's device, wrapped in DDP
    (which broadcasts rank 0's weights, so every process starts equal)."""
    model = convert_sync_batchnorm(model).to(context.device)
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


class _AllReduceSum(torch.autograd.Function):
    """Sum over the process group; the gradient of a sum shared by all is the sum of
    every process's gradient (what torch.distributed.nn's deprecated all_reduce did)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def, override]
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def, override]
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch: means and
    variances are summed over the process group (gloo or NCCL). `unbiased` is the
    spec's running-variance rule. In eval mode it is a plain BatchNorm2d."""

    def __init__(self, *args, unbiased: bool = True, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.unbiased = unbiased

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        local = torch.tensor([x.numel() // x.shape[1]], dtype=x.dtype, device=x.device)
        count = _AllReduceSum.apply(local)
        # two passes (mean, then centred squares) keep float32 variance accurate
        mean = _AllReduceSum.apply(x.sum(dim=(0, 2, 3))) / count
        centred = x - mean[None, :, None, None]
        var = _AllReduceSum.apply((centred * centred).sum(dim=(0, 2, 3))) / count
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        with torch.no_grad():
            update_running_stats(self, mean, var * (count / (count - 1)) if self.unbiased else var)
        return out


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d by a SyncBatchNorm2d sharing its parameters and
    buffers (state_dict keys unchanged), keeping its running-variance rule."""
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, SyncBatchNorm2d):
        sync = SyncBatchNorm2d(module.num_features, module.eps, module.momentum, unbiased=not isinstance(
            module, BiasedBatchNorm2d))
        sync.weight, sync.bias = module.weight, module.bias
        sync.running_mean, sync.running_var = module.running_mean, module.running_var
        sync.num_batches_tracked = module.num_batches_tracked
        sync.train(module.training)
        return sync
    for name, child in module.named_children():
        module._modules[name] = convert_sync_batchnorm(child)
    return module
