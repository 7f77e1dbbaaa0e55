"""Training parity: one spec, one set of initial weights, one batch order, trained in
PyTorch and in Keras, follows one trajectory (docs/training.md)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch

import resnet_keras as rk
import resnet_torch as rt
from resnet_keras import training as kt
from resnet_keras.layers import UnbiasedBatchNormalization, make_layers
from resnet_torch import training as tt
from resnet_torch.layers import BiasedBatchNorm2d, make_layer
from shared_specs import BatchNormSpec, ResNetSpec, SpecError, StageSpec, StemSpec, WeightsError, get_spec
from shared_specs.plan import BatchNorm
from shared_specs.training import (
    MOMENTUM_PREFIX,
    Augment,
    SGDConfig,
    classification_metrics,
    epoch_batches,
    epoch_order,
    initial_weights,
    shard,
)
from support import BACKEND, assert_float32_losses_close, assert_float32_run_close

# Small enough for seconds per run, yet every kind of layer that trains: BN in the
# stem, in blocks and in a projection shortcut, a strided stage, the classifier.
TINY = ResNetSpec(name="tiny", block="basic", stages=(StageSpec(1, 4, 1), StageSpec(1, 8, 2)),
                  stem=StemSpec(widths=(4,), kernel_size=3, stride=1, pool="none"), num_classes=5)
# Pre-activation bottlenecks (post_bn, conv biases, strided identity shortcut) with
# Keras's biased running variance: the other branch of every builder choice here.
TINY_V2 = ResNetSpec(name="tiny_v2", block="bottleneck", preactivation=True, stride_position="last",
                     shortcut="B-subsample", conv_bias="unnormalized", stages=(StageSpec(2, 4, 2), StageSpec(1, 8, 1)),
                     stem=StemSpec(widths=(8,), kernel_size=3, stride=1, norm=False, pool="none"),
                     batchnorm=BatchNormSpec(1.001e-5, 0.99, "biased"), num_classes=5)
# Weight decay 1e-3 (not 1e-4) so that coupled vs decoupled decay shows within 12 steps.
SGD = SGDConfig(lr=0.1, momentum=0.9, weight_decay=1e-3)

# Keras computes in float64 end to end on the TensorFlow backend only (on JAX and torch,
# keras.backend.result_type maps 64-bit results to 32 bits, so BatchNorm and the loss run in
# float32: trap 16); the float64 tests run in the TensorFlow process of `make test`.
only_tf = pytest.mark.only_on("tensorflow")
# float64 leaves only rounding: ~1e-16 per operation, ~1e-14 after 12 steps of this well-
# conditioned training (float32 rounding, 2^29 times coarser, moves it by ~1e-6 of a tensor's
# scale, so the amplification is ~10; on any CPU). 1e-8 leaves 10^6 of margin and is 10^5
# finer than any wrong rule (decoupled decay: 2e-2, below).
F64_TRAINING = 1e-8


def _data(spec: ResNetSpec, n: int = 48, dtype: type = np.float64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return rng.normal(size=(n, spec.in_channels, 16, 16)).astype(dtype), rng.integers(0, spec.num_classes, n)


def _build(package, spec: ResNetSpec, dtype: str):  # type: ignore[no-untyped-def]
    """`spec` in `package` (rt or rk), holding the seeded float32 start (cast to `dtype`)."""
    model = package.build(spec, dtype=getattr(torch, dtype) if package is rt else dtype)
    package.import_weights(model, {k: v.astype(dtype) for k, v in initial_weights(spec, 0).items()})
    return model


def _train(package, training, spec: ResNetSpec, config: SGDConfig, dtype: str, epochs: int = 2,  # type: ignore[no-untyped-def]
           lr_drop_epoch: int = 1):
    """One framework's run: 12 steps with the default data; returns the model, its optimizer,
    the per-step (loss, correct) and the final state (weights and momentum buffers)."""
    model = _build(package, spec, dtype)
    optimizer = training.make_optimizer(model, config)
    images, labels = _data(spec, dtype=np.dtype(dtype).type)
    steps = []
    for epoch in range(epochs):
        # a learning-rate change: where Keras's lr-inside-the-buffer would part from torch (trap 10)
        training.set_learning_rate(optimizer, config.lr * (0.5 if epoch >= lr_drop_epoch else 1.0))
        for x, y in epoch_batches(images, labels, 8, seed=3, epoch=epoch, augment=Augment(pad=2)):
            steps.append(training.train_step(model, optimizer, x, y))
    return model, optimizer, steps, {**package.export_weights(model), **training.optimizer_state(model, optimizer)}


def _max_rel(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    """Per tensor: max |a - b| relative to max |a|, floored at 1e-6. The floor is for
    conv biases that feed a BatchNorm (pre-activation nets): their gradient is zero in
    exact arithmetic, so they hold only rounding residue of ~1e-17 in either framework."""
    assert a.keys() == b.keys()
    return {k: float(np.abs(a[k] - b[k]).max() / max(np.abs(a[k]).max(), 1e-6)) for k in a}


@only_tf
@pytest.mark.parametrize("spec, config", [(TINY, SGD), (TINY_V2, SGD.__class__(**{**SGD.to_dict(), "nesterov": True}))],
                         ids=["basic-unbiased", "preact-biased-nesterov"])
def test_float64_training_follows_torch(spec: ResNetSpec, config: SGDConfig) -> None:
    torch_model, _, torch_steps, torch_state = _train(rt, tt, spec, config, "float64")
    _, _, keras_steps, keras_state = _train(rk, kt, spec, config, "float64")
    assert len(torch_steps) == len(keras_steps) == 12
    for step, ((t_loss, t_correct), (k_loss, k_correct)) in enumerate(zip(torch_steps, keras_steps)):
        assert abs(k_loss - t_loss) <= F64_TRAINING * abs(t_loss), f"step {step}: loss {k_loss} vs {t_loss}"
        assert k_correct == t_correct, f"step {step}"
    apart = _max_rel(torch_state, keras_state)
    assert max(apart.values()) < F64_TRAINING, sorted(apart.items(), key=lambda kv: -kv[1])[:3]
    assert any(k.endswith("running_var") for k in apart)  # BN statistics are among them
    buffers = [k for k in apart if k.startswith(MOMENTUM_PREFIX)]
    assert len(buffers) == sum(1 for _ in torch_model.parameters())  # and a momentum buffer per parameter


@pytest.mark.keras_backend
def test_float32_training_stays_within_bound() -> None:
    # Each framework in float32, and the same training in float64 (torch's: exact float64 on
    # every backend, and equal to Keras's on TensorFlow to 1e-8, as above) as the truth. Keras's
    # float32 run is held to F32_RUN_FACTOR times torch's own float32 distance from the truth
    # (support.py derives it), per step for the loss and per tensor for weights and buffers;
    # a wrong rule (decoupled decay, Keras's SGD) misses by 1e-2 of a tensor's scale or more.
    _, _, torch_steps, torch_state = _train(rt, tt, TINY, SGD, "float32")
    _, _, keras_steps, keras_state = _train(rk, kt, TINY, SGD, "float32")
    _, _, truth_steps, truth_state = _train(rt, tt, TINY, SGD, "float64")
    losses = [np.array([loss for loss, _ in steps]) for steps in (keras_steps, torch_steps, truth_steps)]
    assert_float32_losses_close(*losses, f"Keras ({BACKEND}) vs torch, float32")
    assert_float32_run_close(keras_state, torch_state, truth_state, f"Keras ({BACKEND}) vs torch, float32")


@pytest.mark.keras_backend
@pytest.mark.parametrize("running_var", ["unbiased", "biased"])
def test_batchnorm_running_statistics(running_var: str) -> None:
    op = BatchNorm("bn", 3, 1e-5, 0.9, running_var)  # type: ignore[arg-type]
    torch_bn, keras_bn = make_layer(op).train(), make_layers(op)[0]
    assert isinstance(torch_bn, BiasedBatchNorm2d) == (running_var == "biased")
    assert isinstance(keras_bn, UnbiasedBatchNormalization) == (running_var == "unbiased")
    rng = np.random.default_rng(0)
    mean, var = np.zeros(3), np.ones(3)  # both layers' initial statistics
    for _ in range(3):
        x = (rng.normal(size=(2, 3, 4, 4)) * [[[[0.5]], [[2.0]], [[1.0]]]] + 1.0).astype(np.float32)
        torch_bn(torch.from_numpy(x))
        keras_bn(x.transpose(0, 2, 3, 1), training=True)
        batch_var = x.astype(np.float64).var(axis=(0, 2, 3))
        if running_var == "unbiased":
            batch_var *= 32 / 31  # n = 2 * 4 * 4 values per channel
        mean = 0.9 * mean + 0.1 * x.astype(np.float64).mean(axis=(0, 2, 3))
        var = 0.9 * var + 0.1 * batch_var
    # Each statistic is a float32 sum of n = 32 values; in any order (any SIMD width) its error
    # is at most n * 2^-24 = 1.9e-6 of the sum of |values|, which is within 2x of |sum| here
    # (means 1, spreads up to 2), and 3 running averages add 3 roundings: below 5e-6, so
    # rtol 1e-5 holds on any CPU and is still 3000x finer than the n/(n-1) = 1.03 factor the
    # two modes differ by. atol: the same relative bound on means of size ~0.1-1.
    np.testing.assert_allclose(torch_bn.running_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(torch_bn.running_var.numpy(), var, rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras_bn.moving_mean), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras_bn.moving_variance), var, rtol=1e-5)


@only_tf
def test_optimizer_state_moves_between_frameworks() -> None:
    # 6 steps in torch, then both frameworks continue from the torch state for 6 more.
    images, labels = _data(TINY)
    batches = list(epoch_batches(images, labels, 8, seed=1, epoch=0))
    torch_model = _build(rt, TINY, "float64")
    t_opt = tt.make_optimizer(torch_model, SGD)
    assert tt.optimizer_state(torch_model, t_opt) == {}  # torch creates buffers at the first step
    for x, y in batches:
        tt.train_step(torch_model, t_opt, x, y)
    keras_model = rk.build(TINY, dtype="float64")
    rk.import_weights(keras_model, rt.export_weights(torch_model))
    k_opt = kt.make_optimizer(keras_model, SGD)
    kt.load_optimizer_state(keras_model, k_opt, tt.optimizer_state(torch_model, t_opt))
    for x, y in batches:
        t_loss, _ = tt.train_step(torch_model, t_opt, x, y)
        k_loss, _ = kt.train_step(keras_model, k_opt, x, y)
        assert abs(k_loss - t_loss) <= F64_TRAINING * t_loss  # float64 rounding only, as above
    assert max(_max_rel(rt.export_weights(torch_model), rk.export_weights(keras_model)).values()) < F64_TRAINING


@pytest.mark.keras_backend
def test_optimizer_state_is_validated_all_or_nothing() -> None:
    torch_model, keras_model = rt.build(TINY), rk.build(TINY)
    t_opt, k_opt = tt.make_optimizer(torch_model, SGD), kt.make_optimizer(keras_model, SGD)
    good = {f"momentum.{k}": np.ones_like(v) for k, v in rt.export_weights(torch_model).items()
            if not k.endswith(("running_mean", "running_var"))}
    bad = dict(good)
    del bad["momentum.fc.bias"]
    bad["momentum.fc.weight"] = np.ones((5, 7), np.float32)
    bad["momentum.nope"] = np.ones(1, np.float32)
    for load, model, opt in ((tt.load_optimizer_state, torch_model, t_opt),
                             (kt.load_optimizer_state, keras_model, k_opt)):
        with pytest.raises(WeightsError, match=r"missing 1: momentum.fc.bias.*unexpected 1: momentum.nope.*fc.weight"):
            load(model, opt, bad)
    assert tt.optimizer_state(torch_model, t_opt) == {}  # nothing was set
    assert all(np.all(keras.ops.convert_to_numpy(m) == 0) for m in k_opt.momentums)
    kt.load_optimizer_state(keras_model, k_opt, good)
    assert all(np.all(v == 1) for v in kt.optimizer_state(keras_model, k_opt).values())


@only_tf
def test_keras_defaults_part_from_torch() -> None:
    """The traps TorchSGD and make_optimizer handle, measured: Keras's SGD (trap 10) and a
    float32 learning rate on a float64 model (trap 11) leave the torch trajectory.

    Everything runs in float64 from a seeded start, so the distances below are properties of
    the exact computation (rounding moves them by ~1e-14), the same on every CPU."""
    images, labels = _data(TINY)
    batches = list(epoch_batches(images, labels, 8, seed=2, epoch=0))
    torch_model = _build(rt, TINY, "float64")
    start = rt.export_weights(torch_model)
    t_opt = tt.make_optimizer(torch_model, SGD)
    for x, y in batches:
        tt.train_step(torch_model, t_opt, x, y)
    reference = rt.export_weights(torch_model)

    def keras_run(optimizer: keras.optimizers.Optimizer) -> float:
        model = rk.build(TINY, dtype="float64")
        rk.import_weights(model, start)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")
        model.compile(optimizer=optimizer, loss=loss)
        for x, y in batches:
            model.train_on_batch(x.transpose(0, 2, 3, 1), y)
        return max(_max_rel(reference, rk.export_weights(model)).values())

    keras_sgd = keras_run(keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=1e-3))
    float32_lr = keras_run(kt.TorchSGD(0.1, momentum=0.9, weight_decay=1e-3))  # built under floatx float32
    # decoupled decay is another update: 2e-2 of a tensor's scale after 6 steps, 20x the 1e-3 asked
    assert keras_sgd > 1e-3, keras_sgd
    # 0.1 stored as 0.10000000149 (1.49e-8 relative) scales every update by that much: the
    # weights move by 1.49e-8 times the share of their change in their scale, here ~1e-8;
    # 10x either way tells it from float64 rounding (1e-14) and from a wrong rule (1e-3)
    assert 1e-9 < float32_lr < 1e-6, float32_lr


def test_trainers_stay_within_their_framework() -> None:
    """resnet_torch never imports Keras/TensorFlow/JAX, resnet_keras never imports torch,
    the training and data-parallel modules included."""
    import os
    import subprocess
    import sys

    checks = {
        "resnet_torch": ("keras", "tensorflow", "jax"),
        "resnet_keras": ("torch",),
    }
    for package, banned in checks.items():
        code = (f"import sys, {package}, {package}.training, {package}.distributed, {package}.layers; "
                f"print([m for m in {list(banned)} if m in sys.modules])")
        env = {**os.environ, "KERAS_BACKEND": "jax"}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().splitlines()[-1] == "[]", (package, done.stdout)


def test_spec_running_var_field() -> None:
    assert get_spec("resnet50").batchnorm.running_var == "unbiased"  # torch.nn.BatchNorm2d
    assert get_spec("resnet50_v1").batchnorm.running_var == "biased"  # trained with keras.layers.BatchNormalization
    assert get_spec("tutorial_keras_resnet18").batchnorm.running_var == "biased"
    spec = get_spec("cifar_resnet20", batchnorm={"running_var": "biased"})
    assert ResNetSpec.from_json(spec.to_json()) == spec
    assert spec.to_dict()["batchnorm"]["running_var"] == "biased"
    with pytest.raises(SpecError, match=r"batchnorm.running_var must be one of \['unbiased', 'biased'\], got 'sample'"):
        get_spec("cifar_resnet20", batchnorm={"running_var": "sample"})


@pytest.mark.keras_backend
def test_builders_honour_running_var() -> None:
    for running_var, torch_type, keras_type in (("unbiased", torch.nn.BatchNorm2d, UnbiasedBatchNormalization),
                                                ("biased", BiasedBatchNorm2d, keras.layers.BatchNormalization)):
        spec = TINY.replace(batchnorm={"running_var": running_var})
        torch_bns = [m for m in rt.build(spec).modules() if isinstance(m, torch.nn.BatchNorm2d)]
        keras_bns = [layer for layer in rk.build(spec).layers if isinstance(layer, keras.layers.BatchNormalization)]
        assert len(torch_bns) == len(keras_bns) == 6
        assert {type(m) for m in torch_bns} == {torch_type}
        assert {type(layer) for layer in keras_bns} == {keras_type}


def test_sgd_config_is_validated() -> None:
    assert SGDConfig.from_dict(SGD.to_dict()) == SGD
    schedule = SGDConfig(lr=0.1, milestones=(2, 4), gamma=0.1)
    assert [round(schedule.lr_at(e), 12) for e in range(5)] == [0.1, 0.1, 0.01, 0.01, 0.001]
    for bad, message in (({"lr": 0}, "sgd.lr must be > 0"), ({"momentum": 1.0}, r"sgd.momentum must be in \[0, 1\)"),
                         ({"nesterov": True, "momentum": 0.0}, "nesterov needs momentum"),
                         ({"milestones": (3, 2)}, "strictly increasing"), ({"weight_decay": float("nan")}, "finite"),
                         ({"lr_decay": 0.1}, r"unknown sgd config key\(s\) \['lr_decay'\]")):
        with pytest.raises(SpecError, match=message):
            SGDConfig.from_dict({**SGD.to_dict(), **bad})


def test_batch_order_is_a_function_of_seed_and_epoch() -> None:
    images, labels = np.arange(20 * 1 * 4 * 4, dtype=np.float32).reshape(20, 1, 4, 4), np.arange(20)
    first = [y for _, y in epoch_batches(images, labels, 6, seed=5, epoch=2, augment=Augment(pad=1))]
    again = [y for _, y in epoch_batches(images, labels, 6, seed=5, epoch=2, augment=Augment(pad=1))]
    assert [len(y) for y in first] == [6, 6, 6]  # the last 2 examples wait for another epoch
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert len(set(np.concatenate(first).tolist())) == 18
    assert not np.array_equal(np.concatenate(first), np.concatenate([idx for idx in epoch_order(20, 6, 5, 3)]))
    x1 = np.concatenate([x for x, _ in epoch_batches(images, labels, 6, seed=5, epoch=2, augment=Augment(pad=1))])
    x2 = np.concatenate([x for x, _ in epoch_batches(images, labels, 6, seed=5, epoch=2, augment=Augment(pad=1))])
    assert np.array_equal(x1, x2) and x1.shape == (18, 1, 4, 4)
    with pytest.raises(SpecError, match="batch size must be in"):
        epoch_order(5, 6, 0, 0)


def test_augment_crops_and_flips() -> None:
    image = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    seen = {x.tobytes() for e in range(200) for x, _ in epoch_batches(image, np.zeros(1, int), 1, seed=0, epoch=e,
                                                                       augment=Augment(pad=1))}
    padded = np.pad(image[0, 0], 1)
    crops = [padded[dy : dy + 4, dx : dx + 4] for dy in range(3) for dx in range(3)]
    expected = {np.ascontiguousarray(c[:, ::f]).reshape(1, 1, 4, 4).tobytes() for c in crops for f in (1, -1)}
    assert seen == expected and len(expected) == 18  # 3 x 3 offsets, flipped or not


@pytest.mark.keras_backend
def test_trainers_refuse_a_softmax_head() -> None:
    spec = TINY.replace(head_activation="softmax")
    for package, training in ((rt, tt), (rk, kt)):
        with pytest.raises(SpecError, match="training needs a classifier that outputs logits"):
            training.make_optimizer(package.build(spec), SGD)
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6]])
    m = classification_metrics(probabilities, np.array([0, 0]), from_logits=False)
    assert m.loss == pytest.approx(-(np.log(0.9) + np.log(0.4)) / 2) and m.accuracy == 0.5


def test_shard_and_metrics() -> None:
    x, y = np.arange(8).reshape(8, 1, 1, 1), np.arange(8)
    assert shard(x, y, 1, 2)[1].tolist() == [4, 5, 6, 7]
    with pytest.raises(SpecError, match="does not split evenly"):
        shard(x[:7], y[:7], 0, 2)
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    m = classification_metrics(logits, np.array([0, 1, 1]))
    expected = np.mean([np.log1p(np.exp(-2.0)), np.log1p(np.exp(-1.0)), np.log1p(np.exp(3.0))])
    assert m.accuracy == pytest.approx(2 / 3) and m.loss == pytest.approx(expected, rel=1e-12) and m.count == 3
