"""`resnet-rosetta convert` against the least work a conversion needs, measured in one run.

    KERAS_BACKEND=tensorflow python benchmarks/bench_convert.py [--preset resnet152] [--to keras]

The input is torchvision's random `<preset>` state_dict saved as a .pth. Each round runs,
in fresh Python processes and alternating which goes first (benchmarks/harness.py):
- ours: `python -m resnet_rosetta.cli convert in.pth out.<suffix>` (read, infer the spec,
  write, read the written file back, parity check);
- the floor: the same conversion written straight, with nothing to spare: import both
  frameworks, torch.load the file, infer the spec, build the Keras model once without
  initial draws, import the weights, save, build the PyTorch model, one forward of each
  on the parity batch (`--floor`, below).
Both are timed as whole processes (interpreter start and imports included, alike), and
the floor's steps are reported for orientation.
Results: benchmarks/results/convert-cpu-<backend>.md/.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import RATIO_HEADER, RESULTS, ROOT, Report, command_line, interleave  # noqa: E402

SUFFIX = {"keras": ".keras", "keras-weights": ".weights.h5", "safetensors": ".safetensors"}


def floor(source: Path, target: Path, size: int) -> dict[str, float]:
    """The conversion with nothing to spare; returns each step's seconds."""
    steps: dict[str, float] = {}
    began = last = time.perf_counter()

    def step(name: str) -> None:
        nonlocal last
        now = time.perf_counter()
        steps[name], last = now - last, now

    import numpy as np

    from resnet_rosetta.frameworks import import_frameworks

    torch, keras = import_frameworks()
    import resnet_keras as rk
    import resnet_torch as rt
    from shared_specs import infer_spec

    step("import both frameworks")
    weights = {k: v.numpy() for k, v in torch.load(source, weights_only=True).items()
               if not k.endswith("num_batches_tracked")}
    spec = infer_spec(weights)
    step("read + infer the spec")
    keras_model = rk.build(spec, initialize=False)
    rk.import_weights(keras_model, weights)
    step("Keras build + import")
    keras_model.save(target) if target.suffix == ".keras" else keras_model.save_weights(target)
    step("save")
    torch_model = rt.build(spec, initialize=False).eval()
    rt.import_weights(torch_model, weights)
    x = np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        ref = torch_model(torch.from_numpy(x)).numpy()
    out = keras.ops.convert_to_numpy(keras_model(x.transpose(0, 2, 3, 1), training=False))
    float(np.abs(ref - out).max())
    step("PyTorch build + import, one forward of each")
    steps["total in process"] = time.perf_counter() - began
    return steps


def run(cmd: list[str]) -> str:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="resnet152", help="a torchvision model name")
    parser.add_argument("--to", choices=sorted(SUFFIX), default="keras")
    parser.add_argument("--input-size", type=int, default=64, help="parity batch size (convert's default)")
    parser.add_argument("--warmup", type=int, default=1, help="runs of each before the timed rounds (disk cache)")
    parser.add_argument("--min-rounds", type=int, default=6)
    parser.add_argument("--max-rounds", type=int, default=20)
    parser.add_argument("--target-spread", type=float, default=0.05)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/convert-cpu-<backend>")
    parser.add_argument("--floor", nargs=2, type=Path, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.floor:
        print(json.dumps(floor(*args.floor, args.input_size)))
        return 0
    from resnet_rosetta.frameworks import import_frameworks

    torch, keras = import_frameworks()
    import torchvision

    backend = keras.backend.backend()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / f"{args.preset}.pth"
        torch.save(getattr(torchvision.models, args.preset)(weights=None).state_dict(), source)
        ours_cmd = [sys.executable, "-m", "resnet_rosetta.cli", "convert", str(source),
                    str(Path(tmp) / f"ours{SUFFIX[args.to]}"), "--input-size", str(args.input_size)]
        floor_cmd = [sys.executable, __file__, "--floor", str(source), str(Path(tmp) / f"floor{SUFFIX[args.to]}"),
                     "--input-size", str(args.input_size)]
        steps: list[dict[str, Any]] = []
        ratio = interleave(lambda: run(ours_cmd), lambda: steps.append(json.loads(run(floor_cmd).splitlines()[-1])),
                           warmup=args.warmup, min_rounds=args.min_rounds, max_rounds=args.max_rounds,
                           target_spread=args.target_spread, max_seconds=args.max_seconds, label="convert/floor")
    s = ratio.summary()
    report = Report(f"convert {args.preset} .pth -> {args.to}, Keras on {backend}",
                    command_line("bench_convert.py", sys.argv[1:] if argv is None else argv),
                    settings={k: str(v) for k, v in vars(args).items()})
    report.results.append({"preset": args.preset, "to": args.to, "backend": backend, **s})
    report.add("resnet-rosetta convert vs the floor (whole processes)",
               ["conversion", "convert (s)", "floor (s)", *RATIO_HEADER],
               [[f"{args.preset} .pth -> {args.to}", f"{s['median_ours_s']:.1f}", f"{s['median_ref_s']:.1f}",
                 *ratio.cells()]])
    names = list(steps[0])
    report.add("The floor's steps (median seconds over its runs)", ["step", "seconds"],
               [[n, f"{sorted(st[n] for st in steps)[len(steps) // 2]:.2f}"] for n in names])
    report.publish(args.out or RESULTS / f"convert-cpu-{backend}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
