"""The 30 traps, measured on small real networks: each naive port goes wrong where and by as
much as docs/differences.md says, and each correct port stays within the float32 bound.

Naive-port errors are asserted against "order 1" thresholds (0.1 of the output scale):
a layout or padding mistake changes the function, float32 noise is ~1e-6 (trap 15).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from resnet_rosetta.cli import main
from resnet_rosetta.teaching import naive
from resnet_rosetta.teaching import traps_numerics as num
from resnet_rosetta.teaching import traps_porting as port
from resnet_rosetta.teaching import traps_training as train
from shared_specs import SpecError, get_spec
from shared_specs.synthetic import random_weights
from support import BACKEND, F32_RTOL

# 100x the float32 bound: a mistake that changes the function moves the output by more than
# a percent of its scale (usually far more); float32 noise is ~1e-6 of it (trap 15)
WRONG = 1e-2

# small networks with the layouts of the big presets, so every backend runs the suite in a minute
TWO_STAGES_64 = [{"depth": 1, "width": 64, "stride": 1}, {"depth": 1, "width": 128, "stride": 2}]
SMALL_18 = get_spec("resnet18", stages=TWO_STAGES_64)
SMALL_V2 = get_spec("resnet50_v2", stages=[{"depth": 2, "width": 16, "stride": 2},
                                           {"depth": 2, "width": 32, "stride": 1}])
SMALL_V1 = get_spec("resnet50", stages=[{"depth": 1, "width": 16, "stride": 1}, {"depth": 2, "width": 32, "stride": 2}])
SMALL_RESNEXT = get_spec("resnext50_32x4d", stages=[{"depth": 1, "width": 64, "stride": 1}])
SMALL_KERAS_NATIVE = get_spec("tutorial_keras_resnet18", stages=TWO_STAGES_64)


@pytest.mark.keras_backend
def test_conv_layout_mistakes_are_silent_and_bite_at_the_stem() -> None:
    m = port.conv_layout(SMALL_18, 32)
    assert m.values["reshape_rel"] > WRONG and m.values["reversed_rel"] > WRONG
    # w.T is right for 1x1 kernels: the 7x7 stem is the first conv it mirrors
    assert m.first_bite == "conv1" and m.values["reversed_bite"] == "conv1"
    assert m.values["ours_rel"] < F32_RTOL and m.values["ours_bite"] is None
    # 6 convs: the stem, 2 in layer1.0 (64 -> 64), 2 in layer2.0 (64 -> 128, 128 -> 128) and its
    # 1x1 projection (64 -> 128); I == O in three of them
    assert (m.values["convs"], m.values["pointwise"], m.values["silent_swapped_io"]) == (6, 1, 3)


@pytest.mark.keras_backend
def test_untransposed_dense_bites_at_fc() -> None:
    m = port.dense_layout(SMALL_18, 32)
    assert m.first_bite == "fc" and m.values["naive_rel"] > WRONG
    assert m.values["ours_rel"] < F32_RTOL


@pytest.mark.keras_backend
def test_grouped_conv_port() -> None:
    m = port.grouped_conv(SMALL_RESNEXT, 32)
    # layer1.0.conv2: 128 channels in 32 groups of 4
    assert m.values["torch_shape"] == (128, 4, 3, 3) and m.values["keras_shape"] == (3, 3, 4, 128)
    assert m.values["ungrouped_error"] == "ValueError"
    assert m.values["ours_rel"] < F32_RTOL


@pytest.mark.keras_backend
def test_keras_same_padding_bites_on_even_sizes_only() -> None:
    m = port.same_padding("cifar_resnet20", 32, keras_native=SMALL_KERAS_NATIVE)
    assert m.first_bite == "layer2.0.conv1" and m.values["naive_rel"] > WRONG  # its first strided conv
    # 33 -> 17 -> 9: every strided window sees an odd size, where 'same' is symmetric
    assert m.values["naive_odd_rel"] < F32_RTOL and m.values["naive_odd_bite"] is None
    assert m.values["ours_rel"] < F32_RTOL
    # the Keras-native tutorial net, naively ported to PyTorch's k // 2 padding
    assert m.values["native_naive_bite"] == "conv1" and m.values["native_naive_rel"] > WRONG
    assert m.values["native_ours_rel"] < F32_RTOL


@pytest.mark.keras_backend
def test_zero_pool_padding_bites_only_before_a_relu() -> None:
    m = port.pool_padding(SMALL_V2, 32, post_relu=SMALL_V1)
    # only border windows change, and global pooling averages them with the rest
    assert m.first_bite == "maxpool" and m.values["naive_rel"] > 1e-3
    assert m.values["naive_v1_bite"] is None and m.values["naive_v1_rel"] < F32_RTOL
    assert m.values["ours_rel"] < F32_RTOL


@pytest.mark.keras_backend
def test_keras_default_epsilon_bites_at_the_first_bn() -> None:
    m = port.bn_epsilon(SMALL_18, 32)
    assert m.first_bite == "bn1"
    # subtle but real: above the float32 bound, far below a layout error
    assert F32_RTOL < m.values["naive_rel"] < 0.1
    # 1.001e-5 vs 1e-5 next to variances in [0.5, 2]: 1e-8 is under half a float32 ulp there, so
    # var + eps rounds to the same float or 1 ulp apart; the same kernels then differ by at most
    # that ulp carried through two stages (~1e-7; measured exactly 0 here)
    assert m.values["applications_rel"] < 1e-6
    assert m.values["ours_rel"] < F32_RTOL


@pytest.mark.keras_backend
def test_flatten_order_needs_permuted_rows() -> None:
    m = port.flatten_order("cifar_resnet20", 32)
    assert m.values["chw"] == (64, 8, 8)
    assert m.values["naive_rel"] > WRONG and m.values["ours_rel"] < F32_RTOL


@pytest.mark.keras_backend
def test_v1_layouts_differ_in_cost_and_function() -> None:
    m = port.v1_naming(SMALL_V1, 32)
    # torchvision reports 4.09 GFLOPS for resnet50; He et al. 2015 Table 1: 3.8e9 for the stride-on-1x1 layout
    assert round(m.values["gmacs"]["resnet50"], 2) == 4.09
    assert round(m.values["gmacs"]["resnet50_v1"], 2) == 3.86
    assert m.values["params"]["resnet50"] == 25_557_032  # torchvision resnet50
    # the stride moves to layer2.0's first 1x1; global pooling averages part of the change away
    assert m.first_bite == "layer2.0.conv1" and m.values["naive_rel"] > WRONG
    assert m.values["ours_rel"] < F32_RTOL


@pytest.mark.keras_backend
def test_v2_stride_in_the_last_block() -> None:
    m = port.v2_layout(SMALL_V2, 32)
    assert m.first_bite == "layer1.0.conv2"  # the naive port strides the first block's 3x3
    assert m.values["ours_rel"] < F32_RTOL


@pytest.mark.keras_backend
def test_torch_momentum_typed_into_keras() -> None:
    m = train.bn_momentum(SMALL_18, 32, steps=3)
    assert m.first_bite == "bn1" and m.values["naive_rel"] > WRONG
    # three float32 running averages of float32 batch means over at most 2 x 32 x 32 values: every
    # kernel library sums those in blocks and trees, which keeps the error near log2(n) * 2^-24 =
    # 7e-7 of the values' size (measured 1e-7); 1e-5 is 15x that, 3e5x below the naive port's
    assert m.values["ours_rel"] < 1e-5


@pytest.mark.keras_backend
def test_running_variance_is_unbiased_in_torch_only() -> None:
    m = train.bn_variance("cifar_resnet20", 16)
    # 16x16 input, batch 2: bn1 normalises 2 * 16 * 16 values per channel, layer3.2.bn2 2 * 4 * 4
    assert (m.values["n_first"], m.values["n_last"]) == (512, 32)
    # the ratio is recovered from (running - decay * old) / (1 - decay), which cancels 0.9 of the
    # value: 10x float32 rounding plus the batch variance's own, ~1e-6; 1e-4 is 100x that and
    # 20x finer than the n/(n-1) - 1 = 2e-3 being measured
    assert m.values["ratio_first"] == pytest.approx(512 / 511, rel=1e-4)
    assert m.values["ratio_last"] == pytest.approx(32 / 31, rel=1e-4)
    assert m.values["mean_rel"] < 1e-5  # running means agree: float32 batch means, as in the momentum test
    assert m.values["ours_var_rel"] < 1e-5  # the spec's "unbiased" Keras BN: float32 noise only, as above


@pytest.mark.keras_backend
def test_frozen_batchnorm_differs_between_frameworks() -> None:
    v = train.frozen_bn("cifar_resnet20", 32).values
    assert v["torch_requires_grad_false"] > WRONG and v["torch_eval"] == 0
    assert v["keras_frozen"] == 0 and v["keras_frozen_output_gap"] == 0
    assert v["keras_training"] > WRONG


@pytest.mark.keras_backend
def test_sgd_weight_decay_and_lr_changes() -> None:
    v = train.sgd_semantics(SMALL_18.replace(num_classes=10), 32, steps=3).values
    # step 1 is the same update in both rules (float32 noise); from step 2 decoupled decay differs
    # (distances relative to how far the parameters moved)
    # noise: the same rule in both frameworks (l2) leaves float32 rounding of the step, measured
    # here, in this process (3e-7 of the movement); step 1 of decoupled decay adds the elementwise
    # rounding of w * (1 - lr * wd), the same on every CPU (1.4e-6). 10x margins on both.
    noise = max(v["l2"])
    assert noise < 1e-5  # the same rule in both: only float32 rounding left
    # from step 2 the rules differ (1e-3 of the movement in exact arithmetic)
    assert v["decoupled"][0] < 1e-5 + 10 * noise and v["decoupled"][-1] > max(1e-4, 100 * noise)
    assert v["lr_drop"][1] < 1e-5 + 10 * noise and v["lr_drop"][-1] > WRONG


@pytest.mark.keras_backend
def test_learning_rate_is_stored_in_float32() -> None:
    v = train.hyperparameter_precision("cifar_resnet20", 32).values
    assert v["stored_lr"] == float(np.float32(0.1))
    assert v["lr_rel"] == pytest.approx(abs(float(np.float32(0.1)) - 0.1) / 0.1)
    if BACKEND == "jax":  # float64 variables fall back to float32 without JAX_ENABLE_X64 (trap 16)
        assert v["step_rel"] < 1e-6
    else:  # the float64 update differs exactly by the learning rate's float32 rounding
        assert v["step_rel"] == pytest.approx(v["lr_rel"], rel=1e-3)  # 1e-3 of 1.5e-8: float64 rounding


@pytest.mark.keras_backend
def test_default_initialisation() -> None:
    v = train.default_init("cifar_resnet20", "layer3.0.conv2").values
    fan = 64 * 9  # 64 -> 64 channels, 3x3: fan_in == fan_out; 36,864 draws: std within ~1%
    # seeded draws; a sample std of n = 36,864 is within 1/sqrt(2n) = 0.37% (1 sigma) of the
    # true one, so 3% is 8 sigma, and half the factor sqrt(2) the initialisers differ by
    assert v["torch_default"] == pytest.approx(1 / math.sqrt(3 * fan), rel=0.03)
    assert v["keras_default"] == pytest.approx(math.sqrt(2 / (2 * fan)), rel=0.03)
    assert v["ours_torch"] == pytest.approx(math.sqrt(2 / fan), rel=0.03)
    assert v["ours_keras"] == pytest.approx(math.sqrt(2 / fan), rel=0.03)
    assert v["same_seed_diff"] > WRONG


@pytest.mark.keras_backend
def test_cross_entropy_default_expects_probabilities() -> None:
    v = train.cross_entropy("cifar_resnet20", 32).values
    # float32 log-softmax of the same 10 logits: a few roundings of values of size ~1, under 1e-6
    # of a loss of ~2 whatever the CPU; 1e-5 is 10x that and far below from_logits' mistake
    assert v["keras_from_logits"] == pytest.approx(v["torch"], rel=1e-5)
    assert abs(v["keras_default"] - v["torch"]) > WRONG * v["torch"]


@pytest.mark.keras_backend
def test_float32_accuracy() -> None:
    v = num.float32_accuracy(SMALL_18, 32).values
    # each framework's float32 against float64, and the two against each other: all three are
    # float32 rounding of the same function, held to the float32 parity bound (support.F32_RTOL)
    assert v["torch_rel"] < F32_RTOL and v["keras_rel"] < F32_RTOL and v["between_rel"] < F32_RTOL
    assert min(v["torch_rel"], v["keras_rel"]) > 1e-9  # float32 rounding is there (2^-24 per operation)


@pytest.mark.keras_backend
def test_float64_is_exact_on_tensorflow_only() -> None:
    m = num.float64("cifar_resnet20", 32)
    if BACKEND == "tensorflow":
        assert m.values["rel"] < 1e-10 and m.first_bite is None  # float64 rounding is ~1e-16
    else:
        # JAX without JAX_ENABLE_X64 holds no float64 array (the first conv already runs in float32);
        # the torch backend computes BatchNorm in keras.backend.result_type(x, "float32"), which maps
        # 64-bit results to 32 bits on every backend but TensorFlow
        assert 1e-10 < m.values["rel"] < F32_RTOL  # float32 rounding, within the float32 bound: not a wrong port
        assert m.first_bite == {"jax": "conv1", "torch": "bn1"}[BACKEND]


@pytest.mark.keras_backend
def test_shared_memory() -> None:
    v = num.shared_memory("cifar_resnet20", 32).values
    assert v["torch_aliased"] > WRONG and v["torch_export"] == 0
    assert v["keras"] == 0


@pytest.mark.keras_backend
def test_batch_variance_in_float32() -> None:
    v = num.batch_variance().values
    assert v["offsets"][-1] == 100.0
    # two passes: float32 rounding of a variance of order 1 (2^-24 per operation), on every backend
    assert max(v["torch_rel"]) < F32_RTOL and max(v["ours_rel"]) < F32_RTOL
    if BACKEND == "torch":
        # E[x^2] - E[x]^2 at a mean 100x the spread: both terms are ~1e4, on float32's grid of 2^-10 there, so
        # each channel's variance of ~1 is off by up to ~5e-4 whatever the CPU's summation order; 64 channels
        # all staying under 2e-4 is vanishingly unlikely
        assert v["keras_rel"][-1] > 1e-4 > 10 * v["ours_rel"][-1]
    else:  # TensorFlow's and JAX's ops.moments are two-pass already
        assert max(v["keras_rel"]) < F32_RTOL


def test_tf32_says_why_it_is_not_measured() -> None:
    m = num.tf32()
    assert m.values["cuda"] == torch.cuda.is_available()
    assert ("not measurable" in m.facts[0]) == (not m.values["cuda"])


@pytest.mark.keras_backend
def test_naive_port_models_keep_canonical_names() -> None:
    spec = get_spec("cifar_resnet20")
    weights = random_weights(spec)
    model = naive.naive_port(spec, weights, "bn-epsilon")
    assert model.get_layer("layer1_0_bn1").epsilon == 1e-3
    torch_model = naive.naive_port(spec, weights, "kernel-reshape", framework="torch")
    assert "layer3.2.conv2.weight" in torch_model.state_dict()
    with pytest.raises(SpecError, match="unknown naive-port trap"):
        naive.naive_port(spec, weights, "no-such-trap")
    with pytest.raises(SpecError, match="bottleneck"):
        naive.naive_spec(spec, "stride-on-1x1")


def test_naive_weights_are_the_misassigned_tensors() -> None:
    spec = get_spec("cifar_resnet20")
    weights = random_weights(spec)
    w = weights["conv1.weight"]  # (O, I, kH, kW) = (16, 3, 3, 3)
    into_keras = naive.naive_weights(spec, weights, "kernel-reshape")["conv1.weight"]
    # imported correctly, it gives the Keras kernel a reshaping porter writes
    np.testing.assert_array_equal(into_keras.transpose(2, 3, 1, 0), w.reshape(3, 3, 3, 16))
    into_torch = naive.naive_weights(spec, weights, "kernel-reshape", framework="torch")["conv1.weight"]
    np.testing.assert_array_equal(into_torch, w.transpose(2, 3, 1, 0).reshape(16, 3, 3, 3))
    untransposed = naive.naive_weights(spec, weights, "dense-untransposed")["fc.weight"]  # fc: (10, 64)
    np.testing.assert_array_equal(untransposed.T, weights["fc.weight"].reshape(64, 10))
    assert naive.naive_weights(spec, weights, "bn-epsilon")["conv1.weight"] is w  # a spec-only mistake


def test_flatten_dense_kernel_rows() -> None:
    weight = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 12)  # 2 outputs over (C=3, H=2, W=2)
    kernel = naive.flatten_dense_kernel(weight, (3, 2, 2))
    # Keras row (h, w, c) must hold torch column c * 4 + h * 2 + w
    assert kernel[(1 * 2 + 0) * 3 + 2, 1] == weight[1, 2 * 4 + 1 * 2 + 0]
    np.testing.assert_array_equal(naive.flatten_dense_kernel(weight, (3, 2, 2), naive=True), weight.T)
    with pytest.raises(SpecError, match="cannot have 12 inputs"):
        naive.flatten_dense_kernel(weight, (2, 2, 2))


@pytest.mark.keras_backend
def test_explain_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "2"]) == 0
    out = capsys.readouterr().out
    assert "Trap 2: dense kernel layout" in out and "First layer where the mistake bites: fc" in out
    assert main(["explain", "31"]) == 2
    assert "no trap 31" in capsys.readouterr().err


# -- timm's layers (traps 23-30) ---------------------------------------------------------------

from resnet_rosetta.teaching import traps_families as fam  # noqa: E402

# Only trap 24 depends on the Keras backend (its ops.moments); the others' naive formulas are PyTorch's, and
# our Keras port of every family is held to parity on each backend by tests/test_timm_families.py.
FAMILY_STAGES = [{"depth": 1, "width": 16, "stride": 1}, {"depth": 1, "width": 32, "stride": 2}]
TINY = get_spec("resnet18", stem={"widths": [16]}, stages=FAMILY_STAGES)
TINY_GN = TINY.replace(norm={"kind": "groupnorm", "groups": 8})
# timm's ResNetV2-50-D layout (pre-activation, deep stem, avg-pool shortcut), two small stages
SMALL_V2D = get_spec("resnetv2_50d_evos", stages=FAMILY_STAGES, stem={"widths": [16, 16, 32]}, norm={"groups": 8})
SMALL_BIT = get_spec("resnetv2_50x1_bit", stages=FAMILY_STAGES, stem={"widths": [16]}, norm={"groups": 8})


def test_groupnorm_has_no_running_statistics_and_a_batchnorm_port_bites_at_once() -> None:
    m = fam.groupnorm_statistics(TINY_GN, 32)
    v = m.values
    # the same arithmetic in both modes: no statistics to switch between
    assert max(v["gn_modes_torch"], v["gn_modes_keras"], v["gn_modes_keras_frozen"]) < 1e-6
    assert v["bn_modes_torch"] > WRONG  # batch statistics of 2 random images against random running ones
    assert m.first_bite == "bn1" and v["naive_rel"] > WRONG
    assert v["ours_rel"] < F32_RTOL


@pytest.mark.keras_backend
def test_groupnorm_epsilon_and_keras_variance() -> None:
    m = fam.groupnorm_numerics(TINY_GN, 32)
    v = m.values
    assert m.first_bite == "bn1" and F32_RTOL < v["naive_rel"] < 0.1  # subtle, as BatchNorm's epsilon (trap 6)
    assert v["ours_rel"] < F32_RTOL
    assert max(v["single_ours"]) < F32_RTOL and max(v["single_torch"]) < 1e-5
    if BACKEND == "torch":  # E[x^2] - E[x]^2 at a mean 100x the spread: 1e4 * 2^-24 of the variance is lost
        assert v["single_keras"][-1] > 1e-4 > 10 * v["single_ours"][-1]


def test_evonorm_group_variance_is_biased_and_contiguous() -> None:
    m = fam.evonorm(SMALL_V2D.replace(norm={"kind": "evonorm_s0"}), 32)
    v = m.values
    # conv1.1: 16 channels in 8 groups at 16x16, n = 2 * 256; the last one 128 channels at 4x4 (512 at 2x2)
    assert (v["first"], v["n_first"]) == ("conv1.1", 512)
    # unbiased shrinks x / std by 1 - 1/(2n) = 1e-3 at the first EvoNorm, more where n is small
    assert m.first_bite == "conv1.1" and v["unbiased_rel"] > 1e-3
    assert v["interleaved_bite"] == "conv1.1" and v["interleaved_rel"] > WRONG  # other channels in each group
    assert v["ours_rel"] < F32_RTOL


def test_frn_is_a_mean_square_and_its_epsilon_matters_only_for_quiet_channels() -> None:
    m = fam.frn(SMALL_V2D.replace(norm={"kind": "frn"}), 32)
    v = m.values
    assert m.first_bite == "conv1.1" and v["instance_rel"] > WRONG
    # random weights keep every channel's mean square near 1, where 1e-6 vs 1e-5 scales by 1 + 4.5e-6
    assert v["epsilon_rel"] < F32_RTOL and v["ours_rel"] < F32_RTOL
    assert [round(r, 3) for _, r in v["epsilon_ratios"]] == [1.0, 1.044, 1.348]  # m = 1, 1e-4, 1e-5


def test_blurpool_pads_by_reflection() -> None:
    m = fam.blurpool(TINY.replace(anti_alias="blur"), 32)
    v = m.values
    # the stem's max-pool runs at stride 1, then maxpool.1 blurs with stride 2: the first reflect padding
    assert m.first_bite == "maxpool.1" and v["zeros_rel"] > WRONG
    assert v["same_bite"] == "maxpool.1" and v["same_rel"] > WRONG
    # without anti-aliasing the stem pool strides by itself: the first layer both ports share is layer1.0.conv1
    assert v["plain_bite"] == "layer1.0.conv1" and v["plain_rel"] > WRONG
    assert v["ours_rel"] < F32_RTOL


def test_se_width_rounding_is_a_loud_mistake() -> None:
    v = fam.se_width("seresnet18").values
    # timm's make_divisible(C / 16, 8) against C // 16: only C = 64 (layer1, two blocks) differs
    assert v["widths"] == [(64, 8, 4), (128, 8, 8), (256, 16, 16), (512, 32, 32)]
    assert (v["layers"], v["differ"], v["loads"]) == (8, 2, False)
    assert v["params"] - v["naive_params"] == 2 * (2 * 64 * (8 - 4) + 8 - 4)  # fc1 and fc2 weights and biases


def test_eca_conv1d_layout_cannot_go_wrong_silently() -> None:
    m = fam.eca_conv1d(TINY.replace(attention={"kind": "eca"}), 32)
    v = m.values
    assert v["kernel_size"] == 3 and v["eca_layouts_agree"]  # (1, 1, k): every transpose is the same array
    assert v["general_t_rel"] < 1e-5 and v["general_reshape_rel"] > WRONG  # w.T is Conv1d's transpose
    assert v["view_error"] == "ValueError" and v["ours_rel"] < F32_RTOL


def test_weight_standardisation_forgotten_or_unbiased() -> None:
    m = fam.std_conv(SMALL_BIT, 32)
    v = m.values
    assert m.first_bite == "conv1" and v["forgotten_rel"] > WRONG
    # w.std() divides by n - 1: the stem's 3 x 7 x 7 kernels shrink by 1/(2 * 147) = 3.4e-3
    assert v["stem_fan_in"] == 147 and v["unbiased_bite"] == "conv1" and v["unbiased_rel"] > F32_RTOL
    assert v["default_eps_rel"] < 1e-3 and v["ours_rel"] < F32_RTOL  # 1e-6 vs 1e-8 next to variances ~2/fan_in


def test_naive_ports_of_timm_layers() -> None:
    assert naive.naive_spec(TINY_GN, "gn-epsilon").norm.epsilon == 1e-3  # keras.layers.GroupNormalization
    assert naive.naive_spec(TINY_GN, "gn-epsilon", framework="torch").norm.epsilon == 1e-5
    frn = SMALL_V2D.replace(norm={"kind": "frn"})
    assert naive.naive_spec(frn, "frn-epsilon").norm.epsilon == 1e-6  # TF Addons' FilterResponseNormalization
    as_bn = naive.naive_weights(TINY_GN, random_weights(TINY_GN), "groupnorm-as-batchnorm")
    assert naive.naive_spec(TINY_GN, "groupnorm-as-batchnorm").norm.kind == "batchnorm"
    assert np.array_equal(as_bn["bn1.running_var"], np.ones(16)) and not as_bn["bn1.running_mean"].any()
    assert naive.naive_spec(SMALL_BIT, "std-conv-forgotten").std_conv_epsilon is None
    with pytest.raises(SpecError, match="trap 'gn-epsilon' needs GroupNorm layers; resnet18 has none"):
        naive.naive_spec(TINY, "gn-epsilon")
    with pytest.raises(SpecError, match="needs anti-aliasing"):
        naive.naive_spec(TINY, "no-anti-alias")
