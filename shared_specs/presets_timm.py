"""Every ResNet timm registers, as presets generated from one table.

timm 1.0.31 registers 101 ResNet architectures: 81 built by `timm.models.resnet.ResNet`
(post-activation, stride on the 3x3) and 20 by `timm.models.resnetv2.ResNetV2`
(pre-activation). Each row of `TABLE` is one of them, written in the vocabulary of timm's
own constructor arguments (stem_type, stem_width, avg_down, cardinality, base_width,
attn_layer, aa_layer, ...), so a row can be checked against timm's registration at a
glance; `TimmResNet.spec` / `TimmResNetV2.spec` translate that vocabulary into a spec once.

A timm name that is already a preset (torchvision's resnet18 ... wide_resnet101_2, and the
hand-written resnet18d ... resnet101d) keeps its preset; the table checks at import that the
networks are the same. torchvision's and timm's differ only in initialisation: timm's
ResNet zero-initialises the norm closing each block (zero_init_last=True), torchvision's
does not, and the preset stays torchvision's. `timm_architecture(name)` gives the spec of
timm's model, initialisation included, for any of the 101.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shared_specs.errors import SpecError
from shared_specs.presets import get_spec, list_presets, register
from shared_specs.spec import AttentionSpec, NormSpec, ResNetSpec, StageSpec, StemSpec

Block = Literal["basic", "bottleneck"]
_STRIDES = (1, 2, 2, 2)  # both timm classes: layer1 unstrided, then stride 2 (output stride 32)

# families, as `resnet-rosetta list` groups them
PLAIN, SE, ECA, ANTI_ALIAS, RS, V2, BIT = ("timm ResNet", "timm SE-ResNet / SENet", "timm ECA-ResNet",
                                           "timm anti-aliased ResNet", "timm ResNet-RS", "timm ResNetV2",
                                           "timm ResNetV2 BiT")


@dataclass(frozen=True)
class TimmResNet:
    """One `timm.models.resnet.ResNet` registration, in its constructor's terms.

    `attn_layer` is "se" (timm's SEModule, rd_ratio 1/16 unless `se_ratio`), "eca" or None;
    `aa_layer` "blur" (BlurPool2d) or "avg" (nn.AvgPool2d); `norm_layer` "batchnorm" or
    "groupnorm" (timm's GroupNorm, 32 groups); `block` one type, or one per stage (test_resnet).
    `pruned` gives each block's conv widths, one tuple per stage, from timm's _pruned files.
    """

    block: Block | tuple[Block, ...]
    layers: tuple[int, ...]
    stem_type: Literal["", "deep", "deep_tiered"] = ""
    stem_width: int = 64
    avg_down: bool = False
    cardinality: int = 1
    base_width: int = 64
    attn_layer: Literal["se", "eca"] | None = None
    se_ratio: float = 1 / 16
    aa_layer: Literal["blur", "avg"] | None = None
    norm_layer: Literal["batchnorm", "groupnorm"] = "batchnorm"
    replace_stem_pool: bool = False
    block_reduce_first: int = 1
    down_kernel_size: int = 1
    channels: tuple[int, ...] = (64, 128, 256, 512)
    pruned: tuple[tuple[tuple[int, int, int], ...], ...] | None = None

    def spec(self, name: str) -> ResNetSpec:
        blocks = self.block if isinstance(self.block, tuple) else (self.block,) * len(self.layers)
        stages = []
        for i, (depth, width) in enumerate(zip(self.layers, self.channels, strict=True)):
            own = blocks[i] if blocks[i] != blocks[0] else None
            widths = self.pruned[i] if self.pruned else None
            stages.append(StageSpec(depth, width, _STRIDES[i], block=own, block_widths=widths))
        return ResNetSpec(
            name=name,
            block=blocks[0],
            stages=tuple(stages),
            shortcut="D" if self.avg_down else "B",
            stem=_stem(self.stem_type, self.stem_width, preact=False, pool="conv" if self.replace_stem_pool else "max"),
            groups=self.cardinality,
            width_per_group=self.base_width,
            reduce_first=self.block_reduce_first,
            shortcut_kernel_size=self.down_kernel_size,
            attention=_attention(self.attn_layer, self.se_ratio),
            anti_alias=self.aa_layer or "none",
            norm=NormSpec(kind=self.norm_layer),  # timm's GroupNorm: 32 groups, eps 1e-5
            zero_init_last_bn=True,  # timm's ResNet(zero_init_last=True)
        )

    @property
    def family(self) -> str:
        if self.replace_stem_pool:
            return RS
        if self.aa_layer:
            return ANTI_ALIAS
        return {"se": SE, "eca": ECA}.get(self.attn_layer or "", PLAIN)

    def features(self) -> str:
        blocks = (f"{self.block} blocks" if isinstance(self.block, str) else
                  "blocks " + "/".join(self.block))
        parts = [f"{blocks} {list(self.layers)}"]
        if self.channels != (64, 128, 256, 512):
            parts.append(f"stage widths {list(self.channels)}")
        if self.cardinality > 1 or self.base_width != 64:
            parts.append(f"{self.cardinality} groups x width {self.base_width}" if self.cardinality > 1
                         else f"bottleneck width x{self.base_width // 64}")
        if self.stem_type:
            widths = "/".join(map(str, _stem(self.stem_type, self.stem_width, preact=False).widths))
            parts.append(f"{self.stem_type.replace('_', '-')} 3x3 stem {widths}")
        if self.replace_stem_pool:
            parts.append("strided-conv stem pool")
        if self.avg_down:
            parts.append("avg-pool shortcut D")
        if self.down_kernel_size > 1:
            parts.append(f"{self.down_kernel_size}x{self.down_kernel_size} strided shortcut")
        if self.block_reduce_first > 1:
            parts.append(f"first conv width / {self.block_reduce_first}")
        if self.attn_layer == "se":
            parts.append("SE" if self.se_ratio == 1 / 16 else f"SE ratio {self.se_ratio:g}")
        elif self.attn_layer == "eca":
            parts.append("ECA")
        if self.aa_layer:
            parts.append({"blur": "BlurPool", "avg": "2x2 avg-pool"}[self.aa_layer] + " anti-aliasing")
        if self.norm_layer == "groupnorm":
            parts.append("GroupNorm 32")
        if self.pruned:
            parts.append("pruned widths")
        return ", ".join(parts)


@dataclass(frozen=True)
class TimmResNetV2:
    """One `timm.models.resnetv2.ResNetV2` registration (pre-activation), in its constructor's terms.

    `bit` is `_create_resnetv2_bit`: stem_type 'fixed' (ConstantPad2d(1, 0) + MaxPool2d(3, 2),
    the spec's zero-padded pool) and StdConv2d(eps=1e-8). `norm_layer` is BatchNormAct2d
    ("batchnorm"), GroupNormAct ("groupnorm", 32 groups), EvoNorm2dS0 ("evonorm_s0", 32
    groups) or FilterResponseNormTlu2d ("frn"); epsilons are timm's 1e-5.
    """

    layers: tuple[int, ...]
    basic: bool = False
    width_factor: int = 1
    stem_type: Literal["", "deep", "tiered"] = ""
    avg_down: bool = False
    norm_layer: Literal["batchnorm", "groupnorm", "evonorm_s0", "frn"] = "batchnorm"
    bit: bool = False

    def spec(self, name: str) -> ResNetSpec:
        wf = self.width_factor
        base = (64, 128, 256, 512)  # timm's channels are block outputs: (64, ...) basic, (256, ...) bottleneck
        stem = _stem(self.stem_type, 64 * wf, preact=True)
        if self.bit:
            stem = StemSpec(widths=stem.widths, norm=False, pool_pad_value="zero")  # stem_type 'fixed'
        return ResNetSpec(
            name=name,
            block="basic" if self.basic else "bottleneck",
            preactivation=True,
            stages=tuple(StageSpec(d, w * wf, s) for d, w, s in zip(self.layers, base, _STRIDES, strict=True)),
            shortcut="D" if self.avg_down else "B",
            stem=stem,
            norm=NormSpec(kind="groupnorm" if self.bit else self.norm_layer),
            std_conv_epsilon=1e-8 if self.bit else None,  # _create_resnetv2_bit: StdConv2d(eps=1e-8)
        )

    @property
    def family(self) -> str:
        return BIT if self.bit else V2

    def features(self) -> str:
        parts = [f"pre-activation {'basic blocks' if self.basic else 'bottlenecks'} {list(self.layers)}"]
        if self.width_factor > 1:
            parts.append(f"width x{self.width_factor}")
        if self.stem_type:
            parts.append(f"{self.stem_type} 3x3 stem " + "/".join(map(str, _stem(self.stem_type, 64, True).widths)))
        if self.avg_down:
            parts.append("avg-pool shortcut D")
        if self.bit:
            parts.append("GroupNorm 32, weight-standardised convs, zero-padded stem pool")
        elif self.norm_layer != "batchnorm":
            parts.append({"groupnorm": "GroupNorm 32", "evonorm_s0": "EvoNorm-S0", "frn": "FRN + TLU"}[
                self.norm_layer])
        return ", ".join(parts)


def _stem(stem_type: str, stem_width: int, preact: bool, pool: Literal["max", "conv"] = "max") -> StemSpec:
    """timm's stems: a 7x7/2 conv of 64 (ResNet) or `stem_width` (ResNetV2) channels, or three
    3x3 convs: ResNet's 'deep' (w, w, 2w) and 'deep_tiered' (3 (w // 4), w, 2w) of
    stem_width w; ResNetV2's 'deep' (w / 2, w / 2, w) and 'tiered' (3w / 8, w / 2, w)."""
    if not stem_type:
        return StemSpec(widths=(stem_width if preact else 64,), norm=not preact, pool=pool)
    if preact:
        first = 3 * stem_width // 8 if stem_type == "tiered" else stem_width // 2
        widths = (first, stem_width // 2, stem_width)
    else:
        widths = (3 * (stem_width // 4) if "tiered" in stem_type else stem_width, stem_width, 2 * stem_width)
    return StemSpec(widths=widths, kernel_size=3, norm=not preact, pool=pool)


def _attention(kind: str | None, se_ratio: float) -> AttentionSpec | None:
    if kind is None:
        return None
    return AttentionSpec(kind, reduction=se_ratio) if kind == "se" else AttentionSpec("eca")


Row = TimmResNet | TimmResNetV2
B, N = "basic", "bottleneck"
D18, D34, D50, D101, D152, D200 = (2, 2, 2, 2), (3, 4, 6, 3), (3, 4, 6, 3), (3, 4, 23, 3), (3, 8, 36, 3), (3, 24, 36, 3)
_DEEP = dict(stem_type="deep", stem_width=32, avg_down=True)  # the "d" models
_TIERED = dict(stem_type="deep_tiered", stem_width=32, avg_down=True)  # the "t" models
_RS = dict(stem_type="deep", stem_width=32, avg_down=True, replace_stem_pool=True, attn_layer="se", se_ratio=0.25)

# ecaresnet50d_pruned / ecaresnet101d_pruned (Kim et al. 2020): (conv1, conv2, conv3) output
# widths of each block, read from timm/models/_pruned/*.txt (the stems are not pruned)
_PRUNED_50 = (
    ((47, 18, 19), (52, 22, 19), (64, 35, 19)),
    ((85, 37, 171), (107, 80, 171), (120, 85, 171), (125, 87, 171)),
    ((198, 126, 818), (255, 232, 818), (256, 233, 818), (253, 235, 818), (256, 225, 818), (256, 239, 818)),
    ((492, 237, 2022), (512, 500, 2022), (512, 490, 2022)),
)
_PRUNED_101 = (
    ((45, 25, 26), (53, 20, 26), (60, 27, 26)),
    ((81, 24, 142), (93, 49, 142), (102, 54, 142), (122, 78, 142)),
    ((101, 25, 278), (239, 160, 278), (234, 156, 278), (250, 176, 278), (253, 191, 278), (251, 175, 278),
     (230, 128, 278), (244, 154, 278), (244, 159, 278), (238, 97, 278), (244, 149, 278), (253, 181, 278),
     (245, 119, 278), (255, 216, 278), (256, 201, 278), (253, 149, 278), (254, 141, 278), (256, 190, 278),
     (256, 217, 278), (255, 156, 278), (256, 155, 278), (256, 232, 278), (256, 214, 278)),
    ((499, 289, 2042), (512, 512, 2042), (512, 502, 2042)),
)

# One row per timm registration, in timm/models/resnet.py then resnetv2.py order.
TABLE: dict[str, Row] = {
    "resnet10t": TimmResNet(B, (1, 1, 1, 1), **_TIERED),
    "resnet14t": TimmResNet(N, (1, 1, 1, 1), **_TIERED),
    "resnet18": TimmResNet(B, D18),
    "resnet18d": TimmResNet(B, D18, **_DEEP),
    "resnet34": TimmResNet(B, D34),
    "resnet34d": TimmResNet(B, D34, **_DEEP),
    "resnet26": TimmResNet(N, (2, 2, 2, 2)),
    "resnet26t": TimmResNet(N, (2, 2, 2, 2), **_TIERED),
    "resnet26d": TimmResNet(N, (2, 2, 2, 2), **_DEEP),
    "resnet50": TimmResNet(N, D50),
    "resnet50c": TimmResNet(N, D50, stem_type="deep", stem_width=32),
    "resnet50d": TimmResNet(N, D50, **_DEEP),
    "resnet50s": TimmResNet(N, D50, stem_type="deep", stem_width=64),
    "resnet50t": TimmResNet(N, D50, **_TIERED),
    "resnet101": TimmResNet(N, D101),
    "resnet101c": TimmResNet(N, D101, stem_type="deep", stem_width=32),
    "resnet101d": TimmResNet(N, D101, **_DEEP),
    "resnet101s": TimmResNet(N, D101, stem_type="deep", stem_width=64),
    "resnet152": TimmResNet(N, D152),
    "resnet152c": TimmResNet(N, D152, stem_type="deep", stem_width=32),
    "resnet152d": TimmResNet(N, D152, **_DEEP),
    "resnet152s": TimmResNet(N, D152, stem_type="deep", stem_width=64),
    "resnet200": TimmResNet(N, D200),
    "resnet200d": TimmResNet(N, D200, **_DEEP),
    "wide_resnet50_2": TimmResNet(N, D50, base_width=128),
    "wide_resnet101_2": TimmResNet(N, D101, base_width=128),
    "resnet50_gn": TimmResNet(N, D50, norm_layer="groupnorm"),
    "resnext50_32x4d": TimmResNet(N, D50, cardinality=32, base_width=4),
    "resnext50d_32x4d": TimmResNet(N, D50, cardinality=32, base_width=4, **_DEEP),
    "resnext101_32x4d": TimmResNet(N, D101, cardinality=32, base_width=4),
    "resnext101_32x8d": TimmResNet(N, D101, cardinality=32, base_width=8),
    "resnext101_32x16d": TimmResNet(N, D101, cardinality=32, base_width=16),
    "resnext101_32x32d": TimmResNet(N, D101, cardinality=32, base_width=32),
    "resnext101_64x4d": TimmResNet(N, D101, cardinality=64, base_width=4),
    "ecaresnet26t": TimmResNet(N, (2, 2, 2, 2), attn_layer="eca", **_TIERED),
    "ecaresnet50d": TimmResNet(N, D50, attn_layer="eca", **_DEEP),
    "ecaresnet50d_pruned": TimmResNet(N, D50, attn_layer="eca", pruned=_PRUNED_50, **_DEEP),
    "ecaresnet50t": TimmResNet(N, D50, attn_layer="eca", **_TIERED),
    "ecaresnetlight": TimmResNet(N, (1, 1, 11, 3), stem_width=32, avg_down=True, attn_layer="eca"),
    "ecaresnet101d": TimmResNet(N, D101, attn_layer="eca", **_DEEP),
    "ecaresnet101d_pruned": TimmResNet(N, D101, attn_layer="eca", pruned=_PRUNED_101, **_DEEP),
    "ecaresnet200d": TimmResNet(N, D200, attn_layer="eca", **_DEEP),
    "ecaresnet269d": TimmResNet(N, (3, 30, 48, 8), attn_layer="eca", **_DEEP),
    "ecaresnext26t_32x4d": TimmResNet(N, (2, 2, 2, 2), cardinality=32, base_width=4, attn_layer="eca", **_TIERED),
    "ecaresnext50t_32x4d": TimmResNet(N, D50, cardinality=32, base_width=4, attn_layer="eca", **_TIERED),
    "seresnet18": TimmResNet(B, D18, attn_layer="se"),
    "seresnet34": TimmResNet(B, D34, attn_layer="se"),
    "seresnet50": TimmResNet(N, D50, attn_layer="se"),
    "seresnet50t": TimmResNet(N, D50, attn_layer="se", **_TIERED),
    "seresnet101": TimmResNet(N, D101, attn_layer="se"),
    "seresnet152": TimmResNet(N, D152, attn_layer="se"),
    "seresnet152d": TimmResNet(N, D152, attn_layer="se", **_DEEP),
    "seresnet200d": TimmResNet(N, D200, attn_layer="se", **_DEEP),
    "seresnet269d": TimmResNet(N, (3, 30, 48, 8), attn_layer="se", **_DEEP),
    "seresnext26d_32x4d": TimmResNet(N, (2, 2, 2, 2), cardinality=32, base_width=4, attn_layer="se", **_DEEP),
    "seresnext26t_32x4d": TimmResNet(N, (2, 2, 2, 2), cardinality=32, base_width=4, attn_layer="se", **_TIERED),
    "seresnext50_32x4d": TimmResNet(N, D50, cardinality=32, base_width=4, attn_layer="se"),
    "seresnext101_32x4d": TimmResNet(N, D101, cardinality=32, base_width=4, attn_layer="se"),
    "seresnext101_32x8d": TimmResNet(N, D101, cardinality=32, base_width=8, attn_layer="se"),
    "seresnext101d_32x8d": TimmResNet(N, D101, cardinality=32, base_width=8, attn_layer="se", **_DEEP),
    "seresnext101_64x4d": TimmResNet(N, D101, cardinality=64, base_width=4, attn_layer="se"),
    "senet154": TimmResNet(N, D152, cardinality=64, base_width=4, stem_type="deep", down_kernel_size=3,
                           block_reduce_first=2, attn_layer="se"),
    "resnetblur18": TimmResNet(B, D18, aa_layer="blur"),
    "resnetblur50": TimmResNet(N, D50, aa_layer="blur"),
    "resnetblur50d": TimmResNet(N, D50, aa_layer="blur", **_DEEP),
    "resnetblur101d": TimmResNet(N, D101, aa_layer="blur", **_DEEP),
    "resnetaa34d": TimmResNet(B, D34, aa_layer="avg", **_DEEP),
    "resnetaa50": TimmResNet(N, D50, aa_layer="avg"),
    "resnetaa50d": TimmResNet(N, D50, aa_layer="avg", **_DEEP),
    "resnetaa101d": TimmResNet(N, D101, aa_layer="avg", **_DEEP),
    "seresnetaa50d": TimmResNet(N, D50, aa_layer="avg", attn_layer="se", **_DEEP),
    "seresnextaa101d_32x8d": TimmResNet(N, D101, cardinality=32, base_width=8, aa_layer="avg", attn_layer="se",
                                        **_DEEP),
    "seresnextaa201d_32x8d": TimmResNet(N, (3, 24, 36, 4), cardinality=32, base_width=8, aa_layer="avg",
                                        attn_layer="se", **{**_DEEP, "stem_width": 64}),
    "resnetrs50": TimmResNet(N, D50, **_RS),
    "resnetrs101": TimmResNet(N, D101, **_RS),
    "resnetrs152": TimmResNet(N, D152, **_RS),
    "resnetrs200": TimmResNet(N, D200, **_RS),
    "resnetrs270": TimmResNet(N, (4, 29, 53, 4), **_RS),
    "resnetrs350": TimmResNet(N, (4, 36, 72, 4), **_RS),
    "resnetrs420": TimmResNet(N, (4, 44, 87, 4), **_RS),
    "test_resnet": TimmResNet((B, B, N, B), (1, 1, 1, 1), stem_type="deep", stem_width=16, avg_down=True,
                              channels=(32, 48, 48, 96)),
    "resnetv2_50x1_bit": TimmResNetV2(D50, bit=True),
    "resnetv2_50x3_bit": TimmResNetV2(D50, width_factor=3, bit=True),
    "resnetv2_101x1_bit": TimmResNetV2(D101, bit=True),
    "resnetv2_101x3_bit": TimmResNetV2(D101, width_factor=3, bit=True),
    "resnetv2_152x2_bit": TimmResNetV2(D152, width_factor=2, bit=True),
    "resnetv2_152x4_bit": TimmResNetV2(D152, width_factor=4, bit=True),
    "resnetv2_18": TimmResNetV2(D18, basic=True),
    "resnetv2_18d": TimmResNetV2(D18, basic=True, stem_type="deep", avg_down=True),
    "resnetv2_34": TimmResNetV2(D34, basic=True),
    "resnetv2_34d": TimmResNetV2(D34, basic=True, stem_type="deep", avg_down=True),
    "resnetv2_50": TimmResNetV2(D50),
    "resnetv2_50d": TimmResNetV2(D50, stem_type="deep", avg_down=True),
    "resnetv2_50t": TimmResNetV2(D50, stem_type="tiered", avg_down=True),
    "resnetv2_101": TimmResNetV2(D101),
    "resnetv2_101d": TimmResNetV2(D101, stem_type="deep", avg_down=True),
    "resnetv2_152": TimmResNetV2(D152),
    "resnetv2_152d": TimmResNetV2(D152, stem_type="deep", avg_down=True),
    "resnetv2_50d_gn": TimmResNetV2(D50, stem_type="deep", avg_down=True, norm_layer="groupnorm"),
    "resnetv2_50d_evos": TimmResNetV2(D50, stem_type="deep", avg_down=True, norm_layer="evonorm_s0"),
    "resnetv2_50d_frn": TimmResNetV2(D50, stem_type="deep", avg_down=True, norm_layer="frn"),
}


def timm_architecture(name: str) -> ResNetSpec:
    """The spec of timm's model `name` (one of TABLE's 101), timm's initialisation included:
    the preset of that name, except that where the preset is torchvision's, timm's
    zero_init_last=True replaces torchvision's default."""
    if name not in TABLE:
        raise SpecError(f"{name!r} is not one of timm's {len(TABLE)} ResNet registrations (see TABLE)")
    return TABLE[name].spec(name)


def _register_table() -> tuple[str, ...]:
    """Register every row whose name is not a preset yet; check the others are the same network."""
    added = []
    taken = set(list_presets())
    for name, row in TABLE.items():
        spec = row.spec(name)
        if name in taken:
            kept = get_spec(name)
            if kept.replace(zero_init_last_bn=spec.zero_init_last_bn) != spec:
                raise SpecError(f"preset {name!r} and timm's {name} are different networks: "
                                f"{kept.differences(spec)}")
            continue

        def factory(name: str = name, row: Row = row) -> ResNetSpec:
            return row.spec(name)

        factory.__doc__ = f"timm {name} ({row.features()})."
        register(name, family=row.family)(factory)
        added.append(name)
    return tuple(added)


# The presets this table added (the other timm names were presets already).
TABLE_PRESETS: tuple[str, ...] = _register_table()
