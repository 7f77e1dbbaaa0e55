"""keras-hub's ResNet_vd presets (keras_hub/src/models/resnet/resnet_presets.py,
`resnet_vd_{18,34,50}_imagenet`), registered from one table.

keras-hub's vd layout comes from PaddleClas's ResNet_vd: a deep 3x3 stem (32, 32, 64),
avg-pool shortcuts (shortcut "D") and a projection in the first block of every stage,
even the basic block's first stage, where the shape does not change
(`StageSpec.always_project`); Keras BatchNorm (epsilon 1e-5, momentum 0.9, biased
running variance) and a zero-padded stem max-pool. Parameter counts with the 1000-class
head equal keras-hub's preset metadata (11,722,824, 21,838,408, 25,629,512; and
`keras_hub_vd("resnet_vd_101", "bottleneck", (3, 4, 23, 3))` and the 152 (3, 8, 36, 3) and
200 (3, 12, 48, 3) give 44,673,864, 60,363,592, 74,933,064: the same layers deeper, left
unregistered so that the full-size parity tests stay within their time). keras-hub's v1
and v2 presets (resnet_18 ... 152, resnet_v2_50/101) are torchvision's and timm's
resnetv2 networks with Keras's BatchNorm statistics update; resnet_keras.from_keras_hub
names every one of them.
"""

from __future__ import annotations

from shared_specs.presets import register
from shared_specs.spec import BatchNormSpec, ResNetSpec, StageSpec, StemSpec

FAMILY = "keras-hub"

#   preset           block          blocks per stage
TABLE: dict[str, tuple[str, tuple[int, ...]]] = {
    "resnet_vd_18":  ("basic",      (2, 2, 2, 2)),
    "resnet_vd_34":  ("basic",      (3, 4, 6, 3)),
    "resnet_vd_50":  ("bottleneck", (3, 4, 6, 3)),
}  # fmt: skip


def keras_hub_vd(name: str, block: str, depths: tuple[int, ...]) -> ResNetSpec:
    """keras-hub's ResNetBackbone(block_type=f"{block}_block_vd") with 1000 classes."""
    stages = tuple(StageSpec(d, w, s, always_project=(i == 0 and block == "basic"))  # 64 -> 64 at stride 1
                   for i, (d, w, s) in enumerate(zip(depths, (64, 128, 256, 512), (1, 2, 2, 2))))
    return ResNetSpec(
        name=name, block=block, stages=stages, shortcut="D",  # type: ignore[arg-type]
        stem=StemSpec(widths=(32, 32, 64), kernel_size=3, pool_pad_value="zero"),  # ZeroPadding2D(1) + MaxPooling2D
        batchnorm=BatchNormSpec(epsilon=1e-5, running_stats_decay=0.9, running_var="biased"),  # Keras's BN
    )


def _register(name: str, block: str, depths: tuple[int, ...]) -> None:
    def factory() -> ResNetSpec:
        return keras_hub_vd(name, block, depths)

    factory.__doc__ = f"keras-hub {name}_imagenet (PaddleClas ResNet_vd: deep stem, avg-pool shortcut, " \
                      "projection in every stage's first block)"
    register(name, FAMILY)(factory)


for _name, (_block, _depths) in TABLE.items():
    _register(_name, _block, _depths)
