"""The `train` step on each Keras backend against the PyTorch step, measured in one run.

    python benchmarks/bench_backends.py [--preset cifar_resnet20] [--batch 64] [--size 32]
        [--candidates torch,keras:tensorflow,keras:jax,keras:torch,keras:tensorflow:compile] [--mode fp32]

Keras fixes its backend per process, so each candidate is a worker process holding one
model (the preset from shared_specs.training.initial_weights, 10 classes) and the
trainer `resnet-rosetta train` uses (resnet_torch / resnet_keras .training: torch
semantics, same batches). The parent asks the workers for one step each per round, in
an order that rotates every round, so one runs at a time and a slow stretch of the
machine falls on all of them; each Keras backend's ratio to the torch step is the
median of per-round ratios with its 95% interval (benchmarks/harness.py). A candidate
"keras:<backend>:compile" trains with StepOptions(compile=True) (jit_compile=True).
The fastest Keras backend is `train`'s default (resnet_rosetta.training.runs).
Results: benchmarks/results/backends-<device>.md/.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import RATIO_HEADER, RESULTS, Ratio, Report, command_line, set_torch_threads, thread_env  # noqa: E402

from shared_specs.training import SGDConfig, StepOptions  # noqa: E402

SGD = SGDConfig(lr=0.05, momentum=0.9, weight_decay=1e-4)


def worker(candidate: str, args: argparse.Namespace) -> None:
    """Build, take a first step, then one timed step per line read from stdin."""
    import numpy as np

    from resnet_rosetta.frameworks import get_framework
    from shared_specs import get_spec
    from shared_specs.training import initial_weights

    name, _, flags = candidate.partition(":")
    backend, _, compiled = flags.partition(":")
    precision, *rest = args.mode.split("-")
    options = StepOptions(precision, channels_last="cl" in rest, compile=bool(compiled) or "compile" in rest)
    framework = get_framework(name, backend=backend or None, device=args.device if name == "torch" else None)
    set_torch_threads(args.threads)
    spec = get_spec(args.preset, num_classes=10)
    fw = framework.training
    model = framework.build(spec, initial_weights(spec, 0), dtype=fw.model_dtype(options))
    optimizer = fw.make_optimizer(model, SGD, options)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, spec.in_channels, args.size, args.size)).astype(np.float32)
    y = rng.integers(0, 10, args.batch)
    began = time.perf_counter()
    fw.train_step(model, optimizer, x, y)
    print(json.dumps({"first": time.perf_counter() - began}), flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        began = time.perf_counter()
        fw.train_step(model, optimizer, x, y)
        print(time.perf_counter() - began, flush=True)


class Worker:
    def __init__(self, candidate: str, argv: list[str], threads: int) -> None:
        backend = candidate.split(":")[1] if ":" in candidate else "tensorflow"
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2", **thread_env(threads)}
        self.candidate = candidate
        self.process = subprocess.Popen([sys.executable, __file__, "--worker", candidate, *argv], env=env, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.first = float(json.loads(self._line())["first"])
        self.times: list[float] = []

    def _line(self) -> str:
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"worker {self.candidate} ended (exit {self.process.wait()})")
        return line

    def step(self) -> None:
        self.process.stdin.write("step\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]
        self.times.append(float(self._line()))

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()  # type: ignore[union-attr]
            self.process.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="cifar_resnet20")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--mode", default="fp32", help="fp32|bf16|fp16[-cl][-compile], for every candidate")
    parser.add_argument("--candidates", default="torch,keras:tensorflow,keras:jax,keras:torch")
    parser.add_argument("--device", default="cpu", help="torch device of the torch candidate")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads of each worker's framework (0: their defaults; harness.thread_env)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--min-rounds", type=int, default=10)
    parser.add_argument("--max-rounds", type=int, default=80)
    parser.add_argument("--target-spread", type=float, default=0.05)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/backends-<device>")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args)
        return 0
    candidates = [c for c in args.candidates.split(",") if c]
    if candidates[0] != "torch" or len(candidates) < 2:
        parser.error("--candidates: torch first (the reference), then keras:<backend>[:compile] ...")
    passed = ["--preset", args.preset, "--batch", str(args.batch), "--size", str(args.size), "--mode", args.mode,
              "--device", args.device, "--threads", str(args.threads)]
    workers = [Worker(c, passed, args.threads) for c in candidates]  # one at a time: each builds and compiles alone
    try:
        for _ in range(args.warmup):
            for w in workers:
                w.step()
        for w in workers:
            w.times.clear()
        began = time.perf_counter()
        for r in range(args.max_rounds):
            shift = r % len(workers)
            order = workers[shift:] + workers[:shift]
            for w in order if r % 2 == 0 else order[::-1]:
                w.step()
            ratios = [Ratio(w.times, workers[0].times) for w in workers[1:]]
            if r + 1 >= args.min_rounds and (max(x.spread for x in ratios) < args.target_spread
                                             or time.perf_counter() - began > args.max_seconds):
                break
    finally:
        for w in workers:
            w.close()
    report = Report(f"The train step per Keras backend vs PyTorch: {args.preset}, batch {args.batch}, "
                    f"{args.size}x{args.size}, {args.mode}",
                    command_line("bench_backends.py", sys.argv[1:] if argv is None else argv),
                    settings={k: str(v) for k, v in vars(args).items()})
    rows = []
    for w in workers:
        ratio = Ratio(w.times, workers[0].times)
        s: dict[str, Any] = ratio.summary()
        cells = ratio.cells() if w is not workers[0] else ["(reference)", "", "", str(ratio.rounds)]
        rows.append([w.candidate, f"{w.first:.2f}", f"{s['median_ours_s'] * 1e3:.1f}",
                     f"{args.batch / s['median_ours_s']:.0f}", *cells])
        report.results.append({"candidate": w.candidate, "first_step_s": w.first, **s})
    keras = [(Ratio(w.times, workers[0].times).ratio, w.candidate) for w in workers[1:] if w.candidate != "torch"]
    fastest = min(keras)[1] if keras else None
    report.add("Step time per candidate; ratio to the torch step", ["candidate", "1st step (s)", "step (ms)",
                                                                    "img/s", *RATIO_HEADER], rows,
               f"Fastest Keras candidate: **{fastest}**.")
    report.settings["fastest_keras"] = fastest
    report.publish(args.out or RESULTS / f"backends-{args.device.split(':')[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
