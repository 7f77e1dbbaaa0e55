"""Data parallelism on the frameworks' own engines equals one-process training on the
same global batches: torch DistributedDataParallel with 2 processes (torchrun, gloo on
CPU) and keras.distribution.DataParallel over 2 JAX host devices.

Equality is proven in float64, where the only difference left is the order of sums
(gradients all-reduced over processes, BatchNorm statistics summed per process), worth
~1e-16 per operation and ~1e-14 after 8 steps; 1e-10 of each tensor's scale leaves four
orders of margin on any CPU and is 10^9 times finer than what a wrong data-parallel rule
does (unsynchronised BatchNorm: 0.7 of a tensor's scale). float32 runs are then held to
the float32 rounding bound (support.F32_RUN_FACTOR), measured against float64 in the
same process.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import data_parallel_worker as worker
import numpy as np
import pytest
import torch

import resnet_torch as rt
from resnet_rosetta.training.runs import HISTORY_FILE, RunSettings, load_framework, train
from resnet_torch import training as tt
from shared_specs import get_spec, make_plan, read_checkpoint
from shared_specs.checkpoint import read_spec_and_weights
from support import F32_RUN_FACTOR, assert_float32_run_close, build_in_dtype, state_distance

ROOT = Path(__file__).resolve().parents[1]
WORKER = str(ROOT / "tests" / "data_parallel_worker.py")
F64_EXACT = 1e-10  # float64 rounding-order differences (see the module docstring)
CLI_SETTINGS = RunSettings(get_spec("cifar_resnet20"), "digits", batch_size=8, subset=16)  # worker.CLI_ARGS


def _run(command: list[str], env: dict[str, str]) -> None:
    # a generous timeout: it is there to end a hung process group, not to time the run (~1 minute
    # on 2 idle cores; measured 500+ s on a machine running 5x as many processes as it has cores)
    done = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(ROOT), **env}, capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _read(path: Path) -> dict[str, np.ndarray]:
    return read_checkpoint(path)[1]


def _apart(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(state_distance(a, b, b).values())


@functools.lru_cache(maxsize=None)
def _torch_single(dtype: str) -> dict[str, np.ndarray]:
    """The reference: one process, the whole global batch, plain BatchNorm2d."""
    model = rt.build(worker.SPEC, dtype=getattr(torch, dtype))
    rt.import_weights(model, worker.start_weights(worker.DTYPES[dtype]))
    return worker.train_library(rt, tt, model, model, lambda x, y: (x, y), worker.DTYPES[dtype])


def test_torch_ddp_two_processes_equal_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    _run([torchrun, "--standalone", "--nproc_per_node", "2", WORKER, "torch", str(tmp_path)],
         {"OMP_NUM_THREADS": "1"})
    single = _torch_single("float64")
    parallel = _read(tmp_path / "parallel-float64.safetensors")
    tensors = list(make_plan(worker.SPEC).tensors())
    assert len(parallel) == len(tensors) + sum(t for _, _, t in tensors)  # weights, and a buffer per trainable one
    assert _apart(parallel, single) < F64_EXACT
    # Plain DDP, each process normalising its own half batch, trains another function: 0.7 of a
    # tensor's scale away in exact arithmetic (a property of the data, not of the machine).
    assert _apart(_read(tmp_path / "unsynced-float64.safetensors"), single) > 0.1
    # float32: SyncBatchNorm2d's two passes and the all-reduce round otherwise than ATen's one-process kernels
    assert_float32_run_close(_read(tmp_path / "parallel-float32.safetensors"), _torch_single("float32"), single,
                             "DDP vs one process, float32")

    # `train --distributed` under torchrun, built in float64 (worker.float64_build): one
    # run of 2 x 4 examples per step, rank 0 writes.
    history = json.loads((tmp_path / "cli" / HISTORY_FILE).read_text())
    assert [(r["replicas"], r["train_examples"]) for r in history] == [(2, 16)]
    _, got = read_spec_and_weights(tmp_path / "cli" / "epoch-0001.safetensors")
    assert {v.dtype for v in got.values()} == {np.dtype(np.float64)}
    # The same run in one process, in float32 as the CLI ships and in float64. This training
    # is ill-conditioned: cifar_resnet20 on 16 digits (constant 4x4 cells, blank borders) has
    # near-constant channels that BatchNorm divides by sqrt(var + 1e-5), so one float32
    # process parts from float64 by ~0.3 of a tensor's scale within 2 steps, and a float32
    # comparison of the data-parallel run would test nothing. The float32 run measures how
    # much this training amplifies rounding; float64 rounding is 2^-29 of float32's, so the
    # rounding-order differences of the data-parallel float64 run stay below that distance
    # times 2^-29 times F32_RUN_FACTOR (see support.py) plus 2 ulp.
    runs = {}
    for dtype in ("float32", "float64"):
        if dtype == "float64":
            monkeypatch.setattr(rt, "build", build_in_dtype(rt.build, torch.float64))
        train(CLI_SETTINGS, tmp_path / dtype, load_framework("torch", device="cpu"), 1, verbose=False)
        runs[dtype] = read_spec_and_weights(tmp_path / dtype / "epoch-0001.safetensors")[1], json.loads(
            (tmp_path / dtype / HISTORY_FILE).read_text())[0]["train_loss"]
    (want, loss), (single32, _) = runs["float64"], runs["float32"]
    assert {v.dtype for v in want.values()} == {np.dtype(np.float64)}
    bound = F32_RUN_FACTOR * _apart(single32, want) * 2.0**-29 + 4 * 2.0**-53
    assert _apart(got, want) <= bound
    assert history[0]["train_loss"] == pytest.approx(loss, rel=bound, abs=0)


def test_keras_data_parallel_on_two_jax_devices_equals_one(tmp_path: Path) -> None:
    # JAX_ENABLE_X64 and XLA_FLAGS must be set before JAX starts: hence a subprocess.
    _run([sys.executable, WORKER, "keras", str(tmp_path)],
         {"KERAS_BACKEND": "jax", "JAX_ENABLE_X64": "1", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    single, parallel = (_read(tmp_path / f"{run}-float64.safetensors") for run in ("single", "parallel"))
    # One program over the global batch, split over 2 devices: float64 throughout on JAX
    # (worker.keras_float64 says what it takes), so only the order of sums changes.
    assert _apart(parallel, single) < F64_EXACT
    assert _apart(single, _torch_single("float64")) < F64_EXACT  # and it is torch's training, too
    # Keras as shipped, in float32 (JAX_ENABLE_X64 changes no float32 array: the worker checks
    # every tensor's dtype)
    assert_float32_run_close(_read(tmp_path / "parallel-float32.safetensors"),
                             _read(tmp_path / "single-float32.safetensors"), single,
                             "keras.distribution vs one device, float32")
    history = json.loads((tmp_path / "cli" / HISTORY_FILE).read_text())
    assert [(r["replicas"], r["train_examples"], r["framework"]) for r in history] == [(2, 16, "keras")]
