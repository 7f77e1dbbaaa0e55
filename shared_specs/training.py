"""What both trainers share: the optimizer's meaning, the batch order, the metrics.

PyTorch and Keras train the same network the same way only if they see the same
batches in the same order and apply the same update rule. Both are decided here,
with numpy alone: `SGDConfig` is torch.optim.SGD's update (the Keras trainer
implements it, traps 10 and 11), `epoch_batches` draws every epoch's order and
augmentation from (seed, epoch) alone, so a resumed run needs no hidden generator
state, and `classification_metrics` scores logits identically for both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from shared_specs.errors import SpecError, WeightsError
from shared_specs.plan import make_plan
from shared_specs.spec import ResNetSpec

# Optimizer state is saved as one momentum buffer per trainable canonical weight,
# named `momentum.<weight name>` and in PyTorch layout, whichever framework trained.
MOMENTUM_PREFIX = "momentum."


@dataclass(frozen=True)
class SGDConfig:
    """SGD with momentum exactly as torch.optim.SGD (dampening 0) computes it:

        g = grad + weight_decay * w          (L2 added to the gradient, not decoupled)
        b = momentum * b + g                 (b = g on the first step)
        g = g + momentum * b if nesterov else b
        w = w - lr * g                       (lr outside the buffer)

    The learning rate is `lr * gamma ** k` after the k-th of `milestones` (epochs),
    torch's MultiStepLR; He et al. 2015 train CIFAR nets with lr 0.1, momentum 0.9,
    weight decay 1e-4 and two tenfold drops.
    """

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(self.milestones))
        for name in ("lr", "momentum", "weight_decay", "gamma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise SpecError(f"sgd.{name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.lr <= 0:
            raise SpecError(f"sgd.lr must be > 0, got {self.lr}")
        if not 0.0 <= self.momentum < 1.0:
            raise SpecError(f"sgd.momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise SpecError(f"sgd.weight_decay must be >= 0, got {self.weight_decay}")
        if not isinstance(self.nesterov, bool):
            raise SpecError(f"sgd.nesterov must be true or false, got {self.nesterov!r}")
        if self.nesterov and self.momentum == 0:
            raise SpecError("sgd.nesterov needs momentum > 0 (torch.optim.SGD refuses it too)")
        if any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in self.milestones):
            raise SpecError(f"sgd.milestones must be positive epoch numbers, got {list(self.milestones)}")
        if list(self.milestones) != sorted(set(self.milestones)):
            raise SpecError(f"sgd.milestones must be strictly increasing, got {list(self.milestones)}")
        if not 0.0 < self.gamma <= 1.0:
            raise SpecError(f"sgd.gamma must be in (0, 1], got {self.gamma}")

    def lr_at(self, epoch: int) -> float:
        """Learning rate of epoch `epoch` (0-based)."""
        return self.lr * self.gamma ** sum(1 for m in self.milestones if epoch >= m)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "milestones": list(self.milestones)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SGDConfig:
        if not isinstance(data, dict):
            raise SpecError(f"sgd config must be an object, got {type(data).__name__}")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise SpecError(f"unknown sgd config key(s) {unknown}")
        return cls(**data)


PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class StepOptions:
    """How a training step is computed, not which update it computes (up to rounding).

    `precision`: "fp32", or "bf16"/"fp16" mixed precision (weights, optimizer state and
    the update stay float32; convolutions and matmuls run in the half type; fp16 scales
    the loss against underflow). `channels_last`: PyTorch's NHWC memory format (Keras
    is NHWC already). `compile`: torch.compile, or Keras's jit_compile (XLA on
    TensorFlow; JAX always compiles; torch.compile on Keras's torch backend). None of
    them changes the network or the batches; mixed precision changes the rounding
    (docs/training.md, "Fast training", says by how much).
    """

    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise SpecError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        for name in ("channels_last", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise SpecError(f"{name} must be true or false, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepOptions:
        if not isinstance(data, dict):
            raise SpecError(f"step options must be an object, got {type(data).__name__}")
        if unknown := sorted(set(data) - {f.name for f in fields(cls)}):
            raise SpecError(f"unknown step option(s) {unknown}")
        return cls(**data)


@dataclass(frozen=True)
class Augment:
    """The CIFAR augmentation of He et al. 2015: pad `pad` zero pixels, crop back at
    a random offset, flip horizontally with probability 1/2."""

    pad: int = 4
    flip: bool = True


def epoch_order(num_examples: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Index arrays of epoch `epoch`'s batches: a permutation drawn from (seed, epoch).

    The last incomplete batch is dropped: BatchNorm on a batch of one is undefined
    (torch raises) and a distributed run needs every batch split evenly.
    """
    if batch_size < 1 or batch_size > num_examples:
        raise SpecError(f"batch size must be in [1, {num_examples}] (the number of examples), got {batch_size}")
    perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
    return [perm[i : i + batch_size] for i in range(0, num_examples - batch_size + 1, batch_size)]


def epoch_batches(images: np.ndarray, labels: np.ndarray, batch_size: int, *, seed: int, epoch: int,
                  augment: Augment | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Epoch `epoch`'s (images NCHW, labels) batches; augmentation drawn from (seed, epoch) too."""
    rng = np.random.default_rng([seed, epoch, 1])
    for index in epoch_order(len(images), batch_size, seed, epoch):
        x = images[index]
        if augment is not None:
            x = _augment(x, augment, rng)
        yield np.ascontiguousarray(x), labels[index]


def _augment(x: np.ndarray, aug: Augment, rng: np.random.Generator) -> np.ndarray:
    n, _, h, w = x.shape
    p = aug.pad
    padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    dy, dx = rng.integers(0, 2 * p + 1, size=(2, n))
    flips = rng.random(n) < 0.5 if aug.flip else np.zeros(n, bool)
    out = np.empty_like(x)
    for i in range(n):
        crop = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop[:, :, ::-1] if flips[i] else crop
    return out


def shard(images: np.ndarray, labels: np.ndarray, rank: int, world_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Process `rank`'s contiguous share of a global batch (data-parallel training)."""
    n = len(images)
    if n % world_size:
        raise SpecError(f"a global batch of {n} does not split evenly over {world_size} processes")
    k = n // world_size
    return images[rank * k : (rank + 1) * k], labels[rank * k : (rank + 1) * k]


@dataclass(frozen=True)
class Metrics:
    """Mean cross-entropy and top-1 accuracy over `count` examples."""

    loss: float
    accuracy: float
    count: int

    def to_dict(self) -> dict[str, float]:
        return {"loss": self.loss, "accuracy": self.accuracy, "count": self.count}


def classification_metrics(outputs: np.ndarray, labels: np.ndarray, *, from_logits: bool = True) -> Metrics:
    """Mean cross-entropy and accuracy in float64 numpy, so the score does not depend on
    the framework. `outputs` are logits, or probabilities of a softmax head with
    `from_logits=False` (trap 13: Keras's losses assume probabilities by default)."""
    z = np.asarray(outputs, dtype=np.float64)
    labels = np.asarray(labels)
    if z.ndim != 2 or len(z) != len(labels):
        raise SpecError(f"need (N, classes) outputs for N labels, got {z.shape} for {labels.shape}")
    if from_logits:
        shifted = z - z.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    else:
        log_probs = np.log(np.maximum(z, np.finfo(np.float64).tiny))
    loss = -log_probs[np.arange(len(z)), labels].mean()
    return Metrics(float(loss), float((z.argmax(axis=1) == labels).mean()), len(z))


def check_trainable(spec: ResNetSpec) -> None:
    """Both trainers minimise cross-entropy from logits (trap 13), so they need a
    classifier without a softmax: `head_activation="none"` (softmax does not change
    the predicted class, so a trained network may get its softmax back)."""
    if spec.num_classes is None or spec.head_activation != "none":
        raise SpecError(f"spec {spec.name!r} cannot be trained here: training needs a classifier that outputs logits "
                        f"(num_classes set, head_activation 'none'), got num_classes={spec.num_classes}, "
                        f"head_activation={spec.head_activation!r}")


@dataclass
class EpochAccumulator:
    """Running example-weighted means of per-batch training loss and accuracy."""

    loss_sum: float = 0.0
    correct: int = 0
    count: int = 0

    def add(self, loss: float, correct: int, count: int) -> None:
        self.loss_sum += loss * count
        self.correct += correct
        self.count += count

    def result(self) -> Metrics:
        if not self.count:
            raise SpecError("an epoch without batches has no metrics")
        return Metrics(self.loss_sum / self.count, self.correct / self.count, self.count)


def run_epoch(step: Callable[[np.ndarray, np.ndarray], tuple[float, int]],
              batches: Iterable[tuple[np.ndarray, np.ndarray]],
              progress: Callable[[float], None] | None = None) -> Metrics:
    """Apply `step(images, labels) -> (loss, correct)` to every batch; both trainers'
    `train_epoch` is this loop around their own `train_step`."""
    acc = EpochAccumulator()
    for x, y in batches:
        loss, correct = step(x, y)
        acc.add(loss, correct, len(y))
        if progress is not None:
            progress(loss)
    return acc.result()


def initial_weights(spec: ResNetSpec, seed: int) -> dict[str, np.ndarray]:
    """Canonical float32 starting weights drawn with numpy from `seed`, the same for
    both frameworks (their own initialisers draw different numbers from one seed,
    trap 12). The scheme is torchvision's, which both builders mirror: He-normal
    (fan-out) convs, zero conv biases, BatchNorm at identity (gamma 0 closing each
    block with zero_init_last_bn), nn.Linear's U(-1/sqrt(in), 1/sqrt(in)) classifier.
    """
    plan = make_plan(spec)
    zero_gamma = {f"{b.last_bn.name}.weight" for b in plan.blocks() if b.last_bn} if spec.zero_init_last_bn else set()
    shapes = {name: shape for name, shape, _ in plan.tensors()}
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        kind = name.rsplit(".", 1)[1]
        if len(shape) == 4:  # conv (out, in/groups, k, k): fan-out = out * k * k
            value = rng.normal(0.0, math.sqrt(2.0 / (shape[0] * shape[2] * shape[3])), shape)
        elif name.startswith("fc."):  # the classifier, (out, in) and (out,)
            bound = 1.0 / math.sqrt(shapes["fc.weight"][1])
            value = rng.uniform(-bound, bound, shape)
        elif kind in ("weight", "running_var"):
            value = np.zeros(shape) if name in zero_gamma else np.ones(shape)
        else:  # BN beta and running mean, conv biases
            value = np.zeros(shape)
        out[name] = value.astype(np.float32)
    return out


def check_optimizer_state(spec: ResNetSpec, state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{canonical weight name: momentum buffer} of a saved optimizer state, validated.

    A state is empty (no step taken yet, or no momentum) or holds one finite buffer,
    in PyTorch layout, per trainable canonical weight, named `momentum.<name>`;
    anything else is one WeightsError listing every problem.
    """
    if not state:
        return {}
    shapes = {name: shape for name, shape, trainable in make_plan(spec).tensors() if trainable}
    expected = {MOMENTUM_PREFIX + name for name in shapes}
    problems = []
    if missing := sorted(expected - set(state)):
        problems.append(f"missing {len(missing)}: {', '.join(missing[:4])}")
    if unexpected := sorted(set(state) - expected):
        problems.append(f"unexpected {len(unexpected)}: {', '.join(unexpected[:4])}")
    out = {}
    for name, shape in shapes.items():
        value = state.get(MOMENTUM_PREFIX + name)
        if value is None:
            continue
        if not isinstance(value, np.ndarray) or value.shape != shape or not np.issubdtype(value.dtype, np.floating):
            problems.append(f"{MOMENTUM_PREFIX}{name} is {getattr(value, 'shape', type(value).__name__)} "
                            f"{getattr(value, 'dtype', '')}, expected a float array of shape {shape}")
        elif not np.isfinite(value).all():
            problems.append(f"{MOMENTUM_PREFIX}{name} holds NaN/Inf values")
        else:
            out[name] = value
    if problems:
        raise WeightsError(f"optimizer state does not fit spec {spec.name!r}: " + "; ".join(problems))
    return out
