"""ONNX: export from either framework, run with onnxruntime, compare with the source model; read weights back.

Every export has dynamic batch, height and width (unless a test fixes them) and is run at
sizes it was not traced at: odd, non-square, and another batch size. Weights are random
with random BatchNorm statistics. Bottleneck presets are trimmed in depth (every block kind
still appears) because export time grows with the number of layers.

Tolerance: onnxruntime's CPU kernels (MLAS) accumulate float32 convolutions in another order
than ATen, oneDNN or XLA: float32 rounding of one function, which is what the project's float32
parity bound (support.assert_f32_close, derived in shared_specs/tolerances.py) covers on any
CPU; any padding, layout or BatchNorm mistake (errors of order 1e-2 to 1) fails it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

import resnet_keras as rk
import resnet_torch as rt
from resnet_rosetta.interop.onnx_import import from_onnx
from resnet_torch.layers import same_padding
from shared_specs import CheckpointError, ResNetSpec, SpecError, StageSpec, get_spec
from support import BACKEND, assert_f32_close, keras_forward, nhwc, random_input, random_weights, torch_forward


def trimmed(name: str, depths: tuple[int, ...]) -> ResNetSpec:
    spec = get_spec(name)
    return spec.replace(stages=[StageSpec(d, s.width, s.stride) for d, s in zip(depths, spec.stages, strict=True)])


CASES = {
    "resnet18": get_spec("resnet18"),  # basic blocks, torchvision
    "resnet50_v1": trimmed("resnet50_v1", (1, 1, 1, 1)),  # bottleneck, stride on the 1x1, zero-padded pool
    "resnet50_v2": trimmed("resnet50_v2", (2, 2, 2, 1)),  # pre-activation; depth 2 keeps the strided identity
    "cifar_resnet20": get_spec("cifar_resnet20"),  # option A: strided slice + channel zero-padding
    "tutorial_keras_resnet18": get_spec("tutorial_keras_resnet18"),  # Keras 'same' padding, softmax head
}
SIZES = [(45, 39), (32, 33)]  # exported at 64x64, batch 2


def session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    return sess.run(["output"], {"input": x})[0]


def torch_model(spec: ResNetSpec, seed: int = 0) -> tuple[rt.ResNet, dict[str, np.ndarray]]:
    weights = random_weights(spec, seed=seed)
    model = rt.build(spec)
    rt.import_weights(model, weights)
    return model, weights


def keras_model(spec: ResNetSpec, seed: int = 0) -> rk.ResNet:
    model = rk.build(spec)
    rk.import_weights(model, random_weights(spec, seed=seed))
    return model


def input_shape(path) -> list:
    return [d.dim_param or d.dim_value for d in onnx.load(path).graph.input[0].type.tensor_type.shape.dim]


# -- PyTorch -----------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_torch_export_runs_in_onnxruntime_like_the_model_and_reads_back_exactly(name, tmp_path):
    spec = CASES[name]
    model, weights = torch_model(spec)
    model.train()  # exported in eval mode whatever the model's mode, which is restored
    path = rt.export_onnx(model, tmp_path / f"{name}.onnx")
    assert model.training
    sess = session(path)
    batch, channels, height, width = input_shape(path)
    assert channels == 3 and all(isinstance(d, str) for d in (batch, height, width))  # named, i.e. dynamic
    for batch, hw in zip((3, 1), SIZES):
        x = random_input(spec, hw, batch=batch)
        assert_f32_close(run(sess, x), torch_forward(model, x), f"{name} {x.shape}")
    read_spec, read = from_onnx(path)
    assert read_spec == spec
    assert list(read) == list(weights) and all(np.array_equal(read[k], weights[k]) for k in weights)


def test_torch_export_with_fixed_shape_rejects_other_shapes(tmp_path):
    spec = CASES["cifar_resnet20"]
    model, _ = torch_model(spec)
    path = rt.export_onnx(model, tmp_path / "fixed.onnx", dynamic_batch=False, input_size=(33, 31))
    assert input_shape(path) == [1, 3, 33, 31]
    sess = session(path)
    x = random_input(spec, (33, 31), batch=1)
    assert_f32_close(run(sess, x), torch_forward(model, x), "fixed shape")
    with pytest.raises(InvalidArgument, match=r"(?s)invalid dimensions for input: input.*index: 2 Got: 32 "
                                              r"Expected: 33"):
        run(sess, random_input(spec, (32, 32), batch=1))  # onnxruntime refuses, nothing silent


def torchvision_bottleneck(seed: int) -> torch.nn.Module:
    """torchvision's own ResNet class with one Bottleneck per stage, random weights and BN statistics."""
    torch.manual_seed(seed)
    model = torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, [1, 1, 1, 1])
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.3), m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_a_torchvision_graph_reads_back_as_canonical_weights_and_checks_the_spec(tmp_path):
    reference = torchvision_bottleneck(seed=5)
    path = rt.export_onnx(reference, tmp_path / "tv.onnx")
    x = random_input(get_spec("resnet50"), (37, 41), batch=3)
    assert_f32_close(run(session(path), x), torch_forward(reference, x), "torchvision graph")
    spec = trimmed("resnet50", (1, 1, 1, 1))
    inferred, _ = from_onnx(path)  # no metadata: infer_spec reads the initializers, the graph confirms
    # one block per stage: every block projects, so shortcuts B and C are one network and infer_spec says C
    assert inferred.differences(spec) == [("shortcut", "C", "B")]
    _, weights = from_onnx(path, spec)
    state = {k: v.numpy() for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert weights.keys() == state.keys() and all(np.array_equal(weights[k], state[k]) for k in state)
    # Same tensor names and shapes, but the original v1 puts the stride on the 1x1: the graph says otherwise.
    with pytest.raises(CheckpointError, match=r"layer2.0.conv1 has strides \[1, 1\] .* stride 2"):
        from_onnx(path, spec.replace(bottleneck_stride="1x1"))
    with pytest.raises(CheckpointError, match="epsilon 1e-05 in the graph, 0.001 in the spec"):
        from_onnx(path, spec.replace(batchnorm={"epsilon": 1e-3}))


def test_batchnorm_folded_by_the_torch_optimiser_is_refused_with_the_reason(tmp_path):
    spec = CASES["cifar_resnet20"]
    model, _ = torch_model(spec)
    program = torch.onnx.export(model.eval(), (torch.zeros(2, 3, 32, 32),), dynamo=True, optimize=True, verbose=False)
    program.save(str(tmp_path / "folded.onnx"))
    names = {i.name for i in onnx.load(tmp_path / "folded.onnx").graph.initializer}
    # The trap: the folded tensor keeps the conv's name but no longer holds the conv's weights.
    folded = onnx.numpy_helper.to_array(next(i for i in onnx.load(tmp_path / "folded.onnx").graph.initializer
                                             if i.name == "conv1.weight"))
    assert "conv1.weight" in names and not np.allclose(folded, model.conv1.weight.detach().numpy())
    with pytest.raises(CheckpointError, match="0 BatchNormalization nodes where cifar_resnet20 has 19 BatchNorms"):
        from_onnx(tmp_path / "folded.onnx", spec)


def test_same_padding_is_tensorflows_for_every_size_kernel_and_stride():
    for size in range(1, 70):
        for k in range(1, 8):
            for s in range(1, 5):
                total = max((-(-size // s) - 1) * s + k - size, 0)  # TF's definition (tf.nn conv docs)
                assert same_padding(size, k, s) == (total // 2, total - total // 2), (size, k, s)


# -- bad input ------------------------------------------------------------------------


def test_unwritable_paths_fail_before_exporting_and_leave_nothing(tmp_path):
    model = rt.build("cifar_resnet20")
    (tmp_path / "a_file").write_text("x")
    cases = {tmp_path / "missing" / "m.onnx": "does not exist", tmp_path / "a_file" / "m.onnx": "is not a directory",
             tmp_path: "is a directory"}
    for path, message in cases.items():
        with pytest.raises(CheckpointError, match=message):
            rt.export_onnx(model, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
    with pytest.raises(TypeError, match="needs a torch.nn.Module"):
        rt.export_onnx("resnet18", tmp_path / "m.onnx")


class Broken(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).view(-1, 7)  # cannot hold for dynamic sizes: the exporter fails


def test_a_failed_export_leaves_the_existing_file_untouched(tmp_path):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"previous")
    # torch.export finds that no dynamic size satisfies the view's divisibility by 7
    with pytest.raises(torch.onnx.OnnxExporterError, match=r"(?s)Failed to export the model with torch.export.*"
                                                           r"inconsistencies.*Mod\(.*, 7\)"):
        rt.export_onnx(Broken(), target)
    assert target.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_from_onnx_names_what_is_wrong_with_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        from_onnx(tmp_path / "none.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a protobuf\xff" * 10)
    with pytest.raises(CheckpointError, match="not a readable ONNX model"):
        from_onnx(tmp_path / "junk.onnx")
    model, _ = torch_model(CASES["cifar_resnet20"])
    path = rt.export_onnx(model, tmp_path / "m.onnx")
    with pytest.raises(CheckpointError, match=r"stored spec differs from the one given in stages"):
        from_onnx(path, "cifar_resnet32")


def test_export_after_tensorflow_without_triton_is_an_error_not_a_segfault():
    code = textwrap.dedent(
        """
        import tensorflow, resnet_torch
        try:
            resnet_torch.export_onnx(resnet_torch.build("cifar_resnet20"), "never.onnx")
        except RuntimeError as err:
            print(err)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]  # a segfault would be -11 / 139
    assert "TensorFlow was imported before triton" in result.stdout


# -- Keras (each backend in its own process) -------------------------------------------


@pytest.mark.keras_backend
@pytest.mark.parametrize("name", CASES)
def test_keras_export_runs_in_onnxruntime_like_the_model(name, tmp_path):
    spec = CASES[name]
    model = keras_model(spec)
    target = tmp_path / f"{name}.onnx"
    if BACKEND == "jax":
        with pytest.raises(ImportError, match="on the jax backend through jax2onnx, which is not installed"):
            rk.export_onnx(model, target)
        assert not target.exists()
        return
    fixed = BACKEND == "torch" and spec.padding == "same"
    if fixed:
        with pytest.raises(SpecError, match="pass input_size=\\(H, W\\)"):
            rk.export_onnx(model, target)
        path = rk.export_onnx(model, target, input_size=SIZES[0])
        assert input_shape(path)[1:] == [*SIZES[0], 3]
    else:
        path = rk.export_onnx(model, target)
        batch, height, width, channels = input_shape(path)
        assert channels == 3 and all(isinstance(d, str) for d in (batch, height, width))  # named, i.e. dynamic
    sess = session(path)
    for batch, hw in zip((3, 1), SIZES[:1] if fixed else SIZES):
        x = random_input(spec, hw, batch=batch)
        assert_f32_close(run(sess, nhwc(x)), keras_forward(model, x), f"{name} {x.shape} on {BACKEND}")
    # Keras's exporters fold BatchNorm away: the function survives, the weights do not.
    with pytest.raises(CheckpointError, match=f"0 BatchNormalization nodes where {spec.name} has"):
        from_onnx(path)


@pytest.mark.keras_backend
@pytest.mark.only_on("torch")  # a limit of the torch backend's TorchScript tracer only
def test_keras_torch_backend_limit_on_same_padding_is_real_not_ours(tmp_path):
    """export_onnx refuses dynamic sizes for 'same' specs on the torch backend because Keras's own export fails."""
    model = keras_model(CASES["tutorial_keras_resnet18"])
    signature = [keras.InputSpec(shape=(None, None, None, 3), dtype="float32", name="input")]
    # the tracer turns the input size that 'same' padding computes with into a traced value
    with pytest.raises(torch.onnx.errors.SymbolicValueError, match="because it is not constant"):
        model.export(str(tmp_path / "m.onnx"), format="onnx", verbose=False, input_signature=signature)


@pytest.mark.keras_backend
def test_keras_export_validates_its_input(tmp_path):
    with pytest.raises(TypeError, match="needs a resnet_keras ResNet"):
        rk.export_onnx(keras.Sequential([keras.layers.Dense(2)]), tmp_path / "m.onnx")
    with pytest.raises(CheckpointError, match="does not exist"):
        rk.export_onnx(rk.build("cifar_resnet20"), tmp_path / "missing" / "m.onnx")
    if BACKEND != "jax":  # on jax the missing converter is reported first
        with pytest.raises(SpecError, match="float32 models only"):
            rk.export_onnx(rk.build("cifar_resnet20", dtype="float64"), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


# -- docs ---------------------------------------------------------------------------------


@pytest.mark.keras_backend
def test_docs_onnx_examples_run_and_print_what_they_claim():
    import contextlib
    import io
    import re
    from pathlib import Path

    doc = Path(__file__).resolve().parent.parent / "docs" / "onnx.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    printed = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(printed):
        for block in blocks:
            exec(compile(block, str(doc), "exec"), namespace)
    expected = ["True", "cifar_resnet20 97 True"] + (["True"] if BACKEND != "jax" else []) + ["True"]
    assert printed.getvalue().splitlines() == expected


# -- timm's layers: every new op kind in a small model ---------------------------------

TINY = get_spec("resnet18", stem={"widths": [16]}, stages=[{"depth": 1, "width": 16, "stride": 1},
                                                           {"depth": 1, "width": 32, "stride": 2}])
FAMILIES = {  # two-block basic nets; two op kinds per model keep the exports few
    # GroupNorm (InstanceNormalization + Mul/Add at opset 18), SE, weight standardisation inside the graph
    "se_groupnorm_stdconv": TINY.replace(attention={"kind": "se"}, norm={"kind": "groupnorm", "groups": 8},
                                         std_conv_epsilon=1e-8),
    "eca_evonorm": TINY.replace(attention={"kind": "eca"}, norm={"kind": "evonorm_s0", "groups": 8}),  # Conv1d
    "frn_blurpool": TINY.replace(norm={"kind": "frn"}, anti_alias="blur"),  # reflect padding
    "avg_anti_alias": TINY.replace(anti_alias="avg"),  # floor-mode 2x2 average pools
}


def family_sizes(spec: ResNetSpec) -> list[tuple[int, int]]:
    # floor-mode average pools halve a branch whose shortcut rounds up: such nets (timm's too) take
    # only sizes that halve evenly at each of their 3 strides
    return [(40, 56), (24, 32)] if spec.anti_alias == "avg" else SIZES


@pytest.fixture(scope="module")
def family_export(tmp_path_factory):
    """Exports each family model once per test process: (model, weights, path)."""
    done: dict = {}

    def export(name: str):
        if name not in done:
            model, weights = torch_model(FAMILIES[name])
            done[name] = (model, weights, rt.export_onnx(model, tmp_path_factory.mktemp(name) / f"{name}.onnx"))
        return done[name]

    return export


@pytest.mark.parametrize("name", FAMILIES)
def test_torch_export_of_timm_layers_runs_like_the_model_and_reads_back_exactly(name, family_export):
    spec = FAMILIES[name]
    model, weights, path = family_export(name)
    sess = session(path)
    for batch, hw in zip((3, 1), family_sizes(spec)):
        x = random_input(spec, hw, batch=batch)
        assert_f32_close(run(sess, x), torch_forward(model, x), f"{name} {x.shape}")
    read_spec, read = from_onnx(path)
    assert read_spec == spec
    assert list(read) == list(weights) and all(np.array_equal(read[k], weights[k]) for k in weights)


def without_metadata(path, target):
    graph = onnx.load(path)
    del graph.metadata_props[:]  # a graph from elsewhere: from_onnx checks it against the spec it is given
    onnx.save(graph, target)
    return target


def test_from_onnx_checks_groupnorm_and_standardised_convs_against_the_spec(tmp_path, family_export):
    spec = FAMILIES["se_groupnorm_stdconv"]
    model, weights, opset18 = family_export("se_groupnorm_stdconv")
    # opset 18 writes GroupNorm as InstanceNormalization over the groups, then Mul and Add with the
    # canonical weight and bias; opset 21 as one GroupNormalization node reading them
    opset21 = rt.export_onnx(model, tmp_path / "opset21.onnx", opset=21)
    for exported, op_type in ((opset18, "InstanceNormalization"), (opset21, "GroupNormalization")):
        path = without_metadata(exported, tmp_path / f"plain_{op_type}.onnx")
        assert sum(n.op_type == op_type for n in onnx.load(path).graph.node) == 6  # stem, 2 per block, projection
        _, read = from_onnx(path, spec)
        assert all(np.array_equal(read[k], weights[k]) for k in weights)
        with pytest.raises(CheckpointError, match="bn1 has epsilon 1e-05 in the graph, 0.001 in the spec"):
            from_onnx(path, spec.replace(norm={"epsilon": 1e-3}))
        with pytest.raises(CheckpointError, match=r"conv1 reads its kernel standardised in the graph, as it is in "
                                                  r"the spec \(std_conv_epsilon\)"):
            from_onnx(path, spec.replace(std_conv_epsilon=None))
        with pytest.raises(CheckpointError, match="normalises with 6 GroupNorms where resnet18 has 6 BatchNorms"):
            from_onnx(path, spec.replace(norm={"kind": "batchnorm"}))
    with pytest.raises(CheckpointError, match="bn1 has 8 groups in the graph, 4 in the spec"):
        from_onnx(path, spec.replace(norm={"groups": 4}))  # opset 21 names the groups; 18 reshapes by them


def test_an_optimised_graph_that_renamed_norm_vectors_is_refused_naming_them(tmp_path):
    spec = FAMILIES["frn_blurpool"]
    model, _ = torch_model(spec)
    program = torch.onnx.export(model.eval(), (torch.zeros(2, 3, 32, 32),), dynamo=True, optimize=True, verbose=False)
    program.save(str(tmp_path / "optimised.onnx"))
    with pytest.raises(CheckpointError, match=r"of resnet18's tensors are not initializers of the graph, e\.g\. "
                                              r"bn1\.weight.*an optimiser renamed or folded them"):
        from_onnx(tmp_path / "optimised.onnx", spec)


@pytest.mark.keras_backend
@pytest.mark.parametrize("name", FAMILIES)
def test_keras_export_of_timm_layers_runs_like_the_model(name, tmp_path):
    spec = FAMILIES[name]
    model = keras_model(spec)
    target = tmp_path / f"{name}.onnx"
    if BACKEND == "jax":
        with pytest.raises(ImportError, match="jax2onnx, which is not installed"):
            rk.export_onnx(model, target)
        return
    sizes = family_sizes(spec)
    if BACKEND == "torch" and spec.anti_alias != "none":  # Keras traces dynamic sizes at 1x1
        with pytest.raises(SpecError, match=f"anti_alias='{spec.anti_alias}'.* pass input_size"):
            rk.export_onnx(model, target)
        sizes = sizes[:1]
        path = rk.export_onnx(model, target, input_size=sizes[0])
    else:
        path = rk.export_onnx(model, target)
    sess = session(path)
    for batch, hw in zip((3, 1), sizes):
        x = random_input(spec, hw, batch=batch)
        assert_f32_close(run(sess, nhwc(x)), keras_forward(model, x), f"{name} {x.shape} on {BACKEND}")
    with pytest.raises(CheckpointError):  # folded BatchNorm, or no canonical names at all
        from_onnx(path)
