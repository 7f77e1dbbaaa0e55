"""Keras layers per plan op (the PyTorch twin is resnet_torch/layers.py).

Keras pads 'same' convolutions asymmetrically where the stride is 2 (trap 4), so
symmetric PyTorch padding of a strided conv becomes an explicit ZeroPadding2D +
'valid' conv (stride 1 keeps 'same', symmetric there). Max-pool padding is
explicit too: -inf as PyTorch pads, or zeros as keras.applications does (trap 5).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import random
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
from keras import layers

from shared_specs import plan as P


def keras_name(canonical: str) -> str:
    """The Keras layer name of a canonical name: dots become underscores (the torch
    backend rejects dots in names): `layer1.0.downsample.0` -> `layer1_0_downsample_0`."""
    return canonical.replace(".", "_")


@keras.saving.register_keras_serializable(package="resnet_keras")
class ConstantPadding2D(layers.Layer):
    """Pads H and W with `value`: `padding` pixels on every side, or Keras 'same' for a
    `kernel_size`/`stride` window (what MaxPooling2D(padding='same') does with -inf)."""

    def __init__(self, padding: int | str, value: float, kernel_size: int = 1, stride: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.padding, self.value, self.kernel_size, self.stride = padding, float(value), kernel_size, stride

    def _pads(self, size: Any) -> tuple[Any, Any]:
        if self.padding != "same":
            return int(self.padding), int(self.padding)
        total = (-(-size // self.stride) - 1) * self.stride + self.kernel_size - size  # works on symbolic sizes
        total = max(total, 0) if isinstance(total, int) else keras.ops.maximum(total, 0)
        return total // 2, total - total // 2

    def call(self, x: Any) -> Any:
        shape = keras.ops.shape(x)
        return keras.ops.pad(x, [(0, 0), self._pads(shape[1]), self._pads(shape[2]), (0, 0)],
                             constant_values=self.value)

    def compute_output_shape(self, shape: tuple[Any, ...]) -> tuple[Any, ...]:
        n, h, w, c = shape
        grow = [None if s is None else s + sum(self._pads(s)) for s in (h, w)]
        return (n, *grow, c)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "padding": self.padding, "value": self.value,
                "kernel_size": self.kernel_size, "stride": self.stride}


@keras.saving.register_keras_serializable(package="resnet_keras")
class ChannelPad(layers.Layer):
    """Appends `extra` zero channels (option A shortcut)."""

    def __init__(self, extra: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.extra = extra

    def call(self, x: Any) -> Any:
        return keras.ops.pad(x, [(0, 0), (0, 0), (0, 0), (0, self.extra)])

    def compute_output_shape(self, shape: tuple[Any, ...]) -> tuple[Any, ...]:
        return (*shape[:3], None if shape[3] is None else shape[3] + self.extra)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "extra": self.extra}


@keras.saving.register_keras_serializable(package="resnet_keras")
class UnbiasedBatchNormalization(layers.BatchNormalization):
    """BatchNormalization that folds the UNBIASED batch variance (times n/(n-1), n values
    per channel) into `moving_variance`, as torch.nn.BatchNorm2d does (spec
    `batchnorm.running_var="unbiased"`, trap 8).

    Keras folds in the biased one; normalisation is the same in both, so only the moving
    statistics, and with them inference outputs, differ. Under keras.distribution the
    batch shape is the global one, so n counts every replica's values.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.renorm or self.synchronized:
            raise ValueError("UnbiasedBatchNormalization supports neither renorm nor synchronized=True")

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        if not (training and self.trainable) or mask is not None:
            return super().call(inputs, training=training, mask=mask)
        x = keras.ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        # Two passes, as torch does (trap 22): the mean, then the mean of squared deviations, which also
        # normalise. keras.ops.moments on the torch backend computes E[x^2] - E[x]^2, which cancels in
        # float32 where a channel's mean dwarfs its spread (up to 8e-4 of the output scale in training
        # mode at batch 2, against ~1e-6 this way); keras.ops.var there is a strided reduction that cost
        # 20% of a resnet50 train step (benchmarks/bench_train.py).
        mean = keras.ops.mean(x, axis=self._reduction_axes, keepdims=True)
        centered = x - mean
        variance = keras.ops.mean(keras.ops.square(centered), axis=self._reduction_axes, keepdims=True)
        n = keras.ops.cast(math.prod(keras.ops.shape(x)[a] for a in self._reduction_axes), x.dtype)
        unbiased = variance * (n / keras.ops.maximum(n - 1.0, 1.0))  # n == 1: variance is 0 anyway
        decay = self.momentum
        self.moving_mean.assign(keras.ops.cast(self.moving_mean, x.dtype) * decay
                                + keras.ops.reshape(mean, (-1,)) * (1.0 - decay))
        self.moving_variance.assign(keras.ops.cast(self.moving_variance, x.dtype) * decay
                                    + keras.ops.reshape(unbiased, (-1,)) * (1.0 - decay))
        scale = keras.ops.rsqrt(variance + self.epsilon)
        if self.gamma is not None:
            scale = scale * keras.ops.reshape(keras.ops.cast(self.gamma, x.dtype), keras.ops.shape(mean))
        out = centered * scale
        if self.beta is not None:
            out = out + keras.ops.reshape(keras.ops.cast(self.beta, x.dtype), keras.ops.shape(mean))
        return keras.ops.cast(out, self.compute_dtype)


@keras.saving.register_keras_serializable(package="resnet_keras")
class StandardizedConv2D(layers.Conv2D):
    """Conv2D with weight standardisation (BiT's StdConv2d): each output channel's kernel
    minus its mean, over sqrt(its biased variance + `standardize`), at every call."""

    def __init__(self, *args: Any, standardize: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.standardize = float(standardize)

    def convolution_op(self, inputs: Any, kernel: Any) -> Any:
        axes = (0, 1, 2)  # (kH, kW, in/groups) of each output channel
        mean = keras.ops.mean(kernel, axis=axes, keepdims=True)
        var = keras.ops.var(kernel, axis=axes, keepdims=True)
        return super().convolution_op(inputs, (kernel - mean) / keras.ops.sqrt(var + self.standardize))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "standardize": self.standardize}


@keras.saving.register_keras_serializable(package="resnet_keras")
class TwoPassGroupNormalization(layers.GroupNormalization):
    """GroupNormalization computed as torch.nn.GroupNorm computes it: each group's variance in
    two passes (the mean, then the mean squared deviation) and (x - mean) * rsqrt(var + eps).

    Keras's own layer takes ops.moments, which on the torch backend is E[x^2] - E[x]^2, and
    adds -mean * rsqrt(...) after scaling x: both cancel in float32 where a group's mean
    dwarfs its spread (trap 24, measured: 1e-3 of the output scale at a mean 100x the spread,
    as in a pre-activation network's residual stream, against 3e-6 this way)."""

    def _apply_normalization(self, reshaped_inputs: Any, input_shape: Any) -> Any:
        dtype = reshaped_inputs.dtype
        x = keras.ops.cast(reshaped_inputs, keras.backend.result_type(dtype, "float32"))
        axes = list(range(1, len(x.shape)))
        axes.pop(-2 if self.axis == -1 else self.axis - 1)  # keep the groups axis, as Keras does
        centred = x - keras.ops.mean(x, axis=axes, keepdims=True)
        variance = keras.ops.mean(keras.ops.square(centred), axis=axes, keepdims=True)
        out = centred * keras.ops.rsqrt(variance + self.epsilon)
        shape = self._create_broadcast_shape(input_shape)
        if self.scale:
            out = out * keras.ops.cast(keras.ops.reshape(self.gamma, shape), x.dtype)
        if self.center:
            out = out + keras.ops.cast(keras.ops.reshape(self.beta, shape), x.dtype)
        return keras.ops.cast(out, dtype)


class _ChannelParams(layers.Layer):
    """A layer owning per-channel vectors named as PyTorch names them (weight, bias, ...)."""

    def __init__(self, params: tuple[str, ...], zero_weight: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.params, self.zero_weight = tuple(params), zero_weight

    def build(self, input_shape: tuple[Any, ...]) -> None:
        channels = input_shape[-1]
        inits = {"weight": "zeros" if self.zero_weight else "ones", "bias": "zeros", "v": "ones", "tau": "zeros"}
        for param in self.params:
            setattr(self, param, self.add_weight(name=param, shape=(channels,), initializer=inits[param]))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "params": list(self.params), "zero_weight": self.zero_weight}


@keras.saving.register_keras_serializable(package="resnet_keras")
class EvoNormS0(_ChannelParams):
    """EvoNorm-S0 (the PyTorch twin is resnet_torch.layers.EvoNorm2dS0): x * sigmoid(v x) /
    group_std(x) * weight + bias, statistics per example over H, W and each group's channels;
    without `v` only x * weight + bias (timm's apply_act=False)."""

    def __init__(self, groups: int, epsilon: float, act: bool, **kwargs: Any) -> None:
        kwargs.setdefault("params", ("weight", "bias", "v") if act else ("weight", "bias"))
        super().__init__(**kwargs)
        self.groups, self.epsilon, self.act = groups, float(epsilon), act

    def call(self, x: Any) -> Any:
        if self.act:
            shape = keras.ops.shape(x)
            grouped = (shape[0], shape[1], shape[2], self.groups, shape[3] // self.groups)
            var = keras.ops.var(keras.ops.reshape(x, grouped), axis=(1, 2, 4), keepdims=True)  # biased, as torch's
            gated = keras.ops.reshape(x * keras.ops.sigmoid(x * self.v), grouped)
            x = keras.ops.reshape(gated / keras.ops.sqrt(var + self.epsilon), shape)
        return x * self.weight + self.bias

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "groups": self.groups, "epsilon": self.epsilon, "act": self.act}


@keras.saving.register_keras_serializable(package="resnet_keras")
class FilterResponseNorm(_ChannelParams):
    """Filter Response Normalisation with its TLU (the PyTorch twin is
    resnet_torch.layers.FilterResponseNorm2d): x / sqrt(mean over H, W of x^2 + epsilon) *
    weight + bias, then max(., tau) when `tlu`."""

    def __init__(self, epsilon: float, tlu: bool, **kwargs: Any) -> None:
        kwargs.setdefault("params", ("weight", "bias", "tau") if tlu else ("weight", "bias"))
        super().__init__(**kwargs)
        self.epsilon, self.tlu = float(epsilon), tlu

    def call(self, x: Any) -> Any:
        x = x * keras.ops.rsqrt(keras.ops.mean(keras.ops.square(x), axis=(1, 2), keepdims=True) + self.epsilon)
        x = x * self.weight + self.bias
        return keras.ops.maximum(x, self.tau) if self.tlu else x

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "epsilon": self.epsilon, "tlu": self.tlu}


@keras.saving.register_keras_serializable(package="resnet_keras")
class SqueezeExcite(layers.Layer):
    """Squeeze-excitation (the PyTorch twin is resnet_torch.layers.SqueezeExcite):
    x * sigmoid(fc2(relu(fc1(mean over H, W)))), fc1/fc2 1x1 Conv2Ds with bias."""

    def __init__(self, channels: int, reduced: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.channels, self.reduced = channels, reduced
        self.fc1 = layers.Conv2D(reduced, 1, kernel_initializer=_he_normal_fan_out(), dtype=self.dtype_policy,
                                 name="fc1")
        self.fc2 = layers.Conv2D(channels, 1, kernel_initializer=_he_normal_fan_out(), dtype=self.dtype_policy,
                                 name="fc2")

    def build(self, input_shape: tuple[Any, ...]) -> None:
        squeezed = (input_shape[0], 1, 1, self.channels)
        self.fc1.build(squeezed)
        self.fc2.build((input_shape[0], 1, 1, self.reduced))

    def call(self, x: Any) -> Any:
        s = self.fc2(keras.ops.relu(self.fc1(keras.ops.mean(x, axis=(1, 2), keepdims=True))))
        return x * keras.ops.sigmoid(s)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "channels": self.channels, "reduced": self.reduced}


@keras.saving.register_keras_serializable(package="resnet_keras")
class EfficientChannelAttention(layers.Layer):
    """ECA (the PyTorch twin is resnet_torch.layers.EfficientChannelAttention): x *
    sigmoid(a Conv1D over the channel axis of the channel means), zero-padded, no bias.
    The kernel is Conv1D's (k, 1, 1); PyTorch's Conv1d holds it as (1, 1, k)."""

    def __init__(self, kernel_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kernel_size = kernel_size

    def build(self, input_shape: tuple[Any, ...]) -> None:
        bound = 1.0 / math.sqrt(self.kernel_size)  # PyTorch's Conv1d default: U(+-1/sqrt(fan_in))
        self.kernel = self.add_weight(name="kernel", shape=(self.kernel_size, 1, 1),
                                      initializer=keras.initializers.RandomUniform(-bound, bound))

    def call(self, x: Any) -> Any:
        means = keras.ops.expand_dims(keras.ops.mean(x, axis=(1, 2)), -1)  # (N, C, 1): channels as steps
        s = keras.ops.conv(means, self.kernel, padding="same")  # odd k: (k - 1) // 2 zeros each side
        return x * keras.ops.sigmoid(keras.ops.expand_dims(keras.ops.squeeze(s, -1), (1, 2)))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package="resnet_keras")
class BlurPool2D(layers.Layer):
    """Anti-aliased downsampling (the PyTorch twin is resnet_torch.layers.BlurPool2d):
    reflect-pad 1, then the binomial [1, 2, 1] x [1, 2, 1] / 16 filter per channel with
    `stride`. The filter is a constant, not a weight."""

    def __init__(self, stride: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stride = stride

    def build(self, input_shape: tuple[Any, ...]) -> None:
        # a numpy constant of the static channel count: Keras's torch-backend ONNX export (a
        # TorchScript trace) cannot convert a depthwise conv whose kernel shape depends on the input
        taps = np.array([1.0, 2.0, 1.0]) / 4
        self.filter = np.tile(np.outer(taps, taps)[:, :, None, None], (1, 1, input_shape[-1], 1))

    def call(self, x: Any) -> Any:
        kernel = keras.ops.cast(self.filter, x.dtype)
        x = keras.ops.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="reflect")
        return keras.ops.depthwise_conv(x, kernel, strides=self.stride, padding="valid")

    def compute_output_shape(self, shape: tuple[Any, ...]) -> tuple[Any, ...]:
        n, h, w, c = shape
        return (n, *(None if s is None else (s - 1) // self.stride + 1 for s in (h, w)), c)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "stride": self.stride}


@keras.saving.register_keras_serializable(package="resnet_keras")
class GlobalPool2D(layers.Layer):
    """Global max, avgmax (0.5 * (avg + max)) or catavgmax ([avg, max] concatenated) pooling
    (the PyTorch twin is resnet_torch.layers.GlobalPool)."""

    def __init__(self, mode: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mode = mode

    def call(self, x: Any) -> Any:
        peak = keras.ops.max(x, axis=(1, 2))
        if self.mode == "max":
            return peak
        mean = keras.ops.mean(x, axis=(1, 2))
        return 0.5 * (mean + peak) if self.mode == "avgmax" else keras.ops.concatenate([mean, peak], axis=-1)

    def compute_output_shape(self, shape: tuple[Any, ...]) -> tuple[Any, ...]:
        c = shape[-1]
        return (shape[0], 2 * c if self.mode == "catavgmax" and c is not None else c)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


# False while a model is built whose weights are imported next (resnet_keras.build(initialize=False)).
_DRAW: contextvars.ContextVar[bool] = contextvars.ContextVar("resnet_keras_draw", default=True)


@contextlib.contextmanager
def initial_draws(enabled: bool) -> Iterator[None]:
    """Within `initial_draws(False)`, TorchInit returns zeros instead of drawing."""
    token = _DRAW.set(enabled)
    try:
        yield
    finally:
        _DRAW.reset(token)


@keras.saving.register_keras_serializable(package="resnet_keras")
class TorchInit(keras.initializers.Initializer):
    """torchvision's initial values, drawn with numpy: "he_normal_fan_out" is kaiming_normal_
    (mode="fan_out", ReLU gain) of the convs, "uniform" nn.Linear's U(-bound, bound).

    numpy rather than the backend's generator, for build time: jax.random compiles one
    program per shape (most of a resnet50's first build on JAX), and TensorFlow's normal
    kernel takes ~3x its uniform one, where keras.applications draws uniforms. Normals
    come from Box-Muller on float32 uniforms (twice as fast as numpy's standard_normal
    here; tails end at 5.6 sigma). The seed comes from Python's `random`, as Keras's own
    initialisers take theirs: keras.utils.set_random_seed makes builds repeatable, and
    alike on every backend. Under `initial_draws(False)` nothing is drawn: zeros.
    """

    def __init__(self, kind: str, bound: float = 0.0, seed: int | None = None) -> None:
        if kind not in ("he_normal_fan_out", "uniform"):
            raise ValueError(f"TorchInit kind must be 'he_normal_fan_out' or 'uniform', got {kind!r}")
        self.kind, self.bound = kind, float(bound)
        self.seed = random.randint(1, 10**9) if seed is None else int(seed)

    def __call__(self, shape: tuple[int, ...], dtype: Any = None) -> Any:
        n = math.prod(shape)
        if not _DRAW.get():
            values = np.zeros(n, np.float32)
        elif self.kind == "uniform":
            values = np.random.default_rng(self.seed).random(n, dtype=np.float32) * np.float32(2 * self.bound)
            values -= np.float32(self.bound)
        else:  # Keras kernels are (kH, kW, in/groups, out): fan-out = kH * kW * out, as torch counts it
            std = math.sqrt(2.0 / (math.prod(shape[:-2]) * shape[-1]))
            values = _normal(np.random.default_rng(self.seed), n, std)
        values = values.reshape(shape)
        dtype = keras.backend.standardize_dtype(dtype or keras.config.floatx())
        return values if dtype == "float32" else keras.ops.convert_to_tensor(values, dtype=dtype)

    def get_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "bound": self.bound, "seed": self.seed}


def _normal(rng: np.random.Generator, n: int, std: float = 1.0) -> np.ndarray:
    """n float32 N(0, std^2) draws by Box-Muller, std sqrt(-2 log u1) (cos, sin)(2 pi u2), in place:
    the uniforms are raw bits made floats in [1, 2) (23 random bits each), no array is copied, and
    std scales the radii (half the values)."""
    half = (n + 1) // 2
    bits = rng.bit_generator.random_raw(half).view(np.uint32)  # 2 * half 32-bit words
    bits >>= np.uint32(9)
    bits |= np.uint32(0x3F800000)  # exponent of 1: 1 + mantissa / 2^23
    u = bits.view(np.float32)
    radius, angle = u[:half], u[half:]
    np.subtract(np.float32(2.0), radius, out=radius)  # 1 - u1 in (0, 1]: a finite log
    np.log(radius, out=radius)
    radius *= np.float32(-2.0 * std * std)
    np.sqrt(radius, out=radius)
    angle -= np.float32(1.0)
    angle *= np.float32(2 * math.pi)
    out = np.empty(2 * half, np.float32)
    np.cos(angle, out=out[:half])
    np.sin(angle, out=out[half:])
    out[:half] *= radius
    out[half:] *= radius
    return out[:n]


def _he_normal_fan_out() -> keras.initializers.Initializer:
    # torchvision's kaiming_normal_(mode="fan_out", nonlinearity="relu")
    return TorchInit("he_normal_fan_out")


def make_layers(op: P.Op, dtype: Any = None, *, zero_gamma: bool = False) -> list[layers.Layer]:
    """The Keras layers computing `op`, in order (a padding layer may precede the op's own)."""
    name = keras_name(op.name)
    kw = {"dtype": dtype}
    if isinstance(op, P.Conv):
        # Keras 'same' is PyTorch's symmetric k // 2 where the stride is 1 and k odd: no pad layer there
        # (what keras.applications does too; measured 4% off a resnet50_v1 train step on TensorFlow)
        k = op.kernel_size
        same = op.padding == "same" or (op.stride == 1 and k % 2 == 1 and op.padding == k // 2)
        pad = [] if same or op.padding == 0 else [layers.ZeroPadding2D(op.padding, name=f"{name}_pad", **kw)]
        conv_kw = dict(strides=op.stride, padding="same" if same else "valid", groups=op.groups,
                       use_bias=op.bias, kernel_initializer=_he_normal_fan_out(), name=name, **kw)
        if op.standardize is not None:
            return pad + [StandardizedConv2D(op.out_channels, op.kernel_size, standardize=op.standardize, **conv_kw)]
        return pad + [layers.Conv2D(op.out_channels, op.kernel_size, **conv_kw)]
    if isinstance(op, P.BatchNorm):
        cls = UnbiasedBatchNormalization if op.running_var == "unbiased" else layers.BatchNormalization
        return [cls(
            epsilon=op.epsilon, momentum=op.running_stats_decay, name=name,
            gamma_initializer="zeros" if zero_gamma else "ones", **kw)]
    if isinstance(op, P.GroupNorm):
        return [TwoPassGroupNormalization(op.groups, epsilon=op.epsilon, name=name,
                                          gamma_initializer="zeros" if zero_gamma else "ones", **kw)]
    if isinstance(op, P.EvoNormS0):
        return [EvoNormS0(op.groups, op.epsilon, op.act, zero_weight=zero_gamma, name=name, **kw)]
    if isinstance(op, P.FilterResponseNorm):
        return [FilterResponseNorm(op.epsilon, op.tlu, zero_weight=zero_gamma, name=name, **kw)]
    if isinstance(op, P.ReLU):
        return [layers.ReLU(name=name, **kw)]
    if isinstance(op, P.SqueezeExcite):
        return [SqueezeExcite(op.channels, op.reduced, name=name, **kw)]
    if isinstance(op, P.EfficientChannelAttention):
        return [EfficientChannelAttention(op.kernel_size, name=name, **kw)]
    if isinstance(op, P.BlurPool):
        return [BlurPool2D(op.stride, name=name, **kw)]
    if isinstance(op, P.MaxPool):
        if op.pad_value == "-inf" and op.padding == "same":
            return [layers.MaxPooling2D(op.size, op.stride, padding="same", name=name, **kw)]
        value = 0.0 if op.pad_value == "zero" else -math.inf
        pad = ConstantPadding2D(op.padding, value, op.size, op.stride, name=f"{name}_pad", **kw)
        return [pad, layers.MaxPooling2D(op.size, op.stride, padding="valid", name=name, **kw)]
    if isinstance(op, P.AvgPool):
        # 'same' on a 2x2/2 window averages only real pixels, as PyTorch's ceil_mode with
        # count_include_pad=False does (tests check odd sizes on every backend); 'valid' floors.
        padding = "same" if op.ceil_mode else "valid"
        return [layers.AveragePooling2D(op.size, op.stride, padding=padding, name=name, **kw)]
    if isinstance(op, P.Subsample):
        return [layers.MaxPooling2D(1, op.stride, name=name, **kw)]  # keras.applications V2's strided identity
    if isinstance(op, P.ChannelPad):
        return [ChannelPad(op.extra, name=name, **kw)]
    if isinstance(op, P.GlobalAvgPool):
        return [layers.GlobalAveragePooling2D(name=name, **kw)]
    if isinstance(op, P.GlobalPool):
        return [GlobalPool2D(op.mode, name=name, **kw)]
    if isinstance(op, P.Dropout):
        return [layers.Dropout(op.rate, name=name, **kw)]
    if isinstance(op, P.Linear):
        bound = 1.0 / math.sqrt(op.in_features)  # PyTorch nn.Linear's default init
        return [layers.Dense(op.out_features, use_bias=op.bias, kernel_initializer=TorchInit("uniform", bound),
                             bias_initializer=TorchInit("uniform", bound),
                             name=name, **kw)]
    if isinstance(op, P.Softmax):
        return [layers.Softmax(name=name, **kw)]
    raise TypeError(f"no Keras layer for {type(op).__name__}")


def run(ops: tuple[P.Op, ...], x: Any, dtype: Any = None, zero_gamma: frozenset[str] = frozenset()) -> Any:
    """Apply the layers of `ops` to the symbolic tensor `x` in order."""
    for op in ops:
        for layer in make_layers(op, dtype, zero_gamma=op.name in zero_gamma):
            x = layer(x)
    return x
