"""A training run in a directory: epochs, checkpoints, resume, in either framework.

After every epoch the run directory gets, in this order, each file written to a
temp file and renamed into place:

    epoch-0003.safetensors    canonical checkpoint (weights + spec): evaluate, port
    train_state.safetensors   momentum buffers (canonical names) + the run as JSON:
                              settings, epochs done, its checkpoint, history
    history.json              per-epoch loss, accuracy, learning rate, time

`train_state.safetensors` is the commit point: a run killed at any moment resumes
from the last epoch it records, and nothing it records is lost. No random
generator state needs saving: initial weights come from (seed) and every epoch's
batch order and augmentation from (seed, epoch) (shared_specs.training). Weights
and buffers are canonical, so a run may be resumed in the other framework.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resnet_rosetta.frameworks import Framework, get_framework
from resnet_rosetta.training.data import Dataset, Prefetch, load_dataset
from shared_specs import CheckpointError, ResNetSpec, SpecError, read_checkpoint, write_checkpoint
from shared_specs.checkpoint import atomic_write, read_spec_and_weights
from shared_specs.spec import describe_differences, differences
from shared_specs.training import Metrics, SGDConfig, StepOptions, epoch_batches, initial_weights

STATE_FILE = "train_state.safetensors"
HISTORY_FILE = "history.json"
RUN_FORMAT, RUN_VERSION = "resnet-rosetta-run", 1


@dataclass(frozen=True)
class RunSettings:
    """Everything that decides a run's trajectory; a resumed run must keep all of it."""

    spec: ResNetSpec
    data: str
    channels: int | None = None
    batch_size: int = 128
    sgd: SGDConfig = field(default_factory=SGDConfig)
    seed: int = 0
    augment: bool = True
    subset: int | None = None  # first N training and test examples, for quick runs
    # fp32, or bf16/fp16 mixed precision: it changes the rounding, so the trajectory (runs
    # recorded before this field read as fp32). channels_last and compile change speed only:
    # options of each invocation, not settings.
    precision: str = "fp32"

    def __post_init__(self) -> None:
        StepOptions(self.precision)  # validates it

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "spec": self.spec.to_dict(), "sgd": self.sgd.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSettings:
        return cls(**{**data, "spec": ResNetSpec.from_dict(data["spec"]), "sgd": SGDConfig.from_dict(data["sgd"])})


# The Keras backend `train` and `evaluate` use when neither --backend nor KERAS_BACKEND names one:
# the fastest train step measured by benchmarks/bench_backends.py (results/backends-cpu.md).
KERAS_TRAIN_BACKEND = "jax"


def load_framework(name: str, backend: str | None = None, device: str | None = None) -> Framework:
    """The framework to train in; only what `name` needs is imported (torch training never
    loads TensorFlow), and torch trains on CUDA when present unless `device` says otherwise.
    Keras runs on `backend`, else $KERAS_BACKEND, else KERAS_TRAIN_BACKEND (unless a Keras
    is imported already: its backend is fixed)."""
    if name == "keras" and backend is None and "keras" not in sys.modules and not os.environ.get("KERAS_BACKEND"):
        backend = KERAS_TRAIN_BACKEND
    framework = get_framework(name, backend=backend, device=device)
    if framework.name == "torch" and device is None:
        import torch

        framework.device = "cuda" if torch.cuda.is_available() else "cpu"
    return framework


def prepare_data(settings: RunSettings) -> Dataset:
    data = load_dataset(settings.data, channels=settings.channels)
    if settings.subset is not None:
        n = settings.subset
        data = dataclasses.replace(data, train_images=data.train_images[:n], train_labels=data.train_labels[:n],
                                   test_images=data.test_images[:n], test_labels=data.test_labels[:n])
    return data


def spec_for_data(spec: ResNetSpec, data: Dataset) -> ResNetSpec:
    """The spec with its classifier and input channels fitted to the data, and no
    softmax head: both trainers take the loss from logits (trap 13)."""
    return spec.replace(num_classes=data.num_classes, in_channels=data.channels, head_activation="none")


@dataclass
class RunState:
    settings: RunSettings
    epoch: int  # epochs completed
    checkpoint: str
    history: list[dict[str, Any]]

    def to_json(self) -> str:
        return json.dumps({"format": RUN_FORMAT, "version": RUN_VERSION, "settings": self.settings.to_dict(),
                           "epoch": self.epoch, "checkpoint": self.checkpoint, "history": self.history})


def read_state(out: Path) -> tuple[RunState, dict[str, np.ndarray]]:
    """The run recorded in `out` and its momentum buffers; CheckpointError if unusable."""
    path = out / STATE_FILE
    _, buffers, meta = read_checkpoint(path)
    try:
        raw = json.loads(meta["run"])
        if raw.get("format") != RUN_FORMAT or raw.get("version") != RUN_VERSION:
            raise ValueError(f"format {raw.get('format')!r} version {raw.get('version')!r}")
        state = RunState(RunSettings.from_dict(raw["settings"]), int(raw["epoch"]), str(raw["checkpoint"]),
                         list(raw["history"]))
    except (KeyError, TypeError, ValueError, SpecError) as err:
        raise CheckpointError(f"{path}: not a resnet-rosetta training state ({err})") from None
    return state, buffers


def train(settings: RunSettings, out: str | Path, framework: Framework, epochs: int, *, resume: bool = False,
          distributed: bool = False, verbose: bool = True, channels_last: bool = False, compile: bool = False,
          on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Train until `epochs` epochs are done; returns the history. See the module docstring.

    `resume` continues the run recorded in `out` (its settings must equal `settings`);
    without it, `out` must not hold a run. `on_epoch_end(epoch, record)` is called once
    an epoch's files are committed. `channels_last` and `compile` make steps faster
    (shared_specs.training.StepOptions, with the settings' precision).
    """
    out = Path(out)
    if epochs < 1:
        raise SpecError(f"--epochs must be >= 1, got {epochs}")
    context = _data_parallel(framework) if distributed else None
    data = prepare_data(settings)
    spec = spec_for_data(settings.spec, data)
    if not 1 <= settings.batch_size <= len(data.train_labels):
        raise SpecError(f"--batch-size must be in [1, {len(data.train_labels)}] (the training examples), "
                        f"got {settings.batch_size}")
    if context is not None and settings.batch_size % context.world_size:
        raise SpecError(f"--batch-size {settings.batch_size} does not split over {context.world_size} replicas")
    if resume:
        state, buffers = read_state(out)
        if diff := differences(state.settings.to_dict(), settings.to_dict()):
            raise SpecError(f"{out}: the run was started with other settings: "
                            f"{describe_differences(diff, 'stored', 'now')}")
        stored_spec, weights = read_spec_and_weights(out / state.checkpoint)
        if stored_spec.differences(spec):
            raise CheckpointError(f"{out / state.checkpoint}: its spec differs from the run's")
        start, history = state.epoch, state.history
        if start >= epochs and verbose:
            print(f"{out}: {start} epochs are done already; ask for more with --epochs")
    else:
        if (out / STATE_FILE).exists():
            raise SpecError(f"{out} holds a run already; pass --resume to continue it, or choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        weights, buffers, start, history = initial_weights(spec, settings.seed), {}, 0, []
    fw = framework.training
    options = StepOptions(settings.precision, channels_last, compile)
    model = framework.build(spec, weights, dtype=fw.model_dtype(options))
    trained = model
    if context is not None:
        trained = framework.distributed.data_parallel(model, context)  # type: ignore[union-attr]
    optimizer = fw.make_optimizer(model, settings.sgd, options)
    fw.load_optimizer_state(model, optimizer, buffers)
    main = context is None or context.is_main
    augment = data.augment if settings.augment else None
    for epoch in range(start, epochs):
        lr = settings.sgd.lr_at(epoch)
        fw.set_learning_rate(optimizer, lr)
        began = time.perf_counter()
        batches = epoch_batches(data.train_images, data.train_labels, settings.batch_size, seed=settings.seed,
                                epoch=epoch, augment=augment)
        batches = ((data.prepare(x), y) for x, y in batches)
        if context is not None:
            batches = (context.local_batch(x, y) for x, y in batches)
        prefetched = Prefetch(batches)  # made while the previous step computes
        with _progress_bar(verbose and main, len(data.train_labels) // settings.batch_size,
                           f"epoch {epoch + 1}/{epochs}") as update:
            train_metrics = fw.train_epoch(trained, optimizer, prefetched, update)
        train_seconds = time.perf_counter() - began
        if context is not None:
            train_metrics = context.reduce(train_metrics)
        if main:
            test = fw.evaluate(model, data.prepare(data.test_images), data.test_labels)
            record = _record(epoch + 1, lr, train_metrics, test, time.perf_counter() - began, framework.name,
                             1 if context is None else context.world_size)
            record.update(train_seconds=round(train_seconds, 3), data_wait_seconds=round(prefetched.waited, 3))
            history = [*history, record]
            checkpoint = f"epoch-{epoch + 1:04d}.safetensors"
            write_checkpoint(out / checkpoint, framework.package.export_weights(model), spec,
                             {"epoch": str(epoch + 1), "framework": framework.name,
                              "test_accuracy": repr(test.accuracy)})
            state = RunState(settings, epoch + 1, checkpoint, history)
            write_checkpoint(out / STATE_FILE, fw.optimizer_state(model, optimizer), metadata={"run": state.to_json()})
            atomic_write(out / HISTORY_FILE, lambda f, h=history: f.write(json.dumps(h, indent=2).encode()))
            if verbose:
                print(_summary(record), flush=True)
        if context is not None:
            context.barrier()
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, history[-1] if history else {})
    return history


def model_checkpoint(path: str | Path) -> Path:
    """The canonical checkpoint `path` means: itself, or for a run directory its newest epoch.
    A run's training state is not a model: CheckpointError naming the checkpoint to use."""
    path = Path(path)
    run = path if path.is_dir() else path.parent
    if path.is_dir() and not (path / STATE_FILE).is_file():
        raise CheckpointError(f"{path}: a directory without {STATE_FILE}, so not a training run; give a checkpoint "
                              "file or a run directory")
    if path.is_dir() or (path.is_file() and "run" in read_checkpoint(path)[2]):
        state, _ = read_state(run)
        checkpoint = run / state.checkpoint
        if path.is_dir():
            return checkpoint
        raise CheckpointError(f"{path}: the training state of a run (momentum buffers and settings), not a model; "
                              f"its newest epoch's checkpoint is {checkpoint} (or give the run directory {run})")
    return path


def evaluate_checkpoint(path: str | Path, framework: Framework, data: str, *, subset: int | None = None,
                        split: str = "test") -> tuple[ResNetSpec, Metrics, Dataset]:
    """Accuracy and loss of a canonical checkpoint (or a run directory's newest epoch) on
    `data`'s split, in `framework`."""
    spec, weights = read_spec_and_weights(model_checkpoint(path))
    settings = RunSettings(spec, data, channels=spec.in_channels if data == "digits" else None, subset=subset)
    dataset = prepare_data(settings)
    if spec.num_classes != dataset.num_classes or spec.in_channels != dataset.channels:
        raise SpecError(f"{path}: the network takes {spec.in_channels} channels into {spec.num_classes} classes, "
                        f"{dataset.name} has {dataset.channels} channels and {dataset.num_classes} classes")
    model = framework.build(spec, weights)
    images, labels = (dataset.test_images, dataset.test_labels) if split == "test" else (
        dataset.train_images, dataset.train_labels)
    return spec, framework.training.evaluate(model, dataset.prepare(images), labels), dataset


def _data_parallel(framework: Framework) -> Any:
    framework.distributed = importlib.import_module(f"{framework.package.__name__}.distributed")
    context = framework.distributed.init_data_parallel()
    if framework.name == "torch":
        framework.device = str(context.device)
    return context


def _record(epoch: int, lr: float, train: Metrics, test: Metrics, seconds: float, framework: str,
            replicas: int) -> dict[str, Any]:
    return {"epoch": epoch, "lr": lr, "train_loss": train.loss, "train_accuracy": train.accuracy,
            "train_examples": train.count, "test_loss": test.loss, "test_accuracy": test.accuracy,
            "seconds": round(seconds, 3), "framework": framework, "replicas": replicas}


def _summary(r: dict[str, Any]) -> str:
    replicas = f", {r['replicas']} replicas" if r["replicas"] > 1 else ""
    return (f"epoch {r['epoch']}: train loss {r['train_loss']:.4f} acc {r['train_accuracy']:.4f} | "
            f"test loss {r['test_loss']:.4f} acc {r['test_accuracy']:.4f} | lr {r['lr']:.4g} | {r['seconds']:.1f}s "
            f"({r['framework']}{replicas}; training {r['train_seconds']:.1f}s, of it waiting for data "
            f"{r['data_wait_seconds']:.2f}s)")


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int, desc: str) -> Iterator[Callable[[float], None] | None]:
    """A tqdm bar over one epoch's batches showing the last batch's loss."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, leave=False, unit="batch") as bar:
        def update(loss: float) -> None:
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            bar.update()

        yield update
