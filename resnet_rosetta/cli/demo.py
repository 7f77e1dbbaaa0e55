"""`resnet-rosetta demo`: the story the project tells, measured as it runs.

Part 1: resnet50 built in PyTorch and Keras from one spec, weights ported, parity printed.
Part 2: cifar_resnet20 trained on real data (scikit-learn's handwritten digits) in PyTorch,
ported to Keras and evaluated in both; then trained in Keras and ported to PyTorch. Loss
curves of both frameworks and the per-layer port error are saved as PNG plots.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from resnet_rosetta.frameworks import import_frameworks
from shared_specs import count_flops, count_params, get_spec
from shared_specs.synthetic import random_weights
from shared_specs.tolerances import F32_PARITY


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="port resnet50 between frameworks, then train cifar_resnet20 on digits in each "
                                    "and evaluate it in the other, printing what it measures")
    p.add_argument("--preset", default="resnet50", help="preset of part 1 (default resnet50)")
    p.add_argument("--out", default="out/demo", help="folder for the files it writes (default out/demo)")
    p.add_argument("--input-size", type=int, default=224, metavar="N", help="image size of part 1 (default 224)")
    p.add_argument("--train-preset", default="cifar_resnet20", help="preset trained in part 2 (default cifar_resnet20)")
    p.add_argument("--epochs", type=int, default=12, help="training epochs of part 2 in each framework (default 12)")
    p.add_argument("--skip-training", action="store_true", help="part 1 only")
    p.set_defaults(func=run_demo)


def _step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def run_demo(args: argparse.Namespace) -> int:
    ok = port_story(args)
    if not args.skip_training:
        ok = training_story(args) and ok
    return 0 if ok else 1


def port_story(args: argparse.Namespace) -> bool:
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

    torch_model = rt.build(spec).eval()
    rt.import_weights(torch_model, random_weights(spec))  # non-trivial BatchNorm statistics, as a trained net has
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
    print(f"   relative to output scale {diff.max() / np.abs(ref).max():.3g}   "
          f"(float32 bound used by the tests: {F32_PARITY:g})")
    print(f"   same top-1 class          {int((ref.argmax(1) == got.argmax(1)).sum())}/4")

    keras_path = out / f"{spec.name}.keras"
    keras_model.save(keras_path)
    back = rt.build(spec)
    rt.import_weights(back, rk.export_weights(keras_model))
    exact = all(torch.equal(a, b) for a, b in zip(torch_model.state_dict().values(), back.state_dict().values()))
    _step(f"round trip torch -> keras -> torch bit-exact: {exact}; Keras model saved to {keras_path}")
    return bool(exact and diff.max() <= F32_PARITY * np.abs(ref).max())


def training_story(args: argparse.Namespace) -> bool:
    """Train in each framework, evaluate each result in both, plot what happened."""
    from resnet_rosetta.interop.diff import diff, plot
    from resnet_rosetta.training.runs import RunSettings, evaluate_checkpoint, load_framework, train

    out = Path(args.out)
    frameworks = {name: load_framework(name) for name in ("torch", "keras")}
    settings = RunSettings(get_spec(args.train_preset), "digits", batch_size=64, seed=0)
    histories, ok = {}, True
    for trained_in, ported_to in (("torch", "keras"), ("keras", "torch")):
        run_dir = out / f"train-{trained_in}"
        _step(f"train {args.train_preset} on scikit-learn's handwritten digits (32x32) in {trained_in}, "
              f"{args.epochs} epochs, SGD with torch semantics, the same initial weights and batches")
        resume = (run_dir / "train_state.safetensors").exists()
        histories[trained_in] = train(settings, run_dir, frameworks[trained_in], args.epochs, resume=resume)
        checkpoint = run_dir / f"epoch-{args.epochs:04d}.safetensors"
        _step(f"port the {trained_in}-trained checkpoint to {ported_to} and evaluate it in both")
        results = {}
        for name in (trained_in, ported_to):
            spec, metrics, data = evaluate_checkpoint(checkpoint, frameworks[name], "digits")
            fw = frameworks[name]
            model = fw.build(spec, _weights(checkpoint))
            results[name] = (metrics, fw.training.predict(model, data.prepare(data.test_images)), model)
            print(f"   {name:6s} test accuracy {metrics.accuracy:.2%} on {metrics.count} images")
        (m_a, logits_a, model_a), (m_b, logits_b, model_b) = results[trained_in], results[ported_to]
        same = float((logits_a.argmax(1) == logits_b.argmax(1)).mean())
        print(f"   same predictions on {same:.1%} of the test images; max logit difference "
              f"{np.abs(logits_a - logits_b).max():.3g} (logits up to {np.abs(logits_a).max():.3g})")
        ok = ok and m_a.accuracy == m_b.accuracy
        report = diff(model_a, model_b, input_hw=(32, 32))
        png = plot(report, out / f"port-error-{trained_in}-to-{ported_to}.png")
        print(f"   per-layer port error: largest {max(r.max_rel for r in report.rows):.2g} of a layer's scale; "
              f"plot {png}")
    png = _plot_losses(histories, out / "loss-curves.png")
    _step(f"loss curves of both frameworks: {png}")
    final = {k: h[-1]["train_loss"] for k, h in histories.items()}
    print(f"   final training loss: torch {final['torch']:.4f}, keras {final['keras']:.4f} "
          "(float32 runs drift apart slowly: see docs/training.md)")
    return ok


def _weights(path: Path) -> dict[str, np.ndarray]:
    from shared_specs.checkpoint import read_spec_and_weights

    return read_spec_and_weights(path)[1]


def _plot_losses(histories: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shared_specs.checkpoint import atomic_write

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for name, style in (("torch", "-o"), ("keras", "--s")):
        epochs = [r["epoch"] for r in histories[name]]
        ax_loss.plot(epochs, [r["train_loss"] for r in histories[name]], style, ms=4, label=f"{name} train")
        ax_acc.plot(epochs, [r["test_accuracy"] for r in histories[name]], style, ms=4, label=f"{name} test")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="training loss", yscale="log")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="test accuracy")
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle("the same network, initial weights and batches, trained in PyTorch and in Keras")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path
