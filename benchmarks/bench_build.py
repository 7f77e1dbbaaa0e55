"""Keras build time of our models against keras.applications, measured in one run.

    KERAS_BACKEND=jax python benchmarks/bench_build.py [--presets resnet50_v1,resnet50_v2] [--fresh-rounds 6]

Two numbers per preset, both ratios ours/keras.applications (benchmarks/harness.py):
- *later builds*: `resnet_keras.build(preset)` and `keras.applications.<Model>(weights=None)`
  built alternately in this process, after one build of each (what a test suite or a
  notebook that builds many models pays);
- *first build in a process*: each side in a fresh Python process that imports the
  frameworks and builds once (what `convert`, `train` or a script pays: on JAX it holds
  the compilation of every distinct operation); the processes alternate too, and only
  the build is timed, not the imports.
Both sides draw random initial values (ours torchvision's He-normal, keras.applications
Glorot-uniform); `initialize=False` (no draws: weights imported next) is shown beside.
Results: benchmarks/results/build-<device>-<backend>.md/.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import RATIO_HEADER, RESULTS, Ratio, Report, command_line, interleave, timed  # noqa: E402

KERAS_APPLICATIONS = {"resnet50_v1": "ResNet50", "resnet101_v1": "ResNet101", "resnet152_v1": "ResNet152",
                      "resnet50_v2": "ResNet50V2", "resnet101_v2": "ResNet101V2", "resnet152_v2": "ResNet152V2"}


def builders(preset: str) -> dict[str, Any]:
    """ours, ours without initial draws, and keras.applications' constructor of `preset`."""
    from resnet_rosetta.frameworks import import_frameworks

    _, keras = import_frameworks()
    import resnet_keras as rk

    app = getattr(keras.applications, KERAS_APPLICATIONS[preset])
    return {"ours": lambda: rk.build(preset), "ours_no_init": lambda: rk.build(preset, initialize=False),
            "ref": lambda: app(weights=None)}


def child(side: str, preset: str) -> None:
    """One fresh process: import, build once, print the build's seconds as JSON."""
    build = builders(preset)[side]
    model, seconds = timed(build)
    print(json.dumps({"seconds": seconds, "layers": len(model.layers)}))


def fresh(side: str, preset: str) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", side, "--presets", preset], capture_output=True,
                         text=True, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    return float(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default="resnet50_v1")
    parser.add_argument("--min-rounds", type=int, default=10)
    parser.add_argument("--max-rounds", type=int, default=60)
    parser.add_argument("--target-spread", type=float, default=0.05)
    parser.add_argument("--max-seconds", type=float, default=180.0, help="per comparison")
    parser.add_argument("--fresh-rounds", type=int, default=6, help="first builds in fresh processes (0: skip)")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/build-cpu-<backend>")
    parser.add_argument("--child", choices=("ours", "ours_no_init", "ref"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    presets = [p for p in args.presets.split(",") if p]
    if unknown := [p for p in presets if p not in KERAS_APPLICATIONS]:
        parser.error(f"no keras.applications counterpart for {unknown}; choose from {sorted(KERAS_APPLICATIONS)}")
    if args.child:
        child(args.child, presets[0])
        return 0
    from resnet_rosetta.frameworks import import_frameworks

    _, keras = import_frameworks()
    backend = keras.backend.backend()
    report = Report(f"Keras build time, {backend} backend", command_line("bench_build.py", sys.argv[1:]
                                                                         if argv is None else argv),
                    settings={k: str(v) for k, v in vars(args).items()})
    rows = []
    for preset in presets:
        b = builders(preset)
        b["ours"](), b["ref"]()  # the process's first builds (imports, compilation) stay out of these rounds
        kw = dict(warmup=0, min_rounds=args.min_rounds, max_rounds=args.max_rounds,
                  target_spread=args.target_spread, max_seconds=args.max_seconds)
        later = interleave(b["ours"], b["ref"], label=f"{preset} later builds", **kw)
        no_init = interleave(b["ours_no_init"], b["ref"], label=f"{preset} initialize=False", **kw)
        measured: list[tuple[str, Ratio]] = [("later builds", later), ("later builds, ours initialize=False", no_init)]
        if args.fresh_rounds:
            ours, ref = [], []
            for r in range(args.fresh_rounds):
                for side, sink in [("ours", ours), ("ref", ref)][:: 1 if r % 2 == 0 else -1]:
                    sink.append(fresh(side, preset))
                print(f"{preset} first build, round {r + 1}: ours {ours[-1]:.2f} s, ref {ref[-1]:.2f} s", flush=True)
            measured.append(("first build in a fresh process", Ratio(ours, ref)))
        for what, ratio in measured:
            s = ratio.summary()
            rows.append([preset, f"keras.applications.{KERAS_APPLICATIONS[preset]}", what,
                         f"{s['median_ours_s']:.3f}", f"{s['median_ref_s']:.3f}", *ratio.cells()])
            report.results.append({"preset": preset, "backend": backend, "what": what,
                                   "ref": f"keras.applications.{KERAS_APPLICATIONS[preset]}", **s})
            print(" | ".join(rows[-1]), flush=True)
    report.add(f"resnet_keras.build vs keras.applications (weights=None), Keras on {backend}",
               ["preset", "reference", "what", "ours (s)", "ref (s)", *RATIO_HEADER], rows,
               "Both sides draw random initial values unless stated: ours torchvision's He-normal (numpy, "
               "resnet_keras.layers.TorchInit), keras.applications Glorot-uniform (the backend's generator).")
    out = args.out or RESULTS / f"build-cpu-{backend}"
    report.publish(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
