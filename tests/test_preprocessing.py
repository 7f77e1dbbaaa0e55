"""Input preprocessing as each library states it, translated exactly (shared_specs.preprocessing)."""

import json

import numpy as np
import pytest

from shared_specs import CheckpointError, SpecError, get_spec
from shared_specs import preprocessing as pre
from shared_specs.synthetic import random_weights
from support import assert_f32_close

IMAGE = np.random.default_rng(0).integers(0, 256, size=(2, 9, 11, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode, module", [("caffe", "resnet"), ("tf", "resnet_v2")])
def test_keras_applications_modes_are_its_preprocess_input(mode, module):
    import importlib

    preprocess = importlib.import_module(f"keras.applications.{module}").preprocess_input
    theirs = np.asarray(preprocess(IMAGE.astype(np.float32)))
    # float32 rounding of the same arithmetic done in another order (mean/std vs scale/offset)
    np.testing.assert_allclose(pre.KERAS_APPLICATIONS_MODES[mode].normalize(IMAGE), theirs, rtol=1e-6, atol=1e-4)


def test_timm_pretrained_cfg_reads_and_writes_back():
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg("resnet50.a1_in1k").to_dict()
    prep = pre.from_timm(cfg)
    assert prep == pre.imagenet(input_size=(224, 224), resize="crop", crop_fraction=0.95, interpolation="bicubic")
    assert {k: cfg[k] for k in pre.to_timm(prep)} == pre.to_timm(prep)


def test_transformers_image_processor_configs():
    microsoft = {"image_processor_type": "ConvNextImageProcessor", "crop_pct": 0.875, "do_normalize": True,
                 "do_resize": True, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
                 "resample": 3, "size": {"shortest_edge": 224}}  # microsoft/resnet-50's
    prep = pre.from_transformers(microsoft)
    assert prep == pre.imagenet(input_size=(224, 224), resize="crop", crop_fraction=0.875, interpolation="bicubic")
    assert pre.from_transformers(pre.to_transformers(prep)) == prep  # written as BitImageProcessor: 256 -> 224
    big = pre.from_transformers({**microsoft, "size": {"shortest_edge": 384}})  # ConvNext squashes from 384 up
    assert (big.input_size, big.resize, big.crop_fraction) == ((384, 384), "squash", None)


def test_transformers_processor_computes_what_the_record_says():
    from transformers import BitImageProcessor

    prep = pre.Preprocessing(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), input_size=(9, 11), resize="squash")
    config = {k: v for k, v in pre.to_transformers(prep).items() if k != "image_processor_type"}
    pixels = BitImageProcessor(**config)(list(IMAGE), return_tensors="np")["pixel_values"]
    # same size in, so the resize is the identity; float32 rounding of the same arithmetic
    np.testing.assert_allclose(pixels.transpose(0, 2, 3, 1), prep.normalize(IMAGE), rtol=1e-5, atol=1e-5)


def test_keras_hub_image_converter_round_trip():
    prep = pre.imagenet(input_size=(64, 48), resize="crop", crop_fraction=1.0, interpolation="bilinear")
    kwargs, notes = pre.to_keras_hub(prep)
    assert notes == []
    back = pre.from_keras_hub(kwargs)
    np.testing.assert_allclose(back.mean + back.std, prep.mean + prep.std, rtol=1e-12)  # scale/offset and back
    assert (back.input_size, back.resize, back.interpolation) == ((64, 48), "crop", "bilinear")
    _, notes = pre.to_keras_hub(pre.imagenet(input_size=(224, 224), resize="crop", crop_fraction=0.875))
    assert "no crop fraction" in notes[0]


def test_bgr_is_made_rgb_exactly_by_reversing_the_first_conv():
    import torch

    import resnet_torch as rt

    spec = get_spec("resnet18", num_classes=4)
    weights = random_weights(spec)
    caffe = pre.KERAS_APPLICATIONS_MODES["caffe"]
    rgb, flipped = pre.to_rgb(caffe, "conv1", weights)
    assert rgb.channel_order == "RGB" and weights["conv1.weight"] is not flipped["conv1.weight"]
    outputs = []
    for prep, w in ((caffe, weights), (rgb, flipped)):
        model = rt.build(spec).eval()
        rt.import_weights(model, w)
        with torch.no_grad():
            outputs.append(model(torch.from_numpy(prep.normalize(IMAGE).transpose(0, 3, 1, 2).copy())).numpy())
    # float32 bound (tests/support.py): the same sums over channels, taken in the other order
    assert_f32_close(outputs[1], outputs[0], "BGR model vs its RGB twin")


def test_records_are_strict_and_travel_in_checkpoint_metadata():
    prep = pre.imagenet(input_size=(224, 224), resize="crop", crop_fraction=0.875)
    meta = pre.to_metadata(prep, ["a", "b"])
    assert pre.from_metadata(meta, "f") == (prep, ["a", "b"])
    with pytest.raises(SpecError, match="unknown preprocessing key"):
        pre.Preprocessing.from_dict({"mean": [0.5], "std": [0.5], "colour": "RGB"})
    with pytest.raises(SpecError, match="crop_fraction belongs to resize 'crop'"):
        pre.Preprocessing(crop_fraction=0.9)
    with pytest.raises(SpecError, match="std must be > 0"):
        pre.Preprocessing(std=(1.0, 0.0, 1.0))
    with pytest.raises(CheckpointError, match="f: stored preprocessing/labels metadata is invalid"):
        pre.from_metadata({"labels": json.dumps([1, 2])}, "f")
    assert pre.labels_from_id2label({"0": "LABEL_0", "1": "LABEL_1"}, 2, "c") is None  # transformers' placeholders
