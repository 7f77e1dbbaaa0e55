"""Train and evaluate a PyTorch ResNet (the Keras twin is resnet_keras/training.py).

Both trainers take the same numpy batches (NCHW images, integer labels) from
`shared_specs.training`, minimise the mean cross-entropy of the logits, and update
with torch.optim.SGD; optimizer state leaves and enters as canonical numpy arrays
(`momentum.<canonical weight name>`, PyTorch layout), so a run can be resumed in
either framework.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from resnet_torch.build import ResNet
from shared_specs import WeightsError
from shared_specs.training import (
    MOMENTUM_PREFIX,
    Metrics,
    SGDConfig,
    check_optimizer_state,
    check_trainable,
    classification_metrics,
    run_epoch,
)


def make_optimizer(model: ResNet, config: SGDConfig) -> torch.optim.SGD:
    """torch.optim.SGD over every parameter (weight decay included: torch's default)."""
    check_trainable(model.spec)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay, nesterov=config.nesterov, dampening=0.0)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _to_model(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    p = next(model.parameters())
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device=p.device, dtype=p.dtype)
    return x, torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(p.device)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images: np.ndarray,
               labels: np.ndarray) -> tuple[float, int]:
    """One SGD step on one batch in training mode; returns (mean loss, correct predictions).

    `model` may be a DistributedDataParallel wrapper: it averages the gradients.
    """
    model.train()
    x, y = _to_model(model, images, labels)
    optimizer.zero_grad(set_to_none=True)
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    optimizer.step()
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
