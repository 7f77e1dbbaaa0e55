"""Fine-tuned heads: global pooling (avg, max, avgmax, catavgmax), timm's dropout, and an
nn.Sequential classifier of Linear / ReLU / Dropout / BatchNorm1d, in the spec, the plan,
the counts and both builders."""

from __future__ import annotations

import numpy as np
import pytest

import resnet_keras as rk
import resnet_torch as rt
from shared_specs import ResNetSpec, SpecError, count_params, get_spec, make_plan
from shared_specs.spec import HeadLayerSpec, HeadSpec
from shared_specs.synthetic import random_weights
from support import assert_f32_close, keras_forward, random_input, torch_forward

SMALL = {"stages": [{"depth": 1, "width": 8}, {"depth": 1, "width": 16, "stride": 2}], "stem": {"widths": [8]}}
MLP = {"pool": "catavgmax", "dropout": 0.2,
       "layers": [{"kind": "linear", "features": 24, "bias": False}, {"kind": "batchnorm"}, {"kind": "relu"},
                  {"kind": "dropout", "rate": 0.5}]}


def test_stored_specs_without_a_head_read_as_torchvisions() -> None:
    data = get_spec("resnet18").to_dict()
    del data["head"]
    spec = ResNetSpec.from_dict(data)
    assert spec == get_spec("resnet18") and spec.head == HeadSpec()
    assert [op.name for op in make_plan(spec).head] == ["avgpool", "fc"]


def test_head_names_follow_torchvisions_sequential() -> None:
    spec = get_spec("resnet18", **SMALL, num_classes=5, head=MLP, head_activation="softmax")
    assert ResNetSpec.from_json(spec.to_json()) == spec
    assert spec.head.sequential and spec.head.layers[0] == HeadLayerSpec("linear", features=24, bias=False)
    names = [(op.name, type(op).__name__) for op in make_plan(spec).head]
    assert names == [("global_pool", "GlobalPool"), ("head_drop", "Dropout"), ("fc.0", "Linear"),
                     ("fc.1", "BatchNorm1d"), ("fc.2", "ReLU"), ("fc.3", "Dropout"), ("fc.4", "Linear"),
                     ("softmax", "Softmax")]
    # catavgmax doubles the 16 features; fc.0 has no bias; BatchNorm1d keeps running statistics
    base = count_params(get_spec("resnet18", **SMALL, num_classes=None))
    assert count_params(spec).trainable - base.trainable == 32 * 24 + 2 * 24 + 24 * 5 + 5
    assert count_params(spec).buffers - base.buffers == 2 * 24
    assert spec.depth == get_spec("resnet18", **SMALL, num_classes=5).depth + 1
    assert spec.replace(head={"layers": [], "sequential": False}).head == HeadSpec(pool="catavgmax", dropout=0.2)


@pytest.mark.parametrize(("change", "message"), [
    ({"head": {"pool": "mean"}}, r"head.pool must be one of \['avg', 'max', 'avgmax', 'catavgmax'\]"),
    ({"head": {"layers": [{"kind": "gelu"}]}}, r"head.layers\[0\].kind must be one of"),
    ({"head": {"layers": [{"kind": "dropout", "rate": 1.0}]}}, r"head.layers\[0\].rate is a dropout probability"),
    ({"head": {"layers": [{"kind": "relu", "features": 3}]}}, r"head.layers\[0\].features and bias belong to a linear"),
    ({"head": {"dropout": -0.1}}, r"head.dropout is a dropout probability"),
    ({"num_classes": None, "head": {"pool": "max"}}, r"with num_classes=None \(no classifier\) it must be the default"),
])
def test_bad_heads_are_refused_naming_the_field(change: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        get_spec("resnet18").replace(**change)


@pytest.mark.keras_backend
@pytest.mark.parametrize("head", [MLP, {"pool": "max"}, {"pool": "avgmax", "sequential": True}])
def test_heads_compute_the_same_in_both_frameworks(head: dict) -> None:
    spec = get_spec("resnet18", **SMALL, num_classes=5, head=head, head_activation="softmax" if head is MLP else "none")
    weights = random_weights(spec, seed=3)
    torch_model = rt.build(spec)
    rt.import_weights(torch_model, weights)
    keras_model = rk.build(spec)
    rk.import_weights(keras_model, weights)
    x = random_input(spec, (37, 41))
    # float32 parity bound: summation order differs between ATen and the Keras backend's kernels (trap 15)
    assert_f32_close(keras_forward(keras_model, x), torch_forward(torch_model, x), f"head {head}")
    exported = rk.export_weights(keras_model)
    assert exported.keys() == weights.keys() and all(np.array_equal(exported[k], weights[k]) for k in weights)


# -- a bare checkpoint's head --------------------------------------------------------------------


def test_infer_spec_reads_a_fine_tuned_head_from_its_tensors() -> None:
    from shared_specs import infer_spec
    from shared_specs.infer import inference_sources

    spec = get_spec("resnet18", **SMALL, num_classes=5, head={
        "pool": "catavgmax", "layers": [{"kind": "linear", "features": 24}, {"kind": "batchnorm"},
                                        {"kind": "relu"}, {"kind": "dropout", "rate": 0.5}]})
    weights = random_weights(spec)
    assert [k for k in weights if k.startswith("fc")][-2:] == ["fc.4.weight", "fc.4.bias"]
    inferred = infer_spec(weights)
    assert inferred.head == spec.head and inferred.num_classes == 5  # fc.2, fc.3: ReLU, Dropout by convention
    read, assumed = inference_sources(inferred)
    assert "head.pool='catavgmax'" in read and "head.layers[1].kind='batchnorm'" in read
    assert "head.layers[2].kind='relu'" in assumed and "stages[].stride=[1, 2]" in assumed
    dropout_first = spec.replace(head={"pool": "avg", "layers": [{"kind": "dropout", "rate": 0.5}]})
    assert infer_spec(random_weights(dropout_first)).head == dropout_first.head


def test_infer_spec_refuses_a_head_it_cannot_read() -> None:
    from shared_specs import infer_spec

    spec = get_spec("resnet18", **SMALL, num_classes=5, head={
        "layers": [{"kind": "linear", "features": 24}, {"kind": "relu"}, {"kind": "relu"}, {"kind": "dropout",
                                                                                             "rate": 0.1}]})
    weights = random_weights(spec)
    with pytest.raises(SpecError, match=r"fc\.1 \.\.\. fc\.3 hold no tensors and no convention says which"):
        infer_spec(weights)
    assert infer_spec(weights, head={"layers": [layer.__dict__ for layer in spec.head.layers]}).head == spec.head
    weights["fc.0.weight"] = np.zeros((24, 7), np.float32)
    with pytest.raises(SpecError, match=r"fc\.0\.weight has shape \(24, 7\): a classifier over the last stage's 16"):
        infer_spec(weights, head={"layers": []})


def test_fine_tuned_torchvision_both_ways() -> None:
    import torch
    from torch import nn
    from torchvision.models.resnet import BasicBlock, ResNet

    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=1000)
    model.fc = nn.Sequential(nn.Dropout(0.2), nn.Linear(512, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    spec, weights = rt.from_torchvision(model.eval())
    assert [layer.kind for layer in spec.head.layers] == ["dropout", "linear", "batchnorm", "relu"]
    weights = random_weights(spec, seed=2)
    back = rt.to_torchvision(spec, weights)
    assert type(back) is ResNet and isinstance(back.fc, nn.Sequential) and len(back.fc) == 5
    ours = rt.build(spec)
    rt.import_weights(ours, weights)
    x = random_input(spec, (37, 41))
    assert np.array_equal(torch_forward(back, x), torch_forward(ours, x))  # the same modules, the same kernels
    with pytest.raises(SpecError, match=r"head\.dropout=0\.1 \(torchvision: 0\.0\); head\.pool='max' \(torchvision: "
                                        r"'avg'\)"):
        rt.to_torchvision(spec.replace(head={"pool": "max", "dropout": 0.1}), weights)
    assert torch.is_tensor(back.fc[2].running_var)
