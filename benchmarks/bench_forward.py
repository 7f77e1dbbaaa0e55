"""Forward speed of our builds against torchvision and keras.applications, measured in one run.

    python benchmarks/bench_forward.py [--presets resnet18,resnet50] [--batch 8] [--size 224]
                                       [--repeat 5] [--device cpu|cuda] [--frameworks torch,keras]

For each preset that has a reference constructor, our model and the reference get the
same input; each repeat times both, alternating which goes first (ABBA), after warm-up
calls that also absorb tracing and compilation. The reported latency is the median over
repeats, and the ratio ours/reference is the number to read: absolute times on a shared
machine drift, ratios measured side by side in the same run much less. Building time,
the first call (tracing, compiling) and weight porting (canonical export + import) are
reported as absolute numbers. Keras runs on the process's KERAS_BACKEND, through
`predict_on_batch` (Keras's compiled inference path on every backend).

Results go to stdout and to benchmarks/results/<device>-<keras backend>.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from resnet_rosetta.frameworks import import_frameworks  # noqa: E402

TORCHVISION = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
               "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2")
KERAS_APPLICATIONS = {"resnet50_v1": "ResNet50", "resnet101_v1": "ResNet101", "resnet152_v1": "ResNet152",
                      "resnet50_v2": "ResNet50V2", "resnet101_v2": "ResNet101V2", "resnet152_v2": "ResNet152V2"}


def timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """fn(*args) and its wall time (arguments, not closures: each loop iteration times its own objects)."""
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def compare(ours: Callable[[], Any], theirs: Callable[[], Any], warmup: int, repeat: int
            ) -> tuple[list[float], list[float], float, float]:
    """Latencies of both, interleaved ABBA; plus each one's first (tracing/compiling) call."""
    _, first_ours = timed(ours)
    _, first_theirs = timed(theirs)
    for _ in range(warmup):
        ours(), theirs()
    a, b = [], []
    for r in range(repeat):
        pair = [(ours, a), (theirs, b)]
        for fn, sink in pair if r % 2 == 0 else pair[::-1]:
            sink.append(timed(fn)[1])
    return a, b, first_ours, first_theirs


def row(preset: str, reference: str, build: tuple[float, float], first: tuple[float, float],
        lat: tuple[list[float], list[float]], batch: int, port: str) -> list[str]:
    ours, theirs = statistics.median(lat[0]), statistics.median(lat[1])
    spread = max(_spread(lat[0]), _spread(lat[1]))
    return [preset, reference, f"{build[0] * 1e3:.0f}", f"{build[1] * 1e3:.0f}", f"{first[0] * 1e3:.0f}",
            f"{first[1] * 1e3:.0f}", f"{ours * 1e3:.1f}", f"{theirs * 1e3:.1f}", f"{batch / ours:.1f}",
            f"{batch / theirs:.1f}", f"**{ours / theirs:.3f}**", f"{spread:.0%}", port]


def _spread(times: list[float]) -> float:
    """(max - min) / median of one side's repeats: how noisy the run was."""
    return (max(times) - min(times)) / statistics.median(times)


HEADER = ["preset", "reference", "build ours (ms)", "build ref (ms)", "1st call ours (ms)", "1st call ref (ms)",
          "latency ours (ms)", "latency ref (ms)", "ours (img/s)", "ref (img/s)", "ratio ours/ref", "spread",
          "port (ms)"]


def bench_torch(presets: list[str], args: argparse.Namespace, torch: Any) -> list[list[str]]:
    import torchvision

    import resnet_torch as rt

    device = torch.device(args.device)
    rows = []
    for preset in presets:
        ours_model, t_build = timed(rt.build, preset)
        ref_model, t_ref = timed(lambda name: getattr(torchvision.models, name)(weights=None), preset)
        # the same weights in both: torchvision's state_dict is a canonical checkpoint
        weights, t_export = timed(lambda model: {k: v.numpy() for k, v in model.state_dict().items()}, ref_model)
        _, t_import = timed(rt.import_weights, ours_model, weights)
        x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)).to(device)

        def forward(model: Any, x: Any) -> Callable[[], Any]:
            model.eval().to(device)

            def call() -> Any:
                with torch.inference_mode():
                    out = model(x)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                return out

            return call

        a, b, f_a, f_b = compare(forward(ours_model, x), forward(ref_model, x), args.warmup, args.repeat)
        port = f"{t_export * 1e3:.0f} + {t_import * 1e3:.0f}"
        rows.append(row(preset, f"torchvision.models.{preset}", (t_build, t_ref), (f_a, f_b), (a, b), args.batch, port))
        print(" | ".join(rows[-1]), flush=True)
    return rows


def bench_keras(presets: list[str], args: argparse.Namespace, keras: Any) -> list[list[str]]:
    import resnet_keras as rk
    from shared_specs import get_spec

    rows = []
    keras_device = "gpu:0" if args.device == "cuda" else "cpu:0"
    for preset in presets:
        spec = get_spec(preset)
        with keras.device(keras_device):
            ours_model, t_build = timed(rk.build, spec)
            app = KERAS_APPLICATIONS[preset]
            ref_model, t_ref = timed(lambda name: getattr(keras.applications, name)(
                weights=None, input_shape=(args.size, args.size, 3)), app)
            # Random weights on both sides: timing does not depend on their values (no adapter from
            # keras.applications' layer names to canonical ones exists yet). Porting is timed on ours.
            weights, t_export = timed(rk.export_weights, ours_model)
            _, t_import = timed(rk.import_weights, ours_model, weights)
            x = np.random.default_rng(0).normal(size=(args.batch, args.size, args.size, 3)).astype(np.float32)

            def forward(model: Any, x: np.ndarray) -> Callable[[], Any]:
                return lambda: model.predict_on_batch(x)  # returns numpy: the device has finished

            a, b, f_a, f_b = compare(forward(ours_model, x), forward(ref_model, x), args.warmup, args.repeat)
        port = f"{t_export * 1e3:.0f} + {t_import * 1e3:.0f}"
        rows.append(row(preset, f"keras.applications.{app}", (t_build, t_ref), (f_a, f_b), (a, b), args.batch, port))
        print(" | ".join(rows[-1]), flush=True)
    return rows


def table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default="resnet18,resnet50,resnet50_v1,resnet50_v2")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=6, help="timed calls of each model (even: ABBA is balanced)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--frameworks", default="torch,keras", help="torch, keras or both")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/<device>-<backend>.md")
    args = parser.parse_args(argv)
    presets = [p for p in args.presets.split(",") if p]
    frameworks = [f for f in args.frameworks.split(",") if f]
    if unknown := sorted(set(frameworks) - {"torch", "keras"}):
        parser.error(f"unknown framework(s) {unknown}: choose torch and/or keras")
    from shared_specs import list_presets

    if missing := [p for p in presets if p not in list_presets()]:
        parser.error(f"unknown preset(s) {missing}; see `resnet-rosetta list`")
    torch, keras = import_frameworks()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    backend = keras.backend.backend()
    torch_threads = torch.get_num_threads()
    command = " ".join(["KERAS_BACKEND=" + backend, "python benchmarks/bench_forward.py", *sys.argv[1:]])
    sections = [f"# Forward speed, {args.device}, Keras backend {backend}", "", f"`{command}`", "",
                f"batch {args.batch}, {args.size}x{args.size}, float32, eval mode; median of {args.repeat} "
                f"interleaved (ABBA) calls after {args.warmup} warm-up calls. torch {torch.__version__} "
                f"({torch_threads} threads), torchvision, Keras {keras.__version__}; "
                f"{platform.processor() or platform.machine()}, "
                f"{os.cpu_count()} CPUs (shared with other jobs: absolute times are noisy, the ratio ours/ref "
                "is what to read; `spread` is (max - min) / median of the noisier side). Port: weights "
                "to canonical numpy + import into ours (PyTorch: from torchvision's state_dict; Keras: from our "
                "own model)."]
    if "torch" in frameworks:
        chosen = [p for p in presets if p in TORCHVISION]
        sections += ["", "## PyTorch: resnet_torch.build vs torchvision (same weights)", "",
                     table(bench_torch(chosen, args, torch)) if chosen
                     else "(no preset with a torchvision counterpart)"]
    if "keras" in frameworks:
        chosen = [p for p in presets if p in KERAS_APPLICATIONS]
        sections += ["", f"## Keras ({backend}): resnet_keras.build vs keras.applications (random weights)", "",
                     table(bench_keras(chosen, args, keras)) if chosen
                     else "(no preset with a keras.applications counterpart)"]
    text = "\n".join(sections) + "\n"
    print("\n" + text)
    out = args.out or ROOT / "benchmarks" / "results" / f"{args.device}-{backend}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
