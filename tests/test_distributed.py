"""Data parallelism on the frameworks' own engines equals one-process training on the
same global batches: torch DistributedDataParallel with 2 processes (torchrun, gloo on
CPU) and keras.distribution.DataParallel over 2 JAX host devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import resnet_torch as rt
from resnet_rosetta.training.runs import HISTORY_FILE, RunSettings, load_framework, train
from resnet_torch import training as tt
from shared_specs import get_spec, make_plan, read_checkpoint
from shared_specs.checkpoint import read_spec_and_weights
from shared_specs.training import initial_weights
from tests import data_parallel_worker as worker
from tests.support import assert_f32_close

ROOT = Path(__file__).resolve().parents[1]
WORKER = str(ROOT / "tests" / "data_parallel_worker.py")


def _run(command: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(ROOT), **env}, capture_output=True,
                          text=True, timeout=500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _relative(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max() / max(np.abs(a[k]).max(), 1e-6)) for k in a)


def test_torch_ddp_two_processes_equal_one(tmp_path: Path) -> None:
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    _run([torchrun, "--standalone", "--nproc_per_node", "2", WORKER, "torch", str(tmp_path)],
         {"OMP_NUM_THREADS": "1"})
    # the reference: one process, the whole global batch, plain BatchNorm2d
    model = rt.build(worker.SPEC, dtype=torch.float64)
    rt.import_weights(model, {k: v.astype(np.float64) for k, v in initial_weights(worker.SPEC, 0).items()})
    single = worker.train_library(rt, tt, model, model, lambda x, y: (x, y), np.float64)
    _, parallel, _ = read_checkpoint(tmp_path / "library.safetensors")
    tensors = list(make_plan(worker.SPEC).tensors())
    assert len(parallel) == len(tensors) + sum(t for _, _, t in tensors)  # weights, and a buffer per trainable one
    # float64: gradients averaged over 2 processes and BatchNorm statistics summed over
    # them differ from the one-process sums only in rounding order (measured 4e-15 after
    # 8 steps). Plain DDP, each process normalising its own half batch, trains another
    # function: measured 0.71 of a tensor's scale apart (the momentum of a BN bias).
    assert _relative(single, parallel) < 1e-10
    _, unsynced, _ = read_checkpoint(tmp_path / "unsynced.safetensors")
    assert _relative(single, unsynced) > 0.1

    # `train --distributed` under torchrun: one run of 2 x 4 examples per step, rank 0 writes
    history = json.loads((tmp_path / "cli" / HISTORY_FILE).read_text())
    assert [(r["replicas"], r["train_examples"]) for r in history] == [(2, 16)]
    reference = tmp_path / "single"
    settings = RunSettings(get_spec("cifar_resnet20"), "digits", batch_size=8, subset=16)
    train(settings, reference, load_framework("torch", device="cpu"), 1, verbose=False)
    expected = json.loads((reference / HISTORY_FILE).read_text())[0]
    # float32: the two BatchNorm formulas (ATen's, SyncBatchNorm2d's two passes) and the
    # gradient all-reduce round differently; measured 3e-6 of each tensor's scale after
    # 2 steps, 4e-8 in the loss: the float32 parity bound holds with 30x margin.
    assert history[0]["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-5)
    _, got = read_spec_and_weights(tmp_path / "cli" / "epoch-0001.safetensors")
    _, want = read_spec_and_weights(reference / "epoch-0001.safetensors")
    for name, value in want.items():
        assert_f32_close(got[name], value, name)


def test_keras_data_parallel_on_two_jax_devices_equals_one(tmp_path: Path) -> None:
    # XLA_FLAGS must be set before JAX starts: hence a subprocess, whatever this one runs.
    _run([sys.executable, WORKER, "keras", str(tmp_path)],
         {"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    _, single, _ = read_checkpoint(tmp_path / "single.safetensors")
    _, parallel, _ = read_checkpoint(tmp_path / "library.safetensors")
    # One program over the global batch, split over 2 devices: only the order of float32
    # sums changes (measured 2e-6 of each tensor's scale after 8 steps): the float32 bound.
    for name, value in single.items():
        assert_f32_close(parallel[name], value, name)
    history = json.loads((tmp_path / "cli" / HISTORY_FILE).read_text())
    assert [(r["replicas"], r["train_examples"], r["framework"]) for r in history] == [(2, 16, "keras")]
