"""What a classifier expects of its input image, carried with its weights.

Weights are only half of a ported classifier: fed pixels normalised another way (mean
and std of another data set, [-1, 1] instead of ImageNet statistics, BGR instead of
RGB) the same network answers differently. Every library says it differently: timm's
`pretrained_cfg`, transformers' `preprocessor_config.json`, keras-hub's
`ResNetImageConverter` (scale and offset), keras.applications' `preprocess_input` modes.
`Preprocessing` is one framework-free record of all of them, and this module holds the
translations from and to each library's own words (plain dicts: no library is imported),
and the canonical checkpoint's metadata entries for it and for the class names.

The pixel arithmetic is exact in every translation: a model input is
`(pixel / 255 - mean) / std` per channel, taken in `channel_order`. How the image is
brought to `input_size` is carried as the source states it (`resize`, `crop_fraction`,
`interpolation`); libraries resample with their own arithmetic (PIL, torchvision,
tf.image), so only an image already at the input size goes through two of them alike.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from shared_specs.errors import CheckpointError, SpecError

INTERPOLATIONS: tuple[str, ...] = ("nearest", "bilinear", "bicubic", "lanczos3", "lanczos5", "box", "hamming",
                                   "area")
RESIZES: tuple[str, ...] = ("crop", "squash", "pad")
# PIL's resampling codes, which transformers' `resample` holds (PIL.Image.Resampling).
_PIL_CODES: dict[int, str] = {0: "nearest", 1: "lanczos3", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
_TIMM_NAMES: dict[str, str] = {"lanczos": "lanczos3"}  # timm's word where it differs from ours
_KERAS_INTERPOLATIONS: tuple[str, ...] = ("nearest", "bilinear", "bicubic", "lanczos3", "lanczos5", "area")
# The checkpoint metadata keys (safetensors __metadata__ values are strings: JSON inside).
PREPROCESSING_KEY = "preprocessing"
LABELS_KEY = "labels"


@dataclass(frozen=True)
class Preprocessing:
    """A classifier's input convention.

    - `mean`, `std`: per channel, on pixels scaled to [0, 1]: input = (pixel / 255 -
      mean) / std. ImageNet's timm/torchvision statistics are (0.485, 0.456, 0.406) /
      (0.229, 0.224, 0.225); keras.applications' "tf" mode ([-1, 1]) is 0.5 / 0.5; its
      "caffe" mode (mean subtraction on 0..255 pixels) is mean/255 with std 1/255.
    - `channel_order`: "RGB", or "BGR" (keras.applications' "caffe" mode, ResNet50 v1).
    - `input_size`: (height, width) the model was trained at, or None if unstated.
    - `resize`: how an image is brought to `input_size`: "crop" scales it to cover
      `input_size / crop_fraction` and crops the centre (timm's "center" crop mode,
      transformers' shortest-edge resize, keras-hub's crop_to_aspect_ratio); "squash"
      resizes to `input_size` whatever the aspect ratio; "pad" letterboxes.
    - `crop_fraction`: timm's and transformers' crop_pct: the centre crop is this
      fraction of the resized image (0.875 for 224 of 256).
    - `interpolation`: one of INTERPOLATIONS.
    """

    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    channel_order: Literal["RGB", "BGR"] = "RGB"
    input_size: tuple[int, int] | None = None
    resize: Literal["crop", "squash", "pad"] | None = None
    crop_fraction: float | None = None
    interpolation: str | None = None

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or not value:
                raise SpecError(f"preprocessing.{name} must list one number per channel, got {value!r}")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
                raise SpecError(f"preprocessing.{name} must hold finite numbers, got {value!r}")
            object.__setattr__(self, name, tuple(float(v) for v in value))
        if len(self.mean) != len(self.std):
            raise SpecError(f"preprocessing.mean has {len(self.mean)} channels, std {len(self.std)}")
        if any(s <= 0 for s in self.std):
            raise SpecError(f"preprocessing.std must be > 0, got {self.std}")
        if self.channel_order not in ("RGB", "BGR"):
            raise SpecError(f"preprocessing.channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        if self.channel_order == "BGR" and len(self.mean) != 3:
            raise SpecError("preprocessing.channel_order 'BGR' reorders 3 channels; mean has "
                            f"{len(self.mean)}")
        if self.input_size is not None:
            size = self.input_size
            if (not isinstance(size, (list, tuple)) or len(size) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size)):
                raise SpecError(f"preprocessing.input_size must be (height, width) in pixels, got {size!r}")
            object.__setattr__(self, "input_size", tuple(size))
        if self.resize is not None and self.resize not in RESIZES:
            raise SpecError(f"preprocessing.resize must be one of {list(RESIZES)} or None, got {self.resize!r}")
        if self.crop_fraction is not None:
            if isinstance(self.crop_fraction, bool) or not isinstance(self.crop_fraction, (int, float)) \
                    or not 0 < self.crop_fraction <= 1:
                raise SpecError(f"preprocessing.crop_fraction must be in (0, 1], got {self.crop_fraction!r}")
            if self.resize != "crop":
                raise SpecError(f"preprocessing.crop_fraction belongs to resize 'crop', not {self.resize!r}")
            object.__setattr__(self, "crop_fraction", float(self.crop_fraction))
        if self.interpolation is not None and self.interpolation not in INTERPOLATIONS:
            raise SpecError(f"preprocessing.interpolation must be one of {list(INTERPOLATIONS)}, "
                            f"got {self.interpolation!r}")

    @property
    def channels(self) -> int:
        return len(self.mean)

    def scale_offset(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per channel (scale, offset) with input = pixel * scale + offset, pixels in 0..255
        (keras-hub's ImageConverter form)."""
        return (tuple(1.0 / (255.0 * s) for s in self.std), tuple(-m / s for m, s in zip(self.mean, self.std)))

    @classmethod
    def from_scale_offset(cls, scale: float | Sequence[float] | None, offset: float | Sequence[float] | None,
                          channels: int = 3, **rest: Any) -> Preprocessing:
        """The inverse of `scale_offset`; a scalar applies to every channel, None is 1 / 0."""
        scales = _per_channel("scale", 1.0 if scale is None else scale, channels)
        offsets = _per_channel("offset", 0.0 if offset is None else offset, channels)
        if any(s <= 0 for s in scales):
            raise SpecError(f"preprocessing scale must be > 0 per channel, got {scales}")
        std = tuple(1.0 / (255.0 * s) for s in scales)
        return cls(mean=tuple(-o * s for o, s in zip(offsets, std)), std=std, **rest)

    def normalize(self, pixels: Any) -> Any:
        """float32 model input of an (..., H, W, C) array of 0..255 pixels in RGB, already at
        the input size: the channel reorder and the arithmetic, no resizing."""
        import numpy as np

        x = np.asarray(pixels, dtype=np.float64)
        if self.channel_order == "BGR":
            x = x[..., ::-1]
        return ((x / 255.0 - np.array(self.mean)) / np.array(self.std)).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        """Strict: unknown keys are an error, missing ones take the defaults."""
        if not isinstance(data, Mapping):
            raise SpecError(f"preprocessing must be an object, got {type(data).__name__}")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise SpecError(f"unknown preprocessing key(s) {unknown}")
        return cls(**data)

    def describe(self) -> list[str]:
        """Human-readable lines, for `resnet-rosetta describe`."""
        mean = ", ".join(f"{m:.4g}" for m in self.mean)
        std = ", ".join(f"{s:.4g}" for s in self.std)
        lines = [f"input = (pixel / 255 - mean) / std, channels {self.channel_order}: mean ({mean}), std ({std})"]
        if self.input_size is not None:
            how = {"crop": "resize to cover, centre crop", "squash": "resize ignoring aspect ratio",
                   "pad": "resize and pad"}.get(self.resize or "", "resize (unstated how)")
            fraction = f", crop fraction {self.crop_fraction:g}" if self.crop_fraction is not None else ""
            interp = f", {self.interpolation}" if self.interpolation else ""
            lines.append(f"input size {self.input_size[0]}x{self.input_size[1]}: {how}{fraction}{interp}")
        return lines


def _per_channel(name: str, value: float | Sequence[float], channels: int) -> tuple[float, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),) * channels
    if not isinstance(value, (list, tuple)) or len(value) != channels:
        raise SpecError(f"preprocessing {name} must be a number or one per channel ({channels}), got {value!r}")
    return tuple(float(v) for v in value)


def imagenet(**rest: Any) -> Preprocessing:
    """timm's and torchvision's ImageNet statistics (IMAGENET_DEFAULT_MEAN / STD)."""
    return Preprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), **rest)


# -- each library's words --------------------------------------------------------------

# keras.applications' `preprocess_input(x, mode=...)` (keras/src/applications/imagenet_utils.py):
# "caffe" flips RGB to BGR and subtracts the ImageNet mean on 0..255 pixels (ResNet50 v1);
# "tf" maps 0..255 to [-1, 1] (ResNet50V2); "torch" is timm's and torchvision's statistics.
KERAS_APPLICATIONS_MODES: dict[str, Preprocessing] = {
    "caffe": Preprocessing(mean=(103.939 / 255, 116.779 / 255, 123.68 / 255), std=(1 / 255,) * 3, channel_order="BGR",
                           input_size=(224, 224)),
    "tf": Preprocessing(mean=(0.5,) * 3, std=(0.5,) * 3, input_size=(224, 224)),
    "torch": imagenet(input_size=(224, 224)),
}


def from_timm(pretrained_cfg: Mapping[str, Any]) -> Preprocessing:
    """timm's `model.pretrained_cfg` (mean, std, input_size (C, H, W), interpolation,
    crop_pct, crop_mode "center" or "squash")."""
    cfg = dict(pretrained_cfg)
    size = cfg.get("input_size")
    mode = {"center": "crop", "squash": "squash", "border": "pad"}.get(cfg.get("crop_mode") or "center")
    if mode is None:
        raise SpecError(f"timm crop_mode {cfg.get('crop_mode')!r} is not one of center, squash, border")
    interp = cfg.get("interpolation")
    interp = _TIMM_NAMES.get(interp, interp) if interp else None
    return Preprocessing(
        mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))), std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        input_size=(int(size[1]), int(size[2])) if size else None, resize=mode,
        crop_fraction=float(cfg["crop_pct"]) if mode == "crop" and cfg.get("crop_pct") else None,
        interpolation=interp if interp in INTERPOLATIONS else None)


def to_timm(prep: Preprocessing) -> dict[str, Any]:
    """The pretrained_cfg entries timm's data config reads (timm.data.resolve_data_config)."""
    _refuse_bgr(prep, "timm's pretrained_cfg")
    cfg: dict[str, Any] = {"mean": prep.mean, "std": prep.std}
    if prep.input_size is not None:
        cfg["input_size"] = (prep.channels, *prep.input_size)
    if prep.resize is not None:
        cfg["crop_mode"] = {"crop": "center", "squash": "squash", "pad": "border"}[prep.resize]
    if prep.crop_fraction is not None:
        cfg["crop_pct"] = prep.crop_fraction
    if prep.interpolation is not None:
        cfg["interpolation"] = {v: k for k, v in _TIMM_NAMES.items()}.get(prep.interpolation, prep.interpolation)
    return cfg


def from_transformers(config: Mapping[str, Any], where: str = "preprocessor_config.json") -> Preprocessing:
    """A transformers image processor's config: ConvNextImageProcessor (microsoft/resnet-*:
    shortest edge S < 384 is resized to S / crop_pct and centre-cropped to S x S; S >= 384
    squashes to S x S), and the generic keys of BitImageProcessor / ViTImageProcessor
    (size as shortest_edge or height/width, do_center_crop + crop_size)."""
    c = dict(config)
    rescale = float(c.get("rescale_factor", 1 / 255)) if c.get("do_rescale", True) else 1.0
    mean, std = c.get("image_mean"), c.get("image_std")
    channels = len(mean) if isinstance(mean, (list, tuple)) else 3
    if not c.get("do_normalize", True) or mean is None or std is None:
        mean, std = (0.0,) * channels, (1.0,) * channels
    mean, std = _per_channel("image_mean", mean, channels), _per_channel("image_std", std, channels)
    # (pixel * r - m) / s  ==  (pixel / 255 - m / (255 r)) / (s / (255 r))
    mean, std = tuple(m / (255 * rescale) for m in mean), tuple(s / (255 * rescale) for s in std)
    kind = str(c.get("image_processor_type") or c.get("feature_extractor_type") or "")
    size = c.get("size")
    if isinstance(size, int):  # configs written before size became a dict
        size = {"shortest_edge": size}
    resample = c.get("resample")
    interp = _PIL_CODES.get(resample) if isinstance(resample, int) else None
    rest: dict[str, Any] = {"interpolation": interp}
    if c.get("do_resize", True) and isinstance(size, Mapping):
        crop = c.get("crop_size") if c.get("do_center_crop") else None
        if kind.startswith("ConvNext") and "shortest_edge" in size:
            s = int(size["shortest_edge"])
            if s < 384:
                rest.update(input_size=(s, s), resize="crop", crop_fraction=float(c.get("crop_pct", 224 / 256)))
            else:
                rest.update(input_size=(s, s), resize="squash")
        elif "shortest_edge" in size and isinstance(crop, Mapping):
            h, w = int(crop["height"]), int(crop["width"])
            fraction = round(min(h, w) / int(size["shortest_edge"]), 6)
            rest.update(input_size=(h, w), resize="crop", crop_fraction=fraction)
        elif "height" in size and "width" in size and not crop:
            rest.update(input_size=(int(size["height"]), int(size["width"])), resize="squash")
    try:
        return Preprocessing(mean=mean, std=std, **rest)
    except SpecError as err:
        raise SpecError(f"{where}: {err}") from None


def to_transformers(prep: Preprocessing) -> dict[str, Any]:
    """A transformers `preprocessor_config.json` (BitImageProcessor: shortest-edge resize
    and centre crop, or an exact resize, then rescale by 1/255 and normalise), which
    `AutoImageProcessor.from_pretrained` reads. BGR input has no word here: see `to_rgb`."""
    _refuse_bgr(prep, "a transformers image processor")
    config: dict[str, Any] = {
        "image_processor_type": "BitImageProcessor", "do_convert_rgb": True,
        "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": list(prep.mean), "image_std": list(prep.std),
        "do_resize": False, "do_center_crop": False,
    }
    if prep.interpolation is not None:
        codes = {v: k for k, v in _PIL_CODES.items()}
        config["resample"] = codes.get(prep.interpolation, 2)  # area, lanczos5: PIL has none; bilinear
    if prep.input_size is not None:
        h, w = prep.input_size
        if prep.resize == "crop":
            edge = int(min(h, w) / (prep.crop_fraction or 1.0))
            config.update(do_resize=True, size={"shortest_edge": edge}, do_center_crop=True,
                          crop_size={"height": h, "width": w})
        else:  # squash, and pad (no word for it in transformers' processors): an exact resize
            config.update(do_resize=True, size={"height": h, "width": w})
    return config


def from_keras_hub(converter_config: Mapping[str, Any]) -> Preprocessing:
    """keras-hub's ImageConverter config (image_size, scale, offset, crop_to_aspect_ratio,
    pad_to_aspect_ratio, interpolation); the channel count comes from scale or offset."""
    c = dict(converter_config)
    scale, offset = c.get("scale"), c.get("offset")
    channels = next((len(v) for v in (scale, offset) if isinstance(v, (list, tuple))), 3)
    size = c.get("image_size")
    rest: dict[str, Any] = {}
    if size is not None and None not in tuple(size):
        resize = "crop" if c.get("crop_to_aspect_ratio", True) else "pad" if c.get("pad_to_aspect_ratio") else "squash"
        rest.update(input_size=(int(size[0]), int(size[1])), resize=resize,
                    crop_fraction=1.0 if resize == "crop" else None)
    interp = c.get("interpolation")
    rest["interpolation"] = interp if interp in INTERPOLATIONS else None
    return Preprocessing.from_scale_offset(scale, offset, channels, **rest)


def to_keras_hub(prep: Preprocessing) -> tuple[dict[str, Any], list[str]]:
    """keras-hub ImageConverter arguments, and a note for each thing it cannot say
    (a crop fraction below 1, an interpolation Keras lacks). BGR: see `to_rgb`."""
    _refuse_bgr(prep, "keras-hub's ImageConverter")
    scale, offset = prep.scale_offset()
    kwargs: dict[str, Any] = {"scale": list(scale), "offset": list(offset)}
    notes = []
    if prep.input_size is not None:
        kwargs.update(image_size=tuple(prep.input_size), crop_to_aspect_ratio=prep.resize == "crop",
                      pad_to_aspect_ratio=prep.resize == "pad")
        if prep.crop_fraction is not None and prep.crop_fraction < 1:
            notes.append(f"keras-hub's ImageConverter has no crop fraction: it resizes straight to "
                         f"{prep.input_size[0]}x{prep.input_size[1]} where the source crops {prep.crop_fraction:g} "
                         "of a larger resize (kept in metadata.json)")
    if prep.interpolation in _KERAS_INTERPOLATIONS:
        kwargs["interpolation"] = prep.interpolation
    elif prep.interpolation is not None:
        notes.append(f"Keras has no {prep.interpolation} interpolation; keras-hub will use bilinear")
    return kwargs, notes


def _refuse_bgr(prep: Preprocessing, target: str) -> None:
    if prep.channel_order == "BGR":
        raise SpecError(f"{target} has no BGR input; reorder the first conv's input channels with "
                        "shared_specs.preprocessing.to_rgb first")


def to_rgb(prep: Preprocessing, first_conv: str, weights: Mapping[str, Any]) -> tuple[Preprocessing, dict[str, Any]]:
    """A BGR convention made RGB exactly: the first conv's input channels reversed (and
    mean/std with them), so that RGB pixels give the same model input it had. The weights
    are copied, not changed in place; an RGB convention comes back as it is."""
    if prep.channel_order == "RGB":
        return prep, dict(weights)
    out = dict(weights)
    out[f"{first_conv}.weight"] = out[f"{first_conv}.weight"][:, ::-1].copy()
    return Preprocessing(**{**asdict(prep), "mean": prep.mean[::-1], "std": prep.std[::-1],
                            "channel_order": "RGB"}), out


# -- the canonical checkpoint's metadata ----------------------------------------------------


def to_metadata(preprocessing: Preprocessing | None, labels: Sequence[str] | None) -> dict[str, str]:
    """safetensors __metadata__ entries (strings) for what travels with the weights."""
    meta = {}
    if preprocessing is not None:
        meta[PREPROCESSING_KEY] = json.dumps(preprocessing.to_dict())
    if labels is not None:
        meta[LABELS_KEY] = json.dumps(list(labels))
    return meta


def from_metadata(meta: Mapping[str, str], where: str) -> tuple[Preprocessing | None, list[str] | None]:
    """(preprocessing, labels) stored by `to_metadata`; CheckpointError naming `where` if malformed."""
    prep, labels = None, None
    try:
        if PREPROCESSING_KEY in meta:
            prep = Preprocessing.from_dict(json.loads(meta[PREPROCESSING_KEY]))
        if LABELS_KEY in meta:
            labels = json.loads(meta[LABELS_KEY])
            if not isinstance(labels, list) or not all(isinstance(v, str) for v in labels):
                raise SpecError("labels must be a list of strings")
    except (json.JSONDecodeError, SpecError, TypeError) as err:
        raise CheckpointError(f"{where}: stored {PREPROCESSING_KEY}/{LABELS_KEY} metadata is invalid: {err}") from None
    return prep, labels


def labels_from_id2label(id2label: Mapping[Any, Any] | None, num_classes: int | None, where: str) -> list[str] | None:
    """transformers' id2label ({"0": "tench", ...}) as a list; None when it is only the
    LABEL_0 ... placeholders transformers invents, or there is no classifier."""
    if not id2label or num_classes is None:
        return None
    try:
        table = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError):
        raise CheckpointError(f"{where}: id2label keys must be class indices, got {sorted(id2label)[:3]}") from None
    if sorted(table) != list(range(num_classes)):
        raise CheckpointError(f"{where}: id2label names {len(table)} classes, the classifier has {num_classes}")
    labels = [table[i] for i in range(num_classes)]
    return None if labels == [f"LABEL_{i}" for i in range(num_classes)] else labels
