"""Readable, runnable source of a preset in PyTorch or Keras: what a learner would write.

`resnet_source(spec, framework)` writes one self-contained file: a few helpers, the
stem, ONE residual block (a class in PyTorch, a function in Keras) and the stage
loop, specialised to the spec (only the options it uses appear). Module and layer
names are the canonical names, so canonical weights load into it as they are: the
generated file is an executable explanation of what the plan-driven builders build,
and the tests run it against them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from shared_specs import ResNetSpec, SpecError, make_plan, preset_doc
from shared_specs import plan as P
from shared_specs.spec import AttentionSpec, torch_momentum

# The ResNetSpec fields the writers turn into source; any other field must keep its default,
# or the generated file would silently build another network.
_WRITTEN = frozenset({"name", "block", "preactivation", "stages", "bottleneck_stride", "stride_position", "shortcut",
                      "groups", "width_per_group", "stem", "conv_bias", "padding", "batchnorm", "zero_init_last_bn",
                      "in_channels", "num_classes", "head_activation", "attention"})
_WRITTEN_NORMS = ("batchnorm", "groupnorm")


def unwritten_fields(spec: ResNetSpec) -> list[str]:
    """The spec's fields (with values) that source generation does not cover: fields it does
    not know at a value other than their default, ResNet-RS's conv stem pool, per-stage block
    types and per-block widths."""
    found = []
    for f in dataclasses.fields(spec):
        if f.name in _WRITTEN:
            continue
        default: Any = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        value = getattr(spec, f.name)
        if f.name == "norm":  # BatchNorm's numerics are in `batchnorm`; another kind is another layer
            if value.kind not in _WRITTEN_NORMS:
                found.append(f"norm.kind={value.kind!r}")
        elif value != default:
            found.append(f"{f.name}.kind={value.kind!r}" if hasattr(value, "kind") else f"{f.name}={value!r}")
    if spec.stem.pool == "conv":
        found.append("stem.pool='conv'")
    found += [f"stages[{i}].{name}" for i, stage in enumerate(spec.stages)
              for name in ("block", "block_widths") if getattr(stage, name) is not None]
    return found


def resnet_source(spec: ResNetSpec, framework: str, preset: str | None = None) -> str:
    """Python source building `spec` in `framework` ('torch' or 'keras')."""
    if framework == "torch":
        return _TorchWriter(spec, preset).source()
    if framework == "keras":
        return _KerasWriter(spec, preset).source()
    raise SpecError(f"framework must be 'torch' or 'keras', got {framework!r}")


class _Writer:
    """What both frameworks' sources share: reading the spec into small decisions."""

    def __init__(self, spec: ResNetSpec, preset: str | None) -> None:
        self.spec = spec
        self.preset = preset
        unwritten = unwritten_fields(spec)
        if unwritten:
            raise SpecError(f"source generation does not cover {', '.join(unwritten)} (in {spec.name}); "
                            "resnet_torch.build and resnet_keras.build build it")
        self.plan = make_plan(spec)
        s = spec.stem
        if s.pool == "max" and s.pool_pad_value == "zero" and spec.padding == "same" and s.pool_padding is None:
            raise SpecError("source generation does not cover a zero-padded 'same' max-pool (no preset uses one)")
        if spec.padding == "same" and s.padding is not None:
            raise SpecError("source generation does not cover an explicit stem padding in a 'same' spec "
                            "(no preset uses one)")

    # -- decisions ---------------------------------------------------------------

    def block_bias(self, local: str) -> bool:
        """Whether the plan gives block conv `local` ('conv2', 'downsample.0' ...) a bias: the
        same in every block, so the first block that has the conv answers. A projection no
        block needs is never built, and its bias does not matter."""
        for block in self.plan.blocks():
            for op in block.ops():
                if isinstance(op, P.Conv) and block.local(op) == local:
                    return op.bias
        return False

    @property
    def projection_has_bn(self) -> bool:
        """Whether projections end in BatchNorm (v1) or are a bare conv (v2), as planned."""
        return any(isinstance(op, P.NORM_OPS) for block in self.plan.blocks() for op in block.shortcut)

    def stem_convs(self) -> list[P.Conv]:
        return [op for op in self.plan.stem if isinstance(op, P.Conv)]

    def pool(self) -> P.MaxPool | None:
        return next((op for op in self.plan.stem if isinstance(op, P.MaxPool)), None)

    @property
    def block_name(self) -> str:
        kind = "Bottleneck" if self.spec.block == "bottleneck" else "BasicBlock"
        return ("PreAct" + kind) if self.spec.preactivation else kind

    @property
    def stages(self) -> str:
        return repr([(st.depth, st.width, st.stride) for st in self.spec.stages])

    @property
    def strided_block(self) -> str:
        return "j == 0" if self.spec.stride_position == "first" else "j == depth - 1"

    def mid(self) -> str:
        s = self.spec
        if s.width_per_group == 64 and s.groups == 1:
            return "width"
        return f"width * {s.width_per_group} // 64 * {s.groups}"

    def convs(self) -> list[tuple[str, str, str, str, str, bool]]:
        """(name, in, out, kernel, stride expression, bias) of the block's main convs."""
        s = self.spec
        if s.block == "basic":
            return [("conv1", "in_channels", "out_channels", "3", "stride", self.block_bias("conv1")),
                    ("conv2", "out_channels", "out_channels", "3", "1", self.block_bias("conv2"))]
        s1, s3 = ("stride", "1") if s.bottleneck_stride == "1x1" else ("1", "stride")
        return [("conv1", "in_channels", "mid", "1", s1, self.block_bias("conv1")),
                ("conv2", "mid", "mid", "3", s3, self.block_bias("conv2")),
                ("conv3", "mid", "out_channels", "1", "1", self.block_bias("conv3"))]

    def shortcut_rule(self) -> tuple[str, str]:
        """(condition for a projection, condition for a strided identity) as Python expressions."""
        kind = self.spec.shortcut
        reshapes = "stride != 1 or in_channels != out_channels"
        return {"A": ("False", "stride != 1"), "B": (reshapes, "False"), "C": ("True", "False"),
                "B-subsample": ("in_channels != out_channels", "stride != 1"), "D": (reshapes, "False")}[kind]

    def header(self, framework: str) -> list[str]:
        name = self.preset or self.spec.name
        where = preset_doc(self.preset) if self.preset else f"the spec {self.spec.name!r}"
        how = ("Module names are the canonical names: a canonical (torchvision-style) state_dict loads with "
               "model.load_state_dict." if framework == "torch" else
               "Layer names are the canonical names with dots as underscores (layer1.0.conv1 -> layer1_0_conv1).")
        return ['"""' + f"{name} in {'PyTorch' if framework == 'torch' else 'Keras 3'}: {where}", "",
                f"Generated by `resnet-rosetta source {name} --framework {framework}` from the spec.", how, '"""', ""]


class _TorchWriter(_Writer):
    def source(self) -> str:
        s = self.spec
        same = s.padding == "same"
        lines = self.header("torch")
        eca = s.attention is not None and s.attention.kind == "eca"
        lines += (["import math", ""] if eca else []) + ["import torch"]
        lines += ["import torch.nn.functional as F" if same or s.shortcut == "A" else None, "from torch import nn",
                  "", ""]
        if same:
            lines += [
                "def pad_same(x, kernel_size, stride, value=0.0):",
                "    # TensorFlow's 'same': the odd pixel of padding goes after (bottom/right)",
                "    pads = []",
                "    for size in (x.shape[-1], x.shape[-2]):",
                "        total = max((-(-size // stride) - 1) * stride + kernel_size - size, 0)",
                "        pads += [total // 2, total - total // 2]",
                "    return F.pad(x, pads, value=value)", "", "",
                "class SameConv2d(nn.Conv2d):",
                "    def forward(self, x):",
                "        return super().forward(pad_same(x, self.kernel_size[0], self.stride[0]))", "", ""]
            lines += [
                "def conv(in_channels, out_channels, kernel_size, stride=1, groups=1, bias=False):",
                "    return SameConv2d(in_channels, out_channels, kernel_size, stride, groups=groups, bias=bias)",
                "", ""]
        else:
            lines += [
                "def conv(in_channels, out_channels, kernel_size, stride=1, groups=1, bias=False):",
                "    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2,",
                "                     groups=groups, bias=bias)", "", ""]
        if s.norm.kind == "groupnorm":
            lines += ["def norm(channels):",
                      "    # each example's own group statistics, in train() and eval() alike: no running statistics",
                      f"    return nn.GroupNorm({s.norm.groups}, channels, eps={s.norm.epsilon!r})", "", ""]
        else:
            momentum = torch_momentum(s.batchnorm.running_stats_decay)
            lines += ["def norm(channels):",
                      "    # PyTorch's momentum weights the NEW batch: 1 - the decay of the running statistics",
                      f"    return nn.BatchNorm2d(channels, eps={s.batchnorm.epsilon!r}, momentum={momentum!r})", "",
                      ""]
        lines += self.attention()
        lines += self.block() + ["", ""] + self.model()
        lines += ["", "", 'if __name__ == "__main__":', "    print(ResNet())"]
        return "\n".join(line for line in lines if line is not None) + "\n"

    def block(self) -> list[str]:
        s, preact = self.spec, self.spec.preactivation
        expansion = s.expansion
        projection, subsample = self.shortcut_rule()
        with_bn = self.projection_has_bn
        lines = [f"class {self.block_name}(nn.Module):", f"    expansion = {expansion}", "",
                 "    def __init__(self, in_channels, width, stride=1):", "        super().__init__()",
                 "        out_channels = width * self.expansion"]
        if s.block == "bottleneck":
            lines.append(f"        mid = {self.mid()}")
        convs = self.convs()
        if preact:
            lines += ["        self.bn1 = norm(in_channels)", "        self.relu1 = nn.ReLU()"]
        for k, (name, cin, cout, ks, stride, bias) in enumerate(convs, start=1):
            last = k == len(convs)
            groups = ", groups=" + str(s.groups) if ks == "3" and s.groups > 1 else ""
            lines.append(f"        self.{name} = conv({cin}, {cout}, {ks}" + ("" if stride == "1" else f", {stride}")
                         + f"{groups}{', bias=True' if bias else ''})")
            if preact and not last:
                lines += [f"        self.bn{k + 1} = norm({cout})", f"        self.relu{k + 1} = nn.ReLU()"]
            elif not preact:
                lines.append(f"        self.bn{k} = norm({cout})")
                if not last:
                    lines.append(f"        self.relu{k} = nn.ReLU()")
        proj_bias = ", bias=True" if self.block_bias("downsample.1" if s.shortcut == "D" else "downsample.0") else ""
        if projection not in ("False", "True"):
            lines.append("        self.downsample = None")
        if projection != "False":
            if projection == "True":
                pad = " " * 8
                lines.append("        # a projection in every block (option C)")
            else:
                pad = " " * 12
                lines.append(f"        if {projection}:")
            norm = ", norm(out_channels)" if with_bn else ""
            if s.shortcut == "D":
                lines += [pad + "# average-pool, then a stride-1 projection (ResNet-D); index 0 stays the pool",
                          pad + "pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) "
                          "if stride != 1 else nn.Identity()",
                          pad + "self.downsample = nn.Sequential(pool, "
                          f"conv(in_channels, out_channels, 1{proj_bias}){norm})"]
            else:
                lines.append(pad + "self.downsample = nn.Sequential("
                             f"conv(in_channels, out_channels, 1, stride{proj_bias}){norm})")
        if subsample != "False":
            lines.append("        self.stride = stride  # strided identity: every stride-th pixel")
        if s.shortcut == "A":
            lines.append("        self.extra = out_channels - in_channels  # zero channels appended (option A)")
        if s.attention is not None:  # after the last norm, before the addition (timm's `se`, whatever its kind)
            kind = "SqueezeExcite(out_channels, se_width(out_channels))" if s.attention.kind == "se" else \
                "EfficientChannelAttention(out_channels)"
            lines.append(f"        self.se = {kind}")
        if not preact:
            lines.append("        self.relu = nn.ReLU()")
        lines += ["", "    def forward(self, x):"]
        if preact:
            lines.append("        pre = self.relu1(self.bn1(x))")
        source = "pre" if preact else "x"
        for k, (name, *_rest) in enumerate(convs, start=1):
            last = k == len(convs)
            arg = source if k == 1 else "out"
            if preact:
                lines.append(f"        out = self.{name}({arg})" if last else
                             f"        out = self.relu{k + 1}(self.bn{k + 1}(self.{name}({arg})))")
            else:
                lines.append(f"        out = self.bn{k}(self.{name}({arg}))" if last else
                             f"        out = self.relu{k}(self.bn{k}(self.{name}({arg})))")
        if s.attention is not None:
            lines.append("        out = self.se(out)")
        if projection == "True":
            lines.append(f"        shortcut = self.downsample({'pre' if preact else 'x'})")
        else:
            lines.append("        shortcut = x")
        if projection not in ("False", "True"):
            lines += ["        if self.downsample is not None:",
                      f"            shortcut = self.downsample({'pre' if preact else 'x'})"]
        if subsample != "False":
            lines += ["        elif self.stride != 1:" if projection != "False" else "        if self.stride != 1:",
                      "            shortcut = shortcut[:, :, :: self.stride, :: self.stride]"]
        if s.shortcut == "A":
            lines += ["        if self.extra:", "            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra))"]
        lines.append("        return out + shortcut" if preact else "        return self.relu(out + shortcut)")
        return lines

    def attention(self) -> list[str]:
        a = self.spec.attention
        if a is None:
            return []
        if a.kind == "se":
            return [*_se_width(a), "", "",
                    "class SqueezeExcite(nn.Module):",
                    "    # timm's SEModule: mean over H, W -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid, times x",
                    "    def __init__(self, channels, reduced):",
                    "        super().__init__()",
                    "        self.fc1 = nn.Conv2d(channels, reduced, 1)",
                    "        self.fc2 = nn.Conv2d(reduced, channels, 1)", "",
                    "    def forward(self, x):",
                    "        s = self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True))))",
                    "        return x * torch.sigmoid(s)", "", ""]
        return [*_eca_kernel_size(a), "", "",
                "class EfficientChannelAttention(nn.Module):",
                "    # a Conv1d along the channel means, one channel in and out: weight (1, 1, k) (timm's EcaModule)",
                "    def __init__(self, channels):",
                "        super().__init__()",
                "        k = eca_kernel_size(channels)",
                "        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)", "",
                "    def forward(self, x):",
                "        n, c = x.shape[:2]",
                "        s = self.conv(x.mean((2, 3)).view(n, 1, c))  # the channels as the length of one sequence",
                "        return x * torch.sigmoid(s).view(n, c, 1, 1)", "", ""]

    def model(self) -> list[str]:
        s, stem = self.spec, self.spec.stem
        head = s.num_classes is not None
        lines = ["class ResNet(nn.Module):",
                 f"    def __init__(self{', num_classes=' + str(s.num_classes) if head else ''}):",
                 "        super().__init__()"]
        first = self.plan.stem[0]
        pad = "" if first.padding in (stem.kernel_size // 2, "same") else f", padding={first.padding}"
        stride = f", {stem.stride}" if stem.stride != 1 else ""
        convs = []
        cin = str(s.in_channels)
        for i, width in enumerate(stem.widths):
            last = i == len(stem.widths) - 1
            bias = ", bias=True" if self.stem_convs()[i].bias else ""
            if i == 0 and pad:
                convs.append(f"nn.Conv2d({cin}, {width}, {stem.kernel_size}{stride or ', 1'}{pad}{bias})")
            else:
                convs.append(f"conv({cin}, {width}, {stem.kernel_size}{stride if i == 0 else ''}{bias})")
            if not last:
                convs += [f"norm({width})", "nn.ReLU()"]
            cin = str(width)
        if len(convs) == 1:
            lines.append(f"        self.conv1 = {convs[0]}")
        else:
            lines += ["        self.conv1 = nn.Sequential(  # the deep stem: conv, BN, ReLU, ..."]
            lines += [f"            {c}," for c in convs] + ["        )"]
        stem_calls = "self.conv1(x)"
        if stem.norm:
            lines += [f"        self.bn1 = norm({stem.widths[-1]})", "        self.relu = nn.ReLU()"]
            stem_calls = f"self.relu(self.bn1({stem_calls}))"
        if stem.pool == "max":
            p = self.pool().padding  # type: ignore[union-attr]
            k, st = stem.pool_size, stem.pool_stride
            if p == "same":
                lines += ["        # TensorFlow 'same' max-pool: -inf padding, the odd pixel after",
                          f"        self.maxpool = nn.MaxPool2d({k}, {st})"]
                stem_calls = f"self.maxpool(pad_same({stem_calls}, {k}, {st}, float('-inf')))"
            elif stem.pool_pad_value == "zero":
                lines.append("        # zero padding, as keras.applications' ZeroPadding2D "
                             "(nn.MaxPool2d would pad -inf)")
                lines.append(f"        self.maxpool = nn.Sequential(nn.ZeroPad2d({p}), nn.MaxPool2d({k}, {st}))")
                stem_calls = f"self.maxpool({stem_calls})"
            else:
                lines.append(f"        self.maxpool = nn.MaxPool2d({k}, {st}, padding={p})")
                stem_calls = f"self.maxpool({stem_calls})"
        block = self.block_name
        lines += [f"        channels = {stem.widths[-1]}",
                  f"        stages = {self.stages}  # (blocks, width, stride) per stage",
                  "        for i, (depth, width, stride) in enumerate(stages, start=1):",
                  "            blocks = []",
                  "            for j in range(depth):",
                  f"                blocks.append({block}(channels, width, stride if {self.strided_block} else 1))",
                  f"                channels = width * {block}.expansion",
                  '            self.add_module(f"layer{i}", nn.Sequential(*blocks))']
        if s.preactivation:
            lines += ["        self.post_bn = norm(channels)  # pre-activation nets end with BN + ReLU",
                      "        self.post_relu = nn.ReLU()"]
        if head:
            lines += ["        self.avgpool = nn.AdaptiveAvgPool2d(1)",
                      "        self.fc = nn.Linear(channels, num_classes)"]
            if s.head_activation == "softmax":
                lines.append("        self.softmax = nn.Softmax(dim=1)")
        lines += ["", "    def forward(self, x):", f"        x = {stem_calls}"]
        lines += [f"        x = self.layer{i}(x)" for i in range(1, len(s.stages) + 1)]
        if s.preactivation:
            lines.append("        x = self.post_relu(self.post_bn(x))")
        if head:
            out = "self.fc(torch.flatten(self.avgpool(x), 1))"
            lines.append(f"        return {'self.softmax(' + out + ')' if s.head_activation == 'softmax' else out}")
        else:
            lines.append("        return x")
        return lines


class _KerasWriter(_Writer):
    def source(self) -> str:
        s = self.spec
        eca = s.attention is not None and s.attention.kind == "eca"
        lines = self.header("keras") + (["import math", ""] if eca else [])
        lines += ["import keras", "from keras import layers", "", ""]
        if s.padding == "same":
            lines += ["def conv(x, filters, kernel_size, stride=1, groups=1, use_bias=False, name=None):",
                      "    return layers.Conv2D(filters, kernel_size, strides=stride, padding=\"same\", groups=groups,",
                      "                         use_bias=use_bias, name=name)(x)", "", ""]
        else:
            lines += ["def conv(x, filters, kernel_size, stride=1, groups=1, use_bias=False, name=None, padding=None):",
                      "    # PyTorch-style symmetric padding of k // 2, then 'valid': Keras 'same' would pad",
                      "    # (0, 1) for a stride-2 window on an even input",
                      "    padding = kernel_size // 2 if padding is None else padding",
                      "    if padding:",
                      "        x = layers.ZeroPadding2D(padding, name=name + \"_pad\")(x)",
                      "    return layers.Conv2D(filters, kernel_size, strides=stride, groups=groups, "
                      "use_bias=use_bias,",
                      "                         name=name)(x)", "", ""]
        if s.norm.kind == "groupnorm":
            lines += ["def norm(x, name):",
                      "    # GroupNormalization's default epsilon is 1e-3, PyTorch's GroupNorm's 1e-5 (trap 24)",
                      f"    return layers.GroupNormalization({s.norm.groups}, epsilon={s.norm.epsilon!r}, "
                      "name=name)(x)", "", ""]
        else:
            lines += ["def norm(x, name):",
                      "    # Keras's momentum weights the OLD running value (PyTorch's 0.1 is Keras's 0.9)",
                      f"    return layers.BatchNormalization(epsilon={s.batchnorm.epsilon!r}, "
                      f"momentum={s.batchnorm.running_stats_decay!r}, name=name)(x)", "", ""]
        lines += self.attention()
        lines += self.block() + ["", ""] + self.model()
        lines += ["", "", 'if __name__ == "__main__":', "    resnet().summary()"]
        return "\n".join(lines) + "\n"

    def block(self) -> list[str]:
        s, preact = self.spec, self.spec.preactivation
        projection, subsample = self.shortcut_rule()
        with_bn = self.projection_has_bn
        fn = "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(self.block_name))
        lines = [f"def {fn}(x, width, stride, name):", "    in_channels = x.shape[-1]",
                 "    out_channels = width" + (f" * {s.expansion}" if s.expansion != 1 else "")]
        if s.block == "bottleneck":
            lines.append(f"    mid = {self.mid()}")
        source = "x"
        if preact:
            lines += ['    pre = norm(x, name + "_bn1")', '    pre = layers.ReLU(name=name + "_relu1")(pre)']
            source = "pre"
        proj_bias = (", use_bias=True" if self.block_bias("downsample.1" if s.shortcut == "D" else "downsample.0")
                     else "")
        lines.append("    shortcut = x")
        if projection != "False":
            if projection == "True":
                pad = " " * 4
                lines.append("    # a projection in every block (option C)")
            else:
                pad = " " * 8
                lines.append(f"    if {projection}:")
            if s.shortcut == "D":
                lines += [pad + "# average-pool, then a stride-1 projection (ResNet-D); 'same' leaves padding "
                          "out of the mean",
                          pad + f"shortcut = {source}",
                          pad + "if stride != 1:",
                          pad + '    shortcut = layers.AveragePooling2D(2, stride, padding="same", '
                          'name=name + "_downsample_0")(shortcut)',
                          pad + f'shortcut = conv(shortcut, out_channels, 1{proj_bias}, name=name + "_downsample_1")']
                if with_bn:
                    lines.append(pad + 'shortcut = norm(shortcut, name + "_downsample_2")')
            else:
                lines.append(pad + f'shortcut = conv({source}, out_channels, 1, stride{proj_bias}, '
                             'name=name + "_downsample_0")')
                if with_bn:
                    lines.append(pad + 'shortcut = norm(shortcut, name + "_downsample_1")')
        if subsample != "False":
            lines += ["    elif stride != 1:" if projection != "False" else "    if stride != 1:",
                      '        shortcut = layers.MaxPooling2D(1, stride, name=name + "_subsample")(shortcut)'
                      "  # every stride-th pixel"]
        if s.shortcut == "A":
            lines += ["    if out_channels != in_channels:  # zero channels appended (option A)",
                      "        extra = out_channels - in_channels",
                      "        shortcut = layers.Lambda(lambda t: keras.ops.pad(t, "
                      "[[0, 0], [0, 0], [0, 0], [0, extra]]),",
                      '                                 name=name + "_channel_pad")(shortcut)']
        convs = self.convs()
        for k, (name, _cin, cout, ks, stride, bias) in enumerate(convs, start=1):
            last = k == len(convs)
            groups = f", groups={s.groups}" if ks == "3" and s.groups > 1 else ""
            args = ("" if stride == "1" else f", {stride}") + groups + (", use_bias=True" if bias else "")
            lines.append(f'    x = conv({source if k == 1 else "x"}, {cout}, {ks}{args}, name=name + "_{name}")')
            if preact and not last:
                lines += [f'    x = norm(x, name + "_bn{k + 1}")',
                          f'    x = layers.ReLU(name=name + "_relu{k + 1}")(x)']
            elif not preact:
                lines.append(f'    x = norm(x, name + "_bn{k}")')
                if not last:
                    lines.append(f'    x = layers.ReLU(name=name + "_relu{k}")(x)')
        if s.attention is not None:  # after the last norm, before the addition; named `se` whatever its kind
            layer = "SqueezeExcite(out_channels, se_width(out_channels)" if s.attention.kind == "se" else \
                "EfficientChannelAttention(eca_kernel_size(out_channels)"
            lines.append(f'    x = {layer}, name=name + "_se")(x)')
        lines.append('    x = layers.Add(name=name + "_add")([x, shortcut])')
        lines.append("    return x" if preact else '    return layers.ReLU(name=name + "_relu")(x)')
        return lines

    def attention(self) -> list[str]:
        a = self.spec.attention
        if a is None:
            return []
        if a.kind == "se":
            return [*_se_width(a), "", "",
                    "class SqueezeExcite(layers.Layer):",
                    "    # timm's SEModule: mean over H, W -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid, times x",
                    "    def __init__(self, channels, reduced, **kwargs):",
                    "        super().__init__(**kwargs)",
                    '        self.fc1 = layers.Conv2D(reduced, 1, name="fc1")',
                    '        self.fc2 = layers.Conv2D(channels, 1, name="fc2")', "",
                    "    def build(self, input_shape):",
                    "        self.fc1.build((None, 1, 1, input_shape[-1]))",
                    "        self.fc2.build((None, 1, 1, self.fc1.filters))", "",
                    "    def call(self, x):",
                    "        s = self.fc2(keras.ops.relu(self.fc1(keras.ops.mean(x, axis=(1, 2), keepdims=True))))",
                    "        return x * keras.ops.sigmoid(s)", "", ""]
        return [*_eca_kernel_size(a), "", "",
                "class EfficientChannelAttention(layers.Layer):",
                "    # a Conv1D along the channel means: kernel (k, 1, 1); PyTorch's Conv1d holds it as (1, 1, k)",
                "    def __init__(self, kernel_size, **kwargs):",
                "        super().__init__(**kwargs)",
                "        self.kernel_size = kernel_size", "",
                "    def build(self, input_shape):",
                '        self.kernel = self.add_weight(name="kernel", shape=(self.kernel_size, 1, 1))', "",
                "    def call(self, x):",
                "        # (N, C, 1): the channels as the steps of a 1-channel sequence",
                "        means = keras.ops.expand_dims(keras.ops.mean(x, axis=(1, 2)), -1)",
                '        s = keras.ops.squeeze(keras.ops.conv(means, self.kernel, padding="same"), -1)',
                "        return x * keras.ops.sigmoid(keras.ops.expand_dims(s, (1, 2)))", "", ""]

    def model(self) -> list[str]:
        s, stem = self.spec, self.spec.stem
        head = s.num_classes is not None
        fn = "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(self.block_name))
        lines = [f"def resnet({'num_classes=' + str(s.num_classes) if head else ''}):",
                 f"    inputs = keras.Input((None, None, {s.in_channels}), name=\"input\")"]
        first = self.plan.stem[0]
        deep = len(stem.widths) > 1
        x = "inputs"
        for i, width in enumerate(stem.widths):
            last = i == len(stem.widths) - 1
            name = f"conv1_{3 * i}" if deep else "conv1"
            bias = ", use_bias=True" if self.stem_convs()[i].bias else ""
            stride = f", {stem.stride}" if i == 0 and stem.stride != 1 else ""
            explicit = i == 0 and s.padding != "same" and first.padding != stem.kernel_size // 2
            pad = f", padding={first.padding}" if explicit else ""
            lines.append(f'    x = conv({x}, {width}, {stem.kernel_size}{stride}{bias}, name="{name}"{pad})')
            x = "x"
            if not last:
                lines += [f'    x = norm(x, "conv1_{3 * i + 1}")', f'    x = layers.ReLU(name="conv1_{3 * i + 2}")(x)']
        if stem.norm:
            lines += ['    x = norm(x, "bn1")', '    x = layers.ReLU(name="relu")(x)']
        if stem.pool == "max":
            p = self.pool().padding  # type: ignore[union-attr]
            k, st = stem.pool_size, stem.pool_stride
            if p == "same":
                lines.append(f'    x = layers.MaxPooling2D({k}, {st}, padding="same", name="maxpool")(x)')
            else:
                if stem.pool_pad_value == "zero":
                    lines.append("    # zeros, as keras.applications pads (PyTorch's nn.MaxPool2d pads -inf)")
                    lines.append(f'    x = layers.ZeroPadding2D({p}, name="maxpool_pad")(x)')
                elif stem.norm:
                    lines.append("    # PyTorch pads its max-pool with -inf; zeros give the same maximum here because")
                    lines.append("    # the input comes out of a ReLU (>= 0)")
                    lines.append(f'    x = layers.ZeroPadding2D({p}, name="maxpool_pad")(x)')
                else:
                    lines.append("    # PyTorch pads its max-pool with -inf, and this input can be negative: "
                                 "zeros would not do")
                    lines.append("    x = layers.Lambda(lambda t: keras.ops.pad(t, "
                                 f"[[0, 0], [{p}, {p}], [{p}, {p}], [0, 0]], "
                                 'constant_values=float("-inf")), name="maxpool_pad")(x)')
                lines.append(f'    x = layers.MaxPooling2D({k}, {st}, name="maxpool")(x)')
        lines += [f"    stages = {self.stages}  # (blocks, width, stride) per stage",
                  "    for i, (depth, width, stride) in enumerate(stages, start=1):",
                  "        for j in range(depth):",
                  f'            x = {fn}(x, width, stride if {self.strided_block} else 1, name=f"layer{{i}}_{{j}}")']
        if s.preactivation:
            lines += ['    x = norm(x, "post_bn")  # pre-activation nets end with BN + ReLU',
                      '    x = layers.ReLU(name="post_relu")(x)']
        if head:
            lines += ['    x = layers.GlobalAveragePooling2D(name="avgpool")(x)',
                      '    x = layers.Dense(num_classes, name="fc")(x)']
            if s.head_activation == "softmax":
                lines.append('    x = layers.Softmax(name="softmax")(x)')
        lines.append(f'    return keras.Model(inputs, x, name="{s.name}")')
        return lines


def _se_width(a: AttentionSpec) -> list[str]:
    return ["def se_width(channels):",
            f"    # timm's make_divisible(channels * {a.reduction!r}, {a.divisor}): the nearest multiple of "
            f"{a.divisor}, at least {a.divisor}",
            "    # (not channels // 16: trap 28)",
            f"    v = channels * {a.reduction!r}",
            f"    return max({a.divisor}, int(v + {a.divisor} / 2) // {a.divisor} * {a.divisor})"]


def _eca_kernel_size(a: AttentionSpec) -> list[str]:
    return ["def eca_kernel_size(channels):",
            "    # ECA's kernel grows with log2 of the channels, odd, at least 3",
            f"    t = int(abs(math.log(channels, 2) + {a.beta}) / {a.gamma})",
            "    return max(t if t % 2 else t + 1, 3)"]
