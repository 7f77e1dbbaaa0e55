"""What benchmarks/gpu.sh runs: ours against torchvision and keras.applications on one GPU, in img/s and MFU.

    python benchmarks/bench_gpu.py --part torch [--batch 256] [--size 224]
    KERAS_BACKEND=jax python benchmarks/bench_gpu.py --part keras
    ... --dry-run          # CPU, batch 2 at 32x32, two rounds, no torch.compile: checks the script, not speed

`--part torch`: resnet_torch.build("resnet50") vs torchvision.models.resnet50, same weights:
inference fp32 and bf16 + channels_last (autocast), training bf16 + channels_last eager and
torch.compile'd, through resnet_torch.training.train_step. `--part keras` (JAX backend):
resnet_keras.build("resnet50_v1") vs keras.applications.ResNet50, same weights, both under a
mixed_bfloat16 policy: inference (predict_on_batch) and training (train_on_batch; ours with
Keras's SGD and BatchNorm, and as `train --framework keras` runs it). Batches wait on the
device, so steps are timed, not transfers. Each ratio is interleaved (benchmarks/harness.py).

MFU: achieved FLOP/s over the bf16 matmul peak this run measures on the same GPU (an
8192^3 product), with 2 FLOPs per multiply-add of shared_specs.count_flops and training at
3x the forward pass. Results: <out-dir>/gpu-<gpu>-pytorch and gpu-<gpu>-keras-<backend> (.md, .json).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_train  # noqa: E402
from harness import RATIO_HEADER, RESULTS, Report, command_line, device_label, interleave, timed  # noqa: E402

from resnet_rosetta.frameworks import import_frameworks  # noqa: E402
from shared_specs import count_flops, get_spec  # noqa: E402

HEADER = ["what", "mode", "1st call ours (s)", "1st call ref (s)", "ours (ms)", "ref (ms)", "ours (img/s)",
          "ref (img/s)", "MFU ours", "MFU ref", *RATIO_HEADER]


def peak_tflops(torch: Any, device: str, n: int) -> float:
    """bf16 matmul TFLOP/s of this device: the mean of 10 n^3 products after 3."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)

    def sync() -> None:
        if device != "cpu":
            torch.cuda.synchronize()

    for _ in range(3):
        a @ b
    sync()
    _, seconds = timed(lambda: ([a @ b for _ in range(10)], sync()))
    return 10 * 2 * n**3 / seconds / 1e12


class Rows:
    """Rows of one table and their JSON, with img/s and MFU from the medians."""

    def __init__(self, args: argparse.Namespace, report: Report, macs: float, peak: float) -> None:
        self.args, self.report, self.macs, self.peak, self.rows = args, report, macs, peak, []

    def measure(self, what: str, mode: str, ours: Any, ref: Any, training: bool) -> None:
        """First calls of each, then the interleaved ratio."""
        _, first_ours = timed(ours)
        _, first_ref = timed(ref)
        a = self.args
        r = interleave(ours, ref, warmup=a.warmup, min_rounds=a.min_rounds, max_rounds=a.max_rounds,
                       target_spread=a.target_spread, max_seconds=a.max_seconds, label=f"{what} {mode}")
        self.record(what, mode, r, training, (first_ours, first_ref))

    def record(self, what: str, mode: str, r: Any, training: bool, first: tuple[float, float] | None = None) -> None:
        s = r.summary()
        flops = (6 if training else 2) * self.macs  # per image: 2 FLOPs a multiply-add, backward twice forward
        ips = [self.args.batch / s["median_ours_s"], self.args.batch / s["median_ref_s"]]
        mfu = [i * flops / (self.peak * 1e12) for i in ips]
        firsts = [f"{t:.1f}" for t in first] if first else ["", ""]
        self.rows.append([what, mode, *firsts, f"{s['median_ours_s'] * 1e3:.1f}", f"{s['median_ref_s'] * 1e3:.1f}",
                          f"{ips[0]:,.0f}", f"{ips[1]:,.0f}", f"{mfu[0]:.1%}", f"{mfu[1]:.1%}", *r.cells()])
        self.report.results.append({"what": what, "mode": mode, "training": training, "img_s_ours": ips[0],
                                    "img_s_ref": ips[1], "mfu_ours": mfu[0], "mfu_ref": mfu[1],
                                    "first_call_s": list(first) if first else None, **s})
        print(" | ".join(self.rows[-1]), flush=True)


def torch_part(args: argparse.Namespace, torch: Any, rows: Rows) -> None:
    x = torch.randn(args.batch, 3, args.size, args.size, device=args.device,
                    generator=torch.Generator(args.device).manual_seed(0))
    for mode in ("fp32", "bf16-cl"):
        torch_inference(args, torch, mode, x, rows)
    for mode in args.train_modes:  # bench_train's comparison: the same loop, resnet_torch.training.train_step
        r, _ = bench_train.torch_mode(args, mode, *bench_train.batch(args, 1000))
        rows.record("training", mode, r, training=True)


def torch_inference(args: argparse.Namespace, torch: Any, mode: str, x: Any, rows: Rows) -> None:
    import torchvision

    import resnet_torch as rt

    options = bench_train.parse_mode(mode)
    ref = torchvision.models.resnet50(weights=None)
    ours = rt.build("resnet50", initialize=False)
    rt.import_weights(ours, {k: v.numpy() for k, v in ref.state_dict().items()})
    fmt = torch.channels_last if options.channels_last else torch.contiguous_format
    x = x.contiguous(memory_format=fmt)

    def forward(model: Any) -> Any:
        model.eval().to(args.device, memory_format=fmt)

        def call() -> None:
            with torch.inference_mode(), torch.autocast(args.device, torch.bfloat16,
                                                        enabled=options.precision != "fp32"):
                model(x)
            if args.device != "cpu":
                torch.cuda.synchronize()

        return call

    rows.measure("inference", mode, forward(ours), forward(ref), training=False)


def keras_part(args: argparse.Namespace, keras: Any, rows: Rows) -> None:
    keras_inference(args, keras, rows)
    for trainer in args.keras_trainers:
        r, _ = bench_train.keras_mode(args, keras, "bf16", trainer, *_nhwc(bench_train.batch(args, 1000)))
        rows.record(f"training, ours: {bench_train.TRAINERS[trainer]}", "bf16 (mixed_bfloat16)", r, training=True)


def keras_inference(args: argparse.Namespace, keras: Any, rows: Rows) -> None:
    import resnet_keras as rk

    x = keras.ops.convert_to_tensor(np.random.default_rng(0).normal(
        size=(args.batch, args.size, args.size, 3)).astype(np.float32))
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        ref = keras.applications.ResNet50(weights=None, input_shape=(args.size, args.size, 3),
                                          classifier_activation=None)
    finally:
        keras.config.set_dtype_policy("float32")
    spec, weights = rk.from_keras_applications(ref)
    ours = rk.build(spec, dtype="mixed_bfloat16", initialize=False)
    rk.import_weights(ours, weights)
    rows.measure("inference", "bf16 (mixed_bfloat16)", lambda: ours.predict_on_batch(x),
                 lambda: ref.predict_on_batch(x), training=False)


def _nhwc(batch: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    x, y = batch
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)), y


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("torch", "keras"), required=True)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny: checks the script, measures nothing")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--train-modes", default="bf16-cl,bf16-cl-compile", help="torch training modes")
    parser.add_argument("--keras-trainers", default=",".join(bench_train.TRAINERS),
                        help="which of ours train in the Keras part: " + ", ".join(bench_train.TRAINERS))
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--min-rounds", type=int, default=10)
    parser.add_argument("--max-rounds", type=int, default=40)
    parser.add_argument("--target-spread", type=float, default=0.03)
    parser.add_argument("--max-seconds", type=float, default=25.0, help="per comparison")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.device = "cpu" if args.dry_run else "cuda"
    if args.dry_run:
        args.batch, args.size, args.warmup, args.min_rounds, args.max_rounds = 2, 32, 0, 2, 2
        args.train_modes = "bf16-cl"
    args.train_modes = [m for m in args.train_modes.split(",") if m]
    args.keras_trainers = [t for t in args.keras_trainers.split(",") if t]
    torch, keras = import_frameworks()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device; --dry-run checks the script on CPU")
    backend = keras.backend.backend()
    peak = peak_tflops(torch, args.device, 512 if args.dry_run else 8192)
    spec = get_spec("resnet50")
    macs = count_flops(spec, (args.size, args.size))
    where = "pytorch" if args.part == "torch" else f"keras-{backend}"
    report = Report(f"GPU benchmark ({where}): batch {args.batch}, {args.size}x{args.size}",
                    command_line("bench_gpu.py", sys.argv[1:] if argv is None else argv),
                    settings={"batch": args.batch, "size": args.size, "peak_bf16_tflops": peak, "macs_per_image": macs,
                              "dry_run": args.dry_run})
    rows = Rows(args, report, macs, peak)
    if args.part == "torch":
        torch_part(args, torch, rows)
        title = "resnet_torch.build('resnet50') vs torchvision.models.resnet50, same weights"
    else:
        with contextlib.nullcontext() if args.dry_run else keras.device("gpu:0"):  # see bench_train.main
            keras_part(args, keras, rows)
        title = f"resnet_keras.build('resnet50_v1') vs keras.applications.ResNet50 on {backend}, same weights"
    report.add(title, HEADER, rows.rows,
               f"MFU against {peak:.0f} TFLOP/s, the bf16 matmul peak measured in this run; {macs / 1e9:.2f} GMACs "
               "per image forward, training counted as 3x.")
    label = "cpu-dry-run" if args.dry_run else device_label("cuda")
    report.publish(args.out_dir / f"gpu-{label}-{where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
