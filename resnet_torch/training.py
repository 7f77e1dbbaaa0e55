"""Train and evaluate a PyTorch ResNet (the Keras twin is resnet_keras/training.py).

Both trainers take the same numpy batches (NCHW images, integer labels) from
`shared_specs.training`, minimise the mean cross-entropy of the logits, and update
with torch.optim.SGD; optimizer state leaves and enters as canonical numpy arrays
(`momentum.<canonical weight name>`, PyTorch layout), so a run can be resumed in
either framework.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from resnet_torch.build import ResNet
from shared_specs import WeightsError
from shared_specs.training import (
    MOMENTUM_PREFIX,
    Metrics,
    SGDConfig,
    StepOptions,
    check_optimizer_state,
    check_trainable,
    classification_metrics,
    run_epoch,
)


class _Step:
    """How `train_step` computes a step for one optimizer: its StepOptions, the fp16 loss
    scaler, and the torch.compile'd model (compiled once, on the first step)."""

    def __init__(self, options: StepOptions, device: torch.device) -> None:
        self.options = options
        self.scaler = torch.amp.GradScaler(device.type) if options.precision == "fp16" else None
        self._compiled: tuple[torch.nn.Module, Any] | None = None

    def forward(self, model: torch.nn.Module) -> Any:
        if not self.options.compile:
            return model
        if self._compiled is None or self._compiled[0] is not model:
            self._compiled = (model, torch.compile(model))
        return self._compiled[1]


# Keyed by the optimizer that train_step receives anyway, so that the step's options travel
# with it and every signature stays the Keras twin's; an optimizer made elsewhere steps in fp32.
_STEPS: weakref.WeakKeyDictionary[torch.optim.Optimizer, _Step] = weakref.WeakKeyDictionary()
_HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


def make_optimizer(model: ResNet, config: SGDConfig, options: StepOptions | None = None) -> torch.optim.SGD:
    """torch.optim.SGD over every parameter (weight decay included: torch's default).

    `options` choose how `train_step` computes with it: autocast to bf16/fp16 (fp16 with
    a GradScaler), channels_last (the model is converted here, in place), torch.compile.
    """
    check_trainable(model.spec)
    options = options or StepOptions()
    if options.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, nesterov=config.nesterov, dampening=0.0)
    _STEPS[optimizer] = _Step(options, next(model.parameters()).device)
    return optimizer


def model_dtype(options: StepOptions) -> None:
    """None: mixed precision keeps float32 weights and autocasts each step (the Keras twin
    builds its model with a mixed-precision policy instead)."""
    return None


def step_options(optimizer: torch.optim.Optimizer) -> StepOptions:
    """The StepOptions `optimizer` was made with (defaults for one made elsewhere)."""
    step = _STEPS.get(optimizer)
    return step.options if step is not None else StepOptions()


@contextlib.contextmanager
def _autocast(device: torch.device, precision: str) -> Iterator[None]:
    if precision == "fp32":
        yield
    else:
        with torch.autocast(device.type, dtype=_HALF[precision]):
            yield


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _to_model(model: torch.nn.Module, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
              channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch as tensors on the model's device (numpy arrays, or tensors already there)."""
    p = next(model.parameters())
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    if p.device.type == "cuda" and x.device.type == "cpu":  # pinned: the copy overlaps queued kernels
        x = x.pin_memory()
    x = x.to(device=p.device, dtype=p.dtype, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = labels if isinstance(labels, torch.Tensor) else torch.from_numpy(np.asarray(labels, dtype=np.int64))
    return x, y.to(p.device, non_blocking=True)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images: np.ndarray | torch.Tensor,
               labels: np.ndarray | torch.Tensor) -> tuple[float, int]:
    """One SGD step on one batch in training mode; returns (mean loss, correct predictions).

    `model` may be a DistributedDataParallel wrapper: it averages the gradients.
    """
    step = _STEPS.get(optimizer) or _Step(StepOptions(), torch.device("cpu"))
    model.train()
    x, y = _to_model(model, images, labels, step.options.channels_last)
    optimizer.zero_grad(set_to_none=True)
    with _autocast(x.device, step.options.precision):
        logits = step.forward(model)(x)
        loss = F.cross_entropy(logits.float() if logits.dtype in _HALF.values() else logits, y)  # float64 stays
    if step.scaler is None:
        loss.backward()
        optimizer.step()
    else:
        step.scaler.scale(loss).backward()
        step.scaler.step(optimizer)
        step.scaler.update()
    return float(loss.detach()), int((logits.detach().argmax(1) == y).sum())


def train_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                batches: Iterable[tuple[np.ndarray, np.ndarray]],
                progress: Callable[[float], None] | None = None) -> Metrics:
    """`train_step` over every batch; example-weighted mean loss and accuracy."""
    return run_epoch(lambda x, y: train_step(model, optimizer, x, y), batches, progress)


def predict(model: torch.nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Eval-mode outputs (running BatchNorm statistics) as float64 numpy."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x, _ = _to_model(model, images[i : i + batch_size], np.zeros(0))
            out.append(model(x).double().cpu().numpy())
    return np.concatenate(out)


def evaluate(model: ResNet, images: np.ndarray, labels: np.ndarray, batch_size: int = 256) -> Metrics:
    """Mean cross-entropy and accuracy in inference mode (float64 numpy, shared_specs.training)."""
    return classification_metrics(predict(model, images, batch_size), labels,
                                  from_logits=model.spec.head_activation == "none")


def optimizer_state(model: ResNet, optimizer: torch.optim.Optimizer) -> dict[str, np.ndarray]:
    """Momentum buffers under canonical names; empty before the first step or without momentum."""
    out = {}
    for name, param in model.named_parameters():
        buf = optimizer.state.get(param, {}).get("momentum_buffer")
        if buf is not None:
            out[MOMENTUM_PREFIX + name] = buf.detach().cpu().numpy().copy()
    return out


def load_optimizer_state(model: ResNet, optimizer: torch.optim.Optimizer, state: Mapping[str, np.ndarray]) -> None:
    """Set momentum buffers from `optimizer_state` output (either framework's); all-or-nothing."""
    checked = check_optimizer_state(model.spec, state)
    if checked and not optimizer.defaults["momentum"]:
        raise WeightsError("optimizer state holds momentum buffers but this optimizer has momentum 0")
    params = dict(model.named_parameters())
    for name, value in checked.items():
        p = params[name]
        optimizer.state[p]["momentum_buffer"] = torch.tensor(value, dtype=p.dtype, device=p.device)
