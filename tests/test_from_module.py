"""Any ResNet-shaped model ported: hand-written PyTorch modules in several styles, fine-tuned
torchvision and timm models, Keras functional and Sequential models, read into (spec,
canonical weights, names) by resnet_torch.from_module / resnet_keras.from_model, and the
same outputs from our builders in the other framework. A layer no spec holds is refused
by name."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import resnet_keras as rk
import resnet_torch as rt
from shared_specs import BatchNormSpec, SpecError, StageSpec, StemSpec, get_spec
from support import assert_f32_close, keras_forward, random_input, torch_forward

HW = (37, 41)  # odd sizes: padding and pooling differences between the frameworks show there


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BatchNorm statistics, so that any mispaired tensor shows; eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                r = torch.rand(t.shape, generator=g)
                t.copy_(0.5 + r if name.endswith(("running_var", ".weight")) and t.ndim == 1 else (r - 0.5) * 0.4)
    return model.eval()


# -- hand-written PyTorch models -------------------------------------------------------------


class Unit(nn.Module):
    """Basic block written with functional ReLUs and its own names."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.na = nn.BatchNorm2d(cout)
        self.b = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.nb = nn.BatchNorm2d(cout)
        self.proj = None
        if stride != 1 or cin != cout:
            self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.nb(self.b(F.relu(self.na(self.a(x)))))
        return F.relu(y + (x if self.proj is None else self.proj(x)))


class LoopNet(nn.Module):
    """Blocks in an nn.ModuleList looped in forward, a mean over H and W, view before the classifier."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.entry = nn.Conv2d(in_channels, 8, 3, 1, 1, bias=False)
        self.entry_bn = nn.BatchNorm2d(8)
        self.units = nn.ModuleList([Unit(8, 8, 1), Unit(8, 8, 1), Unit(8, 16, 2), Unit(16, 32, 2)])
        self.out = nn.Linear(32, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.entry_bn(self.entry(x)), inplace=True)
        for unit in self.units:
            x = unit(x)
        x = x.mean((2, 3))
        return self.out(x.view(x.size(0), -1))


class Bottle(nn.Module):
    """Bottleneck with in-place ReLUs and `+=`, stride on the 1x1 (the 2015 paper)."""

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            nn.Conv2d(cin, width, 1, stride, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, 4 * width, 1, bias=False), nn.BatchNorm2d(4 * width))
        self.skip = nn.Sequential()
        if stride != 1 or cin != 4 * width:
            self.skip = nn.Sequential(nn.Conv2d(cin, 4 * width, 1, stride, bias=False), nn.BatchNorm2d(4 * width))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.seq(x)
        out += self.skip(x)
        return self.act(out)


class NestedNet(nn.Module):
    """Nested nn.Sequential stages, a one-channel 7x7 stem with max-pool, an MLP classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 7, 2, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        self.body = nn.Sequential(nn.Sequential(Bottle(16, 4, 1), Bottle(16, 4, 1)), nn.Sequential(Bottle(16, 8, 2)))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(32, 12, bias=False),
                                        nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.body(self.stem(x))))


def assert_ports(model: nn.Module, expected: dict) -> None:
    """The spec holds what `expected` says, and our builders in both frameworks compute the model."""
    spec, weights, names = rt.from_module(model)
    for field, value in expected.items():
        assert getattr(spec, field) == value, (field, getattr(spec, field))
    assert set(names) == {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    x = random_input(spec, HW)
    reference = torch_forward(model, x)
    ours = rt.build(spec)
    rt.import_weights(ours, weights)
    # the same ATen kernels in the same order: held to the float32 bound all the same
    assert_f32_close(torch_forward(ours, x), reference, f"{spec.name}: our PyTorch build")
    keras_model = rk.build(spec)
    rk.import_weights(keras_model, weights)
    # float32 parity bound: summation order differs between ATen and the Keras backend's kernels (trap 15)
    assert_f32_close(keras_forward(keras_model, x), reference, f"{spec.name}: our Keras build")


@pytest.mark.keras_backend
def test_functional_relu_and_a_module_list() -> None:
    stages = (StageSpec(2, 8), StageSpec(1, 16, 2), StageSpec(1, 32, 2))
    assert_ports(randomize(LoopNet()), {"block": "basic", "shortcut": "B", "name": "LoopNet", "stages": stages})


@pytest.mark.keras_backend
def test_in_place_ops_nested_sequentials_one_channel_and_an_mlp_head() -> None:
    assert_ports(randomize(NestedNet()), {"block": "bottleneck", "bottleneck_stride": "1x1", "in_channels": 1,
                                          "num_classes": 5})
    spec, _, names = rt.from_module(NestedNet())
    assert spec.head.pool == "max" and [layer.kind for layer in spec.head.layers] == [
        "dropout", "linear", "batchnorm", "relu"]
    assert names["classifier.2.weight"] == "fc.1.weight" and names["classifier.5.bias"] == "fc.4.bias"
    assert names["body.1.0.skip.0.weight"] == "layer2.0.downsample.0.weight"


@pytest.mark.keras_backend
def test_fine_tuned_torchvision_with_a_one_channel_stem() -> None:
    from torchvision.models.resnet import BasicBlock, ResNet

    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=1000)
    model.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    model.fc = nn.Sequential(nn.Linear(512, 64), nn.ReLU(inplace=True), nn.Dropout(0.4), nn.Linear(64, 3))
    spec, _, names = rt.from_module(model)
    assert names["fc.3.weight"] == "fc.3.weight" and names["layer2.0.downsample.0.weight"] == names[
        "layer2.0.downsample.0.weight"]
    assert all(mine == canonical for mine, canonical in names.items())  # torchvision's names are canonical
    assert_ports(randomize(model), {"in_channels": 1, "num_classes": 3})


@pytest.mark.keras_backend
def test_timm_with_drop_rate_and_catavgmax_pooling() -> None:
    from timm.models.resnet import BasicBlock, ResNet

    model = ResNet(BasicBlock, [1, 1, 1, 1], channels=(8, 16, 16, 32), stem_width=8, stem_type="deep",
                   avg_down=True, drop_rate=0.25, global_pool="catavgmax", num_classes=4)
    spec, _, names = rt.from_module(model, zero_init_last_bn=True)
    assert (spec.shortcut, spec.head.pool, spec.head.dropout, spec.head.sequential) == ("D", "catavgmax", 0.25, False)
    assert all(mine == canonical for mine, canonical in names.items())  # timm's names are canonical
    assert_ports(randomize(model), {"zero_init_last_bn": False})


def test_what_no_spec_holds_is_refused_naming_the_layer() -> None:
    model = LoopNet()
    model.units[2].a = nn.Conv2d(8, 16, 3, 2, 2, dilation=2, bias=False)
    with pytest.raises(SpecError, match=r"^units\.2\.a \(Conv2d\) has no counterpart in a ResNet spec \(kernel "
                                        r"\(3, 3\), stride \(2, 2\), padding \(2, 2\), dilation \(2, 2\).*a basic "
                                        r"\(3x3, 3x3\) or bottleneck .*closest preset: \w+"):
        rt.from_module(model)
    model = LoopNet()
    model.units[1].na = nn.GroupNorm(2, 8)
    with pytest.raises(SpecError, match=r"units\.1\.na \(GroupNorm\) has no counterpart in a ResNet spec"):
        rt.from_module(model)
    model = LoopNet()
    model.units[3].b = nn.Conv2d(32, 32, 5, 1, 2, bias=False)
    with pytest.raises(SpecError, match=r"units\.3\.b \(Conv2d\) is in a residual branch of 2 convs 3x5"):
        rt.from_module(model)


def test_checker_and_porter_share_one_reading() -> None:
    """The seed checker's architecture and from_module's spec come from the same graph."""
    from resnet_rosetta.teaching import seeds

    model = seeds.seed001().eval()
    spec, weights, _ = rt.from_module(model)
    assert spec == get_spec("tutorial_cifar_resnet18")
    assert seeds.check_seed("001").findings  # not faithful to resnet18, yet exactly a spec
    ours = rt.build(spec)
    rt.import_weights(ours, weights)
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    assert_f32_close(torch_forward(ours, x), torch_forward(model, x), "seed 001 ported")


# -- Keras models --------------------------------------------------------------------------------


def keras_functional(in_channels: int = 3) -> keras.Model:
    """A Keras-native ResNet: 'same' padding, a strided first 3x3 in each widening block, Keras's
    BatchNormalization defaults, `x + y` and layers.add, a Dense-ReLU-Dropout-Dense softmax head."""
    L = keras.layers
    inputs = keras.Input((None, None, in_channels))
    x = L.Conv2D(8, 3, strides=2, padding="same", name="entry")(inputs)
    x = L.ReLU()(L.BatchNormalization()(x))
    for i, (filters, stride) in enumerate([(8, 1), (16, 2), (16, 1)]):
        y = L.Conv2D(filters, 3, strides=stride, padding="same", activation=None)(x)
        y = L.Activation("relu")(L.BatchNormalization()(y))
        y = L.BatchNormalization()(L.Conv2D(filters, 3, padding="same")(y))
        if stride != 1 or x.shape[-1] != filters:
            x = L.BatchNormalization()(L.Conv2D(filters, 1, strides=stride, padding="same")(x))
        x = L.ReLU()(x + y if i % 2 else L.add([y, x]))
    x = L.GlobalAveragePooling2D(name="pool")(x)
    x = L.Dropout(0.5)(L.Dense(10, activation="relu")(x))
    return keras.Model(inputs, L.Dense(3, activation="softmax", name="probabilities")(x))


def randomize_keras(model: keras.Model, seed: int = 0) -> keras.Model:
    rng = np.random.default_rng(seed)
    for v in model.weights:
        shape = tuple(v.shape)
        is_scale = "gamma" in v.path or "variance" in v.path
        v.assign((0.5 + rng.random(shape) if is_scale else (rng.random(shape) - 0.5) * 0.4).astype("float32"))
    return model


def assert_keras_ports(model: keras.Model, expected: dict) -> None:
    spec, weights, names = rk.from_model(model)
    for field, value in expected.items():
        assert getattr(spec, field) == value, (field, getattr(spec, field))
    assert set(names) == {v.path for v in model.weights}
    x = random_input(spec, HW)
    reference = keras_forward(model, x)
    ours = rt.build(spec)
    rt.import_weights(ours, weights)
    # float32 parity bound: summation order differs between ATen and the Keras backend's kernels (trap 15)
    assert_f32_close(torch_forward(ours, x), reference, f"{model.name}: our PyTorch build")
    assert rk.export_weights(rk.build(spec)).keys() == weights.keys()


@pytest.mark.keras_backend
def test_keras_functional_with_same_padding_and_a_strided_first_3x3() -> None:
    assert_keras_ports(randomize_keras(keras_functional()), {
        "padding": "same", "conv_bias": "all", "shortcut": "B", "head_activation": "softmax", "num_classes": 3,
        "batchnorm": BatchNormSpec(epsilon=1e-3, running_stats_decay=0.99, running_var="biased"),
        "stem": StemSpec(widths=(8,), kernel_size=3, stride=2, pool="none")})


@pytest.mark.keras_backend
def test_keras_sequential_around_a_nested_backbone() -> None:
    L = keras.layers
    backbone = keras_functional(in_channels=1)
    body = keras.Model(backbone.inputs, backbone.get_layer("pool").input, name="body")
    model = keras.Sequential([keras.Input((None, None, 1)), body, L.GlobalMaxPooling2D(), L.Dense(4)], name="tuned")
    spec, _, names = rk.from_model(model)
    assert (spec.in_channels, spec.head.pool, spec.num_classes, spec.name) == (1, "max", 4, "tuned")
    assert names[body.get_layer("entry").kernel.path] == "conv1.weight"
    assert_keras_ports(randomize_keras(model), {"in_channels": 1})


def test_keras_layer_no_spec_holds_is_refused_by_name() -> None:
    L = keras.layers
    inputs = keras.Input((None, None, 3))
    x = L.Conv2D(8, 3, padding="same", name="entry")(inputs)
    y = L.Conv2D(8, 3, padding="same", activation="gelu", name="odd")(x)
    y = L.Conv2D(8, 3, padding="same")(y)
    x = L.GlobalAveragePooling2D()(L.add([x, y]))
    with pytest.raises(SpecError, match=r"^odd \(activation\) \(Conv2D\(activation='gelu'\)\) has no counterpart"):
        rk.from_model(keras.Model(inputs, L.Dense(2)(x)))


# -- the seed tutorials ---------------------------------------------------------------------------


def test_torch_seeds_port_as_they_are_or_once_the_checkers_fix_is_applied() -> None:
    from resnet_rosetta.teaching import seeds

    assert seeds.check_seed("000").ports == "resnet34"
    check = seeds.check_seed("003-torch")
    assert not check.faithful and not any(f.architectural for f in check.fixed)
    assert check.ports == "resnet34 + 2 fields (conv_bias='all', num_classes=10)"
    model = randomize(seeds.seed003_torch(fixed=True))
    spec, weights, _ = rt.from_module(model)
    ours = rt.build(spec)
    rt.import_weights(ours, weights)
    x = np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32)
    assert_f32_close(torch_forward(ours, x), torch_forward(model, x), "seed 003-torch, fixed, ported")


def test_keras_seeds_port_once_the_checkers_fix_is_applied() -> None:
    from resnet_rosetta.teaching import seeds

    for seed_id, builder in (("003-keras", lambda: seeds.seed003_keras(fixed=True)),
                             ("004", lambda: seeds.seed004(conv_shortcut_where_needed=True))):
        model = randomize_keras(builder())
        spec, weights, _ = rk.from_model(model)
        assert seeds.check_seed(seed_id).ports.startswith(spec.name if seed_id == "004" else "resnet34 + 6 fields")
        ours = rt.build(spec)
        rt.import_weights(ours, weights)
        x = np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32)  # the posts fix 224x224
        # float32 parity bound: summation order differs between ATen and TensorFlow's kernels (trap 15)
        assert_f32_close(torch_forward(ours, x), keras_forward(model, x), f"seed {seed_id}, fixed, ported")


def test_functional_pools() -> None:
    """F.max_pool2d in the stem and F.adaptive_avg_pool2d before the classifier, as hand-written code has them."""
    from torchvision.models.resnet import BasicBlock, ResNet

    class Functional(ResNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    model = randomize(Functional(BasicBlock, [1, 1, 1, 1], num_classes=3))
    spec, weights, _ = rt.from_module(model)
    assert spec.stem == get_spec("resnet18").stem
    ours = rt.build(spec)
    rt.import_weights(ours, weights)
    x = random_input(spec, HW)
    assert np.array_equal(torch_forward(ours, x), torch_forward(model, x))  # the same kernels in the same order
