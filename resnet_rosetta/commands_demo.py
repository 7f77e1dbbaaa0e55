"""`resnet-rosetta demo`: one spec, two frameworks, weights ported, parity measured."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from resnet_rosetta.frameworks import import_frameworks
from shared_specs import count_flops, count_params, get_spec


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="build resnet50 in PyTorch and Keras, port the weights, print the parity measured")
    p.add_argument("--preset", default="resnet50", help="preset to demonstrate (default resnet50)")
    p.add_argument("--out", default="out/demo", help="folder for the files it writes (default out/demo)")
    p.add_argument("--input-size", type=int, default=224, metavar="N", help="image size (default 224)")
    p.set_defaults(func=run_demo)


def _step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def run_demo(args: argparse.Namespace) -> int:
    torch, keras = import_frameworks()
    import resnet_keras as rk
    import resnet_torch as rt

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = get_spec(args.preset)
    size = args.input_size
    params = count_params(spec)
    _step(f"spec {spec.name}: {params.trainable:,} parameters, {count_flops(spec, (size, size)) / 1e9:.2f} GMACs "
          f"at {size}x{size} (shared_specs, no framework)")

    torch.manual_seed(0)
    torch_model = rt.build(spec).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as a trained network has
        for module in torch_model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
    _step(f"PyTorch: resnet_torch.build('{spec.name}') -> {type(torch_model).__name__}, "
          f"{len(torch_model.state_dict())} state_dict tensors")
    try:
        import torchvision

        if hasattr(torchvision.models, spec.name):
            anchor = getattr(torchvision.models, spec.name)(weights=None).eval()
            anchor.load_state_dict(torch_model.state_dict(), strict=True)
            x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
            with torch.no_grad():
                same = torch.equal(anchor(x), torch_model(x))
            print(f"   torchvision.models.{spec.name} loads its state_dict strictly; outputs identical: {same}")
    except ImportError:
        pass

    path = out / f"{spec.name}.safetensors"
    rt.save_weights(torch_model, path)
    _step(f"canonical checkpoint: {path} ({path.stat().st_size / 2**20:.1f} MiB safetensors + spec JSON)")

    start = time.perf_counter()
    keras_model = rk.load_model(path)
    _step(f"Keras ({keras.backend.backend()} backend): resnet_keras.load_model -> {len(keras_model.layers)} layers "
          f"in {time.perf_counter() - start:.1f}s")

    x = np.random.default_rng(2).normal(size=(4, spec.in_channels, size, size)).astype(np.float32)
    with torch.no_grad():
        ref = torch_model(torch.from_numpy(x)).numpy()
    got = keras.ops.convert_to_numpy(keras_model(x.transpose(0, 2, 3, 1), training=False))
    diff = np.abs(ref - got)
    _step("parity on 4 random images (eval mode)")
    print(f"   max |torch - keras|      {diff.max():.3g}")
    print(f"   relative to output scale {diff.max() / np.abs(ref).max():.3g}   (float32 bound used by the tests: 1e-4)")
    print(f"   same top-1 class          {int((ref.argmax(1) == got.argmax(1)).sum())}/4")

    keras_path = out / f"{spec.name}.keras"
    keras_model.save(keras_path)
    back = rt.build(spec)
    rt.import_weights(back, rk.export_weights(keras_model))
    exact = all(torch.equal(a, b) for a, b in zip(torch_model.state_dict().values(), back.state_dict().values()))
    _step(f"round trip torch -> keras -> torch bit-exact: {exact}; Keras model saved to {keras_path}")
    return 0 if exact and diff.max() <= 1e-4 * np.abs(ref).max() else 1
