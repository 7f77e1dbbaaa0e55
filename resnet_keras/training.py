"""Train and evaluate a Keras ResNet (the PyTorch twin is resnet_torch/training.py).

Keras's own SGD differs from torch.optim.SGD (trap 10): its weight decay is
decoupled and its learning rate sits inside the momentum buffer. `TorchSGD` is
torch's rule as a Keras optimizer. Training runs through Keras's compiled
`train_on_batch`, so it works on every backend and under keras.distribution.
Batches arrive as NCHW numpy (the shared pipeline's layout) and are transposed here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import keras
import numpy as np

from resnet_keras.build import ResNet
from resnet_keras.weights import canonical_variables
from shared_specs import SpecError, WeightsError
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


@keras.saving.register_keras_serializable(package="resnet_keras")
class TorchSGD(keras.optimizers.Optimizer):
    """SGD with torch.optim.SGD's update rule (dampening 0):

        g = grad + weight_decay * w;  b = momentum * b + g;  w -= lr * (g + momentum * b if nesterov else b)

    keras.optimizers.SGD instead keeps m = momentum * m - lr * g and decays weights
    separately (w -= lr * weight_decay * w), so the two part ways from the first
    step with weight decay, and from the first change of learning rate without.
    The buffers hold torch's b, so they move between frameworks unchanged.
    """

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False, name: str = "torch_sgd", **kwargs: Any) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= momentum < 1.0 or weight_decay < 0.0 or (nesterov and momentum == 0.0):
            raise ValueError(f"TorchSGD needs 0 <= momentum < 1, weight_decay >= 0 and momentum > 0 for nesterov; "
                             f"got momentum={momentum}, weight_decay={weight_decay}, nesterov={nesterov}")
        # Python floats: cast to each variable's dtype in update_step, exact in float64 (trap 11).
        self.momentum, self.l2_weight_decay, self.nesterov = float(momentum), float(weight_decay), bool(nesterov)

    def build(self, variables: list[Any]) -> None:
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum") if self.momentum else []

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        lr = keras.ops.cast(learning_rate, variable.dtype)
        g = keras.ops.cast(gradient, variable.dtype)
        if self.l2_weight_decay:
            g = g + variable * self.l2_weight_decay
        if self.momentum:
            b = self.momentums[self._get_variable_index(variable)]
            new_b = b * self.momentum + g
            self.assign(b, new_b)
            g = g + new_b * self.momentum if self.nesterov else new_b
        self.assign_sub(variable, g * lr)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "momentum": self.momentum, "weight_decay": self.l2_weight_decay,
                "nesterov": self.nesterov}


@contextlib.contextmanager
def _floatx(dtype: str) -> Iterator[None]:
    # Keras creates an optimizer's learning rate, a loss's computation and the loss
    # tracker in floatx (float32 by default): a float64 model would take float32 steps
    # (lr 0.1 is 0.10000000149 in float32, trap 11). Build them in the model's dtype.
    previous = keras.config.floatx()
    keras.config.set_floatx(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(previous)


# Keras decides mixed precision when a model is built (each layer's dtype policy), not per step.
_POLICIES = {"fp32": None, "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def model_dtype(options: StepOptions) -> str | None:
    """The `dtype` to build the model with for `options.precision` (a mixed-precision
    policy: float32 variables, bf16/fp16 compute); None for fp32."""
    return _POLICIES[options.precision]


def make_optimizer(model: ResNet, config: SGDConfig, options: StepOptions | None = None) -> TorchSGD:
    """A TorchSGD over every trainable variable, and `model` compiled to train with it
    on cross-entropy from logits (trap 13: Keras's default expects probabilities).

    `options.compile` asks for jit_compile=True (XLA on TensorFlow, where Keras's
    default runs CPUs without it; torch.compile on the torch backend); otherwise Keras
    decides ("auto": JAX always compiles). `options.precision` must match the policy
    the model was built with (`model_dtype`); fp16 wraps the optimizer in Keras's
    LossScaleOptimizer. `channels_last` changes nothing: Keras is NHWC already.
    """
    check_trainable(model.spec)
    options = options or StepOptions()
    built, wanted = _policy(model), model_dtype(options)
    if built != wanted and (wanted is not None or built.startswith("mixed")):  # fp32: float32 or float64
        raise SpecError(f"precision {options.precision!r} needs the model built with "
                        f"dtype={model_dtype(options)!r}; it was built with {built!r}")
    with _floatx(_dtype(model)):
        optimizer = TorchSGD(config.lr, config.momentum, config.weight_decay, config.nesterov)
        scaled = keras.optimizers.LossScaleOptimizer(optimizer) if options.precision == "fp16" else optimizer
        model.compile(
            optimizer=scaled,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            jit_compile=True if options.compile else "auto",
        )
    scaled.build(model.trainable_variables)
    return optimizer


def _policy(model: ResNet) -> str:
    """The dtype policy the model's layers were built with ("float32", "mixed_bfloat16", ...)."""
    return next(layer for layer in model.layers if layer.weights).dtype_policy.name


def set_learning_rate(optimizer: TorchSGD, lr: float) -> None:
    optimizer.learning_rate = lr


def _dtype(model: ResNet) -> str:
    """The dtype the model was built in (its variables'; ResNet passes `dtype` to each layer)."""
    return keras.backend.standardize_dtype(model.trainable_variables[0].dtype)


def _nhwc(images: np.ndarray, model: ResNet) -> np.ndarray:
    return np.ascontiguousarray(images.transpose(0, 2, 3, 1), dtype=_dtype(model))


def train_step(model: ResNet, optimizer: TorchSGD, images: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
    """One SGD step on one batch in training mode; returns (mean loss, correct predictions)."""
    if optimizer not in (model.optimizer, getattr(model.optimizer, "inner_optimizer", None)):
        raise ValueError("the model is not compiled with this optimizer; create it with make_optimizer(model, ...)")
    logs = model.train_on_batch(_nhwc(images, model), np.asarray(labels, dtype=np.int64), return_dict=True)
    return float(logs["loss"]), int(round(float(logs["accuracy"]) * len(labels)))


def train_epoch(model: ResNet, optimizer: TorchSGD, batches: Iterable[tuple[np.ndarray, np.ndarray]],
                progress: Callable[[float], None] | None = None) -> Metrics:
    """`train_step` over every batch; example-weighted mean loss and accuracy."""
    return run_epoch(lambda x, y: train_step(model, optimizer, x, y), batches, progress)


def predict(model: ResNet, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Inference-mode outputs (moving BatchNorm statistics) as float64 numpy."""
    out = [keras.ops.convert_to_numpy(model(_nhwc(images[i : i + batch_size], model), training=False))
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out).astype(np.float64)


def evaluate(model: ResNet, images: np.ndarray, labels: np.ndarray, batch_size: int = 256) -> Metrics:
    """Mean cross-entropy and accuracy in inference mode (float64 numpy, shared_specs.training)."""
    return classification_metrics(predict(model, images, batch_size), labels,
                                  from_logits=model.spec.head_activation == "none")


def optimizer_state(model: ResNet, optimizer: TorchSGD) -> dict[str, np.ndarray]:
    """Momentum buffers under canonical names in PyTorch layout; empty without momentum."""
    if not optimizer.momentums:
        return {}
    return {
        MOMENTUM_PREFIX + name: np.array(to_canonical(keras.ops.convert_to_numpy(
            optimizer.momentums[optimizer._get_variable_index(variable)])), copy=True)
        for name, variable, _, to_canonical in canonical_variables(model) if variable.trainable
    }


def load_optimizer_state(model: ResNet, optimizer: TorchSGD, state: Mapping[str, np.ndarray]) -> None:
    """Set momentum buffers from `optimizer_state` output (either framework's); all-or-nothing."""
    checked = check_optimizer_state(model.spec, state)
    if not checked:
        return
    if not optimizer.momentums:
        raise WeightsError("optimizer state holds momentum buffers but this optimizer has momentum 0")
    for name, variable, to_keras, _ in canonical_variables(model):
        if variable.trainable:
            buffer = optimizer.momentums[optimizer._get_variable_index(variable)]
            buffer.assign(np.array(to_keras(checked[name]), dtype=buffer.dtype, order="C", copy=True))
