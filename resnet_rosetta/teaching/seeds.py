"""The seed tutorials' networks, rebuilt on request with their bugs intact, and a checker.

Five Chinese blog posts (shared/seeds/000-004) teach ResNet with PyTorch and Keras
code. The models below follow each post's code layer for layer (rewritten here, with
the posts' module names and defaults), including what the posts get wrong. The
checker does not know those mistakes: it reads each built model's graph
(`resnet_rosetta.teaching.architecture`: torch.fx or the Keras graph) and compares it with
the paper's network the post claims to build, as our preset of that name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from resnet_rosetta.frameworks import import_frameworks
from resnet_rosetta.teaching import architecture as A
from shared_specs import SpecError, find_preset, get_spec


@dataclass(frozen=True)
class Seed:
    """One post: its id, title, framework, what it claims to build, and a builder for its model."""

    id: str
    title: str
    framework: str  # "torch", "keras" or "" for a post without code
    claims: str | None  # the preset the post says it builds
    build: Callable[[], Any] | None
    note: str = ""
    fixed: Callable[[], Any] | None = None  # the model with the checker's findings fixed
    fix: str = ""  # what `fixed` changes


# -- 000: "用pytorch实现Resnet" (toymoban), PyTorch ResNet-34 -----------------------------


def seed000() -> Any:
    """The post's ResidualBlock / ResNet: [3, 4, 6, 3] basic blocks, projection shortcut
    (1x1 conv + BN) where the shape changes, everything else as torchvision."""
    torch, _ = import_frameworks()
    nn = torch.nn

    class ResidualBlock(nn.Module):
        def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(out_channels)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(out_channels)
            self.shortcut = nn.Sequential()
            if stride != 1 or in_channels != out_channels:
                self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                              nn.BatchNorm2d(out_channels))

        def forward(self, x: Any) -> Any:
            residual = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += self.shortcut(residual)
            return self.relu(out)

    class ResNet(nn.Module):
        def __init__(self, num_classes: int = 1000) -> None:
            super().__init__()
            self.in_channels = 64
            self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.layer1 = self._make_layer(64, 3)
            self.layer2 = self._make_layer(128, 4, stride=2)
            self.layer3 = self._make_layer(256, 6, stride=2)
            self.layer4 = self._make_layer(512, 3, stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512, num_classes)

        def _make_layer(self, out_channels: int, num_blocks: int, stride: int = 1) -> Any:
            layers = [ResidualBlock(self.in_channels, out_channels, stride)]
            self.in_channels = out_channels
            layers += [ResidualBlock(out_channels, out_channels) for _ in range(1, num_blocks)]
            return nn.Sequential(*layers)

        def forward(self, x: Any) -> Any:
            out = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
            return self.fc(torch.flatten(self.avgpool(out), 1))

    return ResNet(num_classes=1000)


# -- 001: "ResNet详解与CIFAR10数据集实战", PyTorch "ResNet18" for CIFAR-10 -------------------


def seed001() -> Any:
    """The post's ResBlk / ResNet18: a 3x3 stride-3 unpadded stem, one block per stage, all
    four strided, a 1x1 conv + BN "extra" shortcut in every block, nn.Conv2d's default bias."""
    torch, _ = import_frameworks()
    nn, F = torch.nn, torch.nn.functional

    class ResBlk(nn.Module):
        def __init__(self, ch_in: int, ch_out: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(ch_in, ch_out, kernel_size=3, stride=stride, padding=1)
            self.bn1 = nn.BatchNorm2d(ch_out)
            self.conv2 = nn.Conv2d(ch_out, ch_out, kernel_size=3, stride=1, padding=1)
            self.bn2 = nn.BatchNorm2d(ch_out)
            self.extra = nn.Sequential(nn.Conv2d(ch_in, ch_out, kernel_size=1, stride=stride), nn.BatchNorm2d(ch_out))

        def forward(self, x: Any) -> Any:
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return F.relu(self.extra(x) + out)

    class ResNet18(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Sequential(nn.Conv2d(3, 64, kernel_size=3, stride=3, padding=0), nn.BatchNorm2d(64))
            self.blk1 = ResBlk(64, 64, stride=2)
            self.blk2 = ResBlk(64, 128, stride=2)
            self.blk3 = ResBlk(128, 256, stride=2)
            self.blk4 = ResBlk(256, 512, stride=2)
            self.outlayer = nn.Linear(512 * 1 * 1, 10)

        def forward(self, x: Any) -> Any:
            x = F.relu(self.conv1(x))
            x = self.blk4(self.blk3(self.blk2(self.blk1(x))))
            x = F.adaptive_avg_pool2d(x, [1, 1])
            return self.outlayer(x.view(x.size(0), -1))

    return ResNet18()


# -- 003: "Deep Residual Learning" notes, Keras and PyTorch ResNet-34 ------------------------


def seed003_keras(fixed: bool = False) -> Any:
    """The post's Keras ResNet.buildNet / resblock, input (224, 224, 3). `fixed=True` applies
    what the checker lists: BN + ReLU after the stem conv and the max-pool padded ('same'),
    no ReLU closing the branch, BN instead of a ReLU on the projection."""
    _, keras = import_frameworks()
    L = keras.layers

    def resblock(inputs: Any, filters: int, downsample: bool = False) -> Any:
        strides = 2 if downsample else 1
        x = L.Conv2D(filters, kernel_size=3, strides=strides, padding="same")(inputs)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
        x = L.Conv2D(filters, kernel_size=3, strides=1, padding="same")(x)
        x = L.BatchNormalization()(x)
        if not fixed:
            x = L.Activation("relu")(x)
        if downsample:
            if fixed:
                inputs = L.BatchNormalization()(L.Conv2D(filters, kernel_size=1, strides=2, padding="same")(inputs))
            else:
                inputs = L.Conv2D(filters, kernel_size=1, strides=2, padding="same", activation="relu")(inputs)
        x = L.Add()([inputs, x])
        return L.Activation("relu")(x)

    inputs = keras.Input((224, 224, 3))
    x = L.Conv2D(64, kernel_size=7, strides=2, padding="same")(inputs)
    if fixed:
        x = L.Activation("relu")(L.BatchNormalization()(x))
    x = L.MaxPooling2D(pool_size=(3, 3), strides=2, padding="same" if fixed else "valid")(x)
    for k, blocks in enumerate([3, 4, 6, 3]):
        for idx in range(blocks):
            x = resblock(x, filters=64 * 2**k, downsample=idx == 0 and k != 0)
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(1000, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def seed003_torch(fixed: bool = False) -> Any:
    """The post's PyTorch ResBlock / ResNet (10 classes). `fixed=True` applies what the checker
    lists: BN + ReLU after the stem conv and the max-pool padded by 1, BN before ReLU and no
    ReLU closing the branch, BN instead of a ReLU on the projection, a ReLU after the addition."""
    torch, _ = import_frameworks()
    nn = torch.nn

    def conv_bn_relu(cin: int, cout: int, stride: int, relu: bool = True) -> Any:
        if not fixed:
            return nn.Sequential(nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1), nn.ReLU(),
                                 nn.BatchNorm2d(cout))
        layers = [nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1), nn.BatchNorm2d(cout)]
        return nn.Sequential(*layers, *([nn.ReLU()] if relu else []))

    class ResBlock(nn.Module):
        def __init__(self, input_channel: int, filters: int, downsample: bool = False) -> None:
            super().__init__()
            self.downsample = downsample
            stride = 2 if downsample else 1
            self.layer1 = conv_bn_relu(input_channel, filters, stride)
            self.layer2 = conv_bn_relu(filters, filters, 1, relu=False)
            if downsample:
                self.shortcut = nn.Sequential(nn.Conv2d(input_channel, filters, kernel_size=1, stride=2, padding=0),
                                              nn.BatchNorm2d(filters) if fixed else nn.ReLU())

        def forward(self, inputs: Any) -> Any:
            x = self.layer2(self.layer1(inputs))
            if self.downsample:
                inputs = self.shortcut(inputs)
            return torch.relu(torch.add(inputs, x)) if fixed else torch.add(inputs, x)

    class ResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()

            def build_block(num: int, input_channel: int, filters: int, downsample: bool = True) -> Any:
                layers = []
                for idx in range(num):
                    first = idx == 0 and downsample
                    layers.append(ResBlock(input_channel if idx == 0 else filters, filters, downsample=first))
                return nn.Sequential(*layers)

            self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3)
            if fixed:
                self.conv1 = nn.Sequential(self.conv1, nn.BatchNorm2d(64), nn.ReLU())
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1 if fixed else 0)
            self.conv2 = build_block(3, input_channel=64, filters=64, downsample=False)
            self.conv3 = build_block(4, input_channel=64, filters=128)
            self.conv4 = build_block(6, input_channel=128, filters=256)
            self.conv5 = build_block(3, input_channel=256, filters=512)
            self.global_avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.classifier = nn.Linear(512, 10)

        def forward(self, inputs: Any) -> Any:
            x = self.maxpool(self.conv1(inputs))
            x = self.conv5(self.conv4(self.conv3(self.conv2(x))))
            x = self.global_avgpool(x)
            return self.classifier(x.view(x.size(0), -1))

    return ResNet()


# -- 004: "深度学习第6天:ResNet深度残差网络", Keras ResNet-18 ----------------------------------


def seed004(conv_shortcut_where_needed: bool = False) -> Any:
    """The post's residual_block / resnet((224, 224, 3), 1000). As posted, no block passes
    `conv_shortcut`, so the first strided block adds a 56x56x64 shortcut to a 28x28x128
    branch and Keras refuses to build; `conv_shortcut_where_needed=True` passes it to the
    three strided blocks, the smallest fix (our preset tutorial_keras_resnet18)."""
    _, keras = import_frameworks()
    L = keras.layers

    def residual_block(x: Any, filters: int, kernel_size: int = 3, stride: int = 1, conv_shortcut: bool = False) -> Any:
        shortcut = x
        if conv_shortcut:
            shortcut = L.Conv2D(filters, kernel_size=1, strides=stride, padding="same")(shortcut)
            shortcut = L.BatchNormalization()(shortcut)
        x = L.Conv2D(filters, kernel_size, strides=stride, padding="same")(x)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
        x = L.Conv2D(filters, kernel_size, padding="same")(x)
        x = L.BatchNormalization()(x)
        x = L.add([x, shortcut])
        return L.Activation("relu")(x)

    def resnet(input_shape: tuple[int, int, int], num_classes: int = 10) -> Any:
        inputs = keras.Input(shape=input_shape)
        x = L.Conv2D(64, 7, strides=2, padding="same")(inputs)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
        x = L.MaxPooling2D(3, strides=2, padding="same")(x)
        fix = conv_shortcut_where_needed
        x = residual_block(x, 64)
        x = residual_block(x, 64)
        x = residual_block(x, 128, stride=2, conv_shortcut=fix)
        x = residual_block(x, 128)
        x = residual_block(x, 256, stride=2, conv_shortcut=fix)
        x = residual_block(x, 256)
        x = residual_block(x, 512, stride=2, conv_shortcut=fix)
        x = residual_block(x, 512)
        x = L.GlobalAveragePooling2D()(x)
        x = L.Dense(num_classes, activation="softmax")(x)
        return keras.Model(inputs, x)

    return resnet(input_shape=(224, 224, 3), num_classes=1000)


SEEDS: dict[str, Seed] = {s.id: s for s in (
    Seed("000", "用pytorch实现Resnet (toymoban.com)", "torch", "resnet34", seed000),
    Seed("001", "ResNet详解与CIFAR10数据集实战", "torch", "resnet18", seed001,
         "the post's own architecture is our preset tutorial_cifar_resnet18"),
    Seed("002", "ResNet网络结构分析", "", None, None, "theory only: the post has no model code"),
    Seed("003-keras", "Deep Residual Learning for Image Recognition (notes), Keras part", "keras", "resnet34",
         seed003_keras, fixed=lambda: seed003_keras(fixed=True),
         fix="BN + ReLU after the stem conv, the max-pool padded; no ReLU closing the branch; BN, not ReLU, on "
             "the projection"),
    Seed("003-torch", "Deep Residual Learning for Image Recognition (notes), PyTorch part", "torch", "resnet34",
         seed003_torch, fixed=lambda: seed003_torch(fixed=True),
         fix="BN + ReLU after the stem conv, the max-pool padded; BN before ReLU and none closing the branch; BN, "
             "not ReLU, on the projection; a ReLU after the addition"),
    Seed("004", "深度学习第6天:ResNet深度残差网络", "keras", "resnet18", seed004,
         "fixed with conv_shortcut on the strided blocks it is our preset tutorial_keras_resnet18",
         fixed=lambda: seed004(conv_shortcut_where_needed=True), fix="conv_shortcut on the three strided blocks"),
)}


@dataclass(frozen=True)
class Check:
    """What the checker found for one seed."""

    seed: Seed
    reference: str | None
    built: bool
    error: str | None
    findings: tuple[A.Finding, ...]
    fixed: tuple[A.Finding, ...] | None = None  # the findings once the seed's fix is applied
    ports: str | None = None  # the spec from_module / from_model read off the model, as it is or fixed

    @property
    def faithful(self) -> bool:
        return self.built and not any(f.architectural for f in self.findings)


def architecture_of(model: Any) -> A.Arch:
    """The architecture of a built model of either framework."""
    _, keras = import_frameworks()
    return A.segment(A.from_keras(model) if isinstance(model, keras.Model) else A.from_torch(model))


def check_seed(seed_id: str, reference: str | None = None) -> Check:
    """Build one seed's model and compare it with the network it claims (or `reference`)."""
    seed = get_seed(seed_id)
    reference = reference or seed.claims
    if seed.build is None or reference is None:
        return Check(seed, reference, False, seed.note or "no model code", ())
    ref = A.segment(A.from_plan(get_spec(reference)))
    try:
        model = seed.build()
    except ValueError as err:  # Keras's message for a graph that cannot be built
        fixed_model = seed.fixed() if seed.fixed else None
        fixed = tuple(A.compare(architecture_of(fixed_model), ref)) if fixed_model is not None else None
        return Check(seed, reference, False, " ".join(str(err).split())[:300], (), fixed,
                     port(fixed_model, reference))
    findings = tuple(A.compare(architecture_of(model), ref))
    ported = port(model, reference)
    if ported is None and seed.fixed is not None:  # the checker's findings fixed: then it ports
        fixed_model = seed.fixed()
        return Check(seed, reference, True, None, findings, tuple(A.compare(architecture_of(fixed_model), ref)),
                     port(fixed_model, reference))
    return Check(seed, reference, True, None, findings, None, ported)


def port(model: Any, reference: str) -> str | None:
    """What resnet_torch.from_module / resnet_keras.from_model read off `model`: a preset's name,
    else `reference` with the fields that differ; None when no spec holds the model."""
    if model is None:
        return None
    _, keras = import_frameworks()
    if isinstance(model, keras.Model):
        from resnet_keras import from_model as read
    else:
        from resnet_torch import from_module as read
    try:
        spec, _, _ = read(model)
    except SpecError:
        return None
    if find_preset(spec):
        return spec.name
    diffs = spec.differences(get_spec(reference))
    return f"{reference} + {len(diffs)} fields ({', '.join(f'{d.path}={d.mine!r}' for d in diffs)})"


def get_seed(seed_id: str) -> Seed:
    """The seed with this id; an unknown id is a SpecError listing the known ones."""
    try:
        return SEEDS[seed_id]
    except KeyError:
        raise SpecError(f"unknown seed {seed_id!r}; seeds: {', '.join(SEEDS)}") from None


def format_check(check: Check) -> str:
    """A check for the terminal: verdict, then differences grouped by place."""
    s = check.seed
    lines = [f"seed {s.id} ({s.framework or 'no code'}): {s.title}"]
    if s.claims:
        lines.append(f"  claims: {s.claims} ({get_spec(s.claims).name}, {s.framework})")
    if not check.built:
        lines.append(f"  {'fails to build: ' if s.build else ''}{check.error}")
    else:
        verdict = "faithful" if check.faithful else "NOT faithful"
        lines.append(f"  verdict: {verdict} to {check.reference}")
        lines += _format_findings(check.findings, "  ")
    if check.fixed is not None:
        lines.append(f"  once fixed ({s.fix}):")
        lines += _format_findings(check.fixed, "    ")
    if check.ports:
        lines.append(f"  ports{' once fixed' if check.fixed is not None else ''}: resnet_"
                     f"{'keras.from_model' if s.framework == 'keras' else 'torch.from_module'} reads it as "
                     f"{check.ports}")
    if s.note and check.built:
        lines.append(f"  note: {s.note}")
    return "\n".join(lines)


def _format_findings(findings: tuple[A.Finding, ...], indent: str) -> list[str]:
    """Findings grouped by place: the two op sequences once, then what differs there."""
    if not findings:
        return [f"{indent}no differences"]
    lines = []
    for title, arch in (("architecture", True), ("details (numerics and conventions, not the architecture)", False)):
        chosen = [f for f in findings if f.architectural == arch]
        if not chosen:
            continue
        lines.append(f"{indent}{title}:")
        places: dict[tuple[str, str, str], list[str]] = {}
        for f in chosen:
            places.setdefault((f.where, f.seen, f.expected), []).append(f.message)
        for (where, seq, expected), messages in places.items():
            lines.append(f"{indent}  {where}: {seq}")
            lines.append(f"{indent}  {' ' * len(where)}  reference: {expected}")
            lines += [f"{indent}    - {m}" for m in messages]
    return lines
