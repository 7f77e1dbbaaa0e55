"""Forward speed of our builds against torchvision and keras.applications, measured in one run.

    python benchmarks/bench_forward.py [--presets resnet18,resnet50] [--batch 8] [--size 224]
                                       [--repeat 10] [--target-spread 0.05] [--device cpu|cuda]
                                       [--frameworks torch,keras]

For each preset that has a reference constructor, our model and the reference get the
same input; each round times both, alternating which goes first (ABBA), after warm-up
calls that also absorb tracing and compilation, and rounds continue (at least --repeat)
until the ratio's 95% interval is narrower than --target-spread (benchmarks/harness.py).
The ratio ours/reference is the number to read: absolute times on a shared machine
drift, ratios measured side by side in the same run much less. Building time, the
first call (tracing, compiling) and weight porting (canonical export + import) are
reported as absolute numbers. Keras runs on the process's KERAS_BACKEND, through
`predict_on_batch` (Keras's compiled inference path on every backend).

Results go to stdout and to benchmarks/results/forward-<device>-<keras backend>.md/.json.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import RATIO_HEADER, RESULTS, Ratio, Report, command_line, interleave, set_torch_threads, timed  # noqa: E402,E501

from resnet_rosetta.frameworks import import_frameworks  # noqa: E402

TORCHVISION = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
               "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2")
KERAS_APPLICATIONS = {"resnet50_v1": "ResNet50", "resnet101_v1": "ResNet101", "resnet152_v1": "ResNet152",
                      "resnet50_v2": "ResNet50V2", "resnet101_v2": "ResNet101V2", "resnet152_v2": "ResNet152V2"}


def measure(ours: Callable[[], Any], theirs: Callable[[], Any], args: argparse.Namespace, label: str
            ) -> tuple[Ratio, float, float]:
    """The interleaved ratio, and each one's first (tracing/compiling) call."""
    _, first_ours = timed(ours)
    _, first_theirs = timed(theirs)
    ratio = interleave(ours, theirs, warmup=args.warmup, min_rounds=args.repeat, max_rounds=args.max_rounds,
                       target_spread=args.target_spread, max_seconds=args.max_seconds, label=label)
    return ratio, first_ours, first_theirs


def row(preset: str, reference: str, build: tuple[float, float], first: tuple[float, float], ratio: Ratio,
        batch: int, port: str) -> list[str]:
    s = ratio.summary()
    ours, theirs = s["median_ours_s"], s["median_ref_s"]
    return [preset, reference, f"{build[0] * 1e3:.0f}", f"{build[1] * 1e3:.0f}", f"{first[0] * 1e3:.0f}",
            f"{first[1] * 1e3:.0f}", f"{ours * 1e3:.1f}", f"{theirs * 1e3:.1f}", f"{batch / ours:.1f}",
            f"{batch / theirs:.1f}", *ratio.cells(), port]


HEADER = ["preset", "reference", "build ours (ms)", "build ref (ms)", "1st call ours (ms)", "1st call ref (ms)",
          "latency ours (ms)", "latency ref (ms)", "ours (img/s)", "ref (img/s)", *RATIO_HEADER, "port (ms)"]


def bench_torch(presets: list[str], args: argparse.Namespace, torch: Any, report: Report) -> list[list[str]]:
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

        ratio, f_a, f_b = measure(forward(ours_model, x), forward(ref_model, x), args, f"torch {preset}")
        port = f"{t_export * 1e3:.0f} + {t_import * 1e3:.0f}"
        rows.append(row(preset, f"torchvision.models.{preset}", (t_build, t_ref), (f_a, f_b), ratio, args.batch, port))
        report.results.append({"framework": "torch", "preset": preset, "ref": f"torchvision.models.{preset}",
                               **ratio.summary()})
        print(" | ".join(rows[-1]), flush=True)
    return rows


def bench_keras(presets: list[str], args: argparse.Namespace, keras: Any, report: Report) -> list[list[str]]:
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
            # the same weights in both: keras.applications' read into canonical ones, imported into ours
            (_, weights), t_export = timed(rk.from_keras_applications, ref_model)
            _, t_import = timed(rk.import_weights, ours_model, weights)
            x = np.random.default_rng(0).normal(size=(args.batch, args.size, args.size, 3)).astype(np.float32)

            def forward(model: Any, x: np.ndarray) -> Callable[[], Any]:
                return lambda: model.predict_on_batch(x)  # returns numpy: the device has finished

            ratio, f_a, f_b = measure(forward(ours_model, x), forward(ref_model, x), args, f"keras {preset}")
        port = f"{t_export * 1e3:.0f} + {t_import * 1e3:.0f}"
        rows.append(row(preset, f"keras.applications.{app}", (t_build, t_ref), (f_a, f_b), ratio, args.batch, port))
        report.results.append({"framework": "keras", "backend": keras.backend.backend(), "preset": preset,
                               "ref": f"keras.applications.{app}", **ratio.summary()})
        print(" | ".join(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default="resnet18,resnet50,resnet50_v1,resnet50_v2")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=10, help="least timed rounds (even: ABBA is balanced)")
    parser.add_argument("--max-rounds", type=int, default=120)
    parser.add_argument("--target-spread", type=float, default=0.05, help="stop when the 95%% interval is this narrow")
    parser.add_argument("--max-seconds", type=float, default=240.0, help="per preset")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default; harness.py)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--frameworks", default="torch,keras", help="torch, keras or both")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/forward-<device>-<backend>")
    args = parser.parse_args(argv)
    presets = [p for p in args.presets.split(",") if p]
    frameworks = [f for f in args.frameworks.split(",") if f]
    if unknown := sorted(set(frameworks) - {"torch", "keras"}):
        parser.error(f"unknown framework(s) {unknown}: choose torch and/or keras")
    from shared_specs import list_presets

    if missing := [p for p in presets if p not in list_presets()]:
        parser.error(f"unknown preset(s) {missing}; see `resnet-rosetta list`")
    torch, keras = import_frameworks()
    set_torch_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    backend = keras.backend.backend()
    report = Report(f"Forward speed, {args.device}, Keras backend {backend}",
                    command_line("bench_forward.py", sys.argv[1:] if argv is None else argv),
                    settings={k: str(v) for k, v in vars(args).items()})
    report.sections += [f"batch {args.batch}, {args.size}x{args.size}, float32, eval mode, after {args.warmup} "
                        f"warm-up calls; torch with {torch.get_num_threads()} threads. Build, first call and port "
                        "(weights to canonical numpy + import into ours) are single absolute times.", ""]
    if "torch" in frameworks:
        chosen = [p for p in presets if p in TORCHVISION]
        rows = bench_torch(chosen, args, torch, report)
        report.add("PyTorch: resnet_torch.build vs torchvision (same weights)", HEADER, rows)
    if "keras" in frameworks:
        chosen = [p for p in presets if p in KERAS_APPLICATIONS]
        rows = bench_keras(chosen, args, keras, report)
        report.add(f"Keras ({backend}): resnet_keras.build vs keras.applications (same weights)", HEADER, rows)
    out = args.out or RESULTS / f"forward-{args.device}-{backend}"
    report.publish(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
