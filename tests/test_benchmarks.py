"""The benchmarks in benchmarks/ run end to end with tiny configurations and write well-formed
markdown and JSON (no timing is asserted: speed is a benchmark's business, not a test's)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_backends  # noqa: E402
import bench_build  # noqa: E402
import bench_convert  # noqa: E402
import bench_forward  # noqa: E402
import bench_train  # noqa: E402
import harness  # noqa: E402

TINY = ["--min-rounds", "2", "--max-rounds", "2"]


def test_bench_forward_writes_one_row_per_preset_with_a_reference(tmp_path, capsys):
    out = tmp_path / "result.md"
    args = ["--presets", "resnet18,cifar_resnet20,resnet50_v1", "--batch", "1", "--size", "32",
            "--repeat", "2", "--warmup", "0", "--out", str(out)]
    assert bench_forward.main(args) == 0
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| resnet")]
    # cifar_resnet20 has neither a torchvision nor a keras.applications counterpart: no row
    assert [r.split(" | ")[1] for r in rows] == ["torchvision.models.resnet18", "keras.applications.ResNet50"]
    assert all(r.count("|") == len(bench_forward.HEADER) + 1 and "**" in r for r in rows)



def _written(out: Path) -> tuple[str, dict]:
    text, data = out.with_suffix(".md").read_text(), json.loads(out.with_suffix(".json").read_text())
    assert text.startswith("# ") and "ours/ref" in text and data["results"] and data["machine"]["cpus"]
    for r in data["results"]:
        assert r["ci95"][0] <= r["ratio"] <= r["ci95"][1] and r["rounds"] >= 1
    return text, data


def test_median_interval_is_the_order_statistics_of_a_95_percent_interval() -> None:
    assert harness.median_interval([3.0, 1.0, 2.0]) == (1.0, 3.0)  # too few rounds: the whole range
    xs = list(range(1, 11))  # n = 10: P(B <= 1) = 1.1% <= 2.5% < P(B <= 2) = 5.5%
    assert harness.median_interval(xs) == (2, 9)
    r = harness.Ratio([2.0, 4.0, 3.0, 6.0], [1.0, 2.0, 1.0, 3.0])
    assert r.ratio == 2.0 and r.low == 2.0 and r.high == 3.0 and r.spread == pytest.approx(0.5)


def test_bench_train_keras(tmp_path: Path) -> None:
    # the torch comparison (bench_train.torch_mode) runs in the GPU script's dry run below
    out = tmp_path / "train"
    assert bench_train.main(["--frameworks", "keras", "--batch", "2", "--size", "32", "--keras-modes", "fp32",
                             "--keras-trainers", "torch-semantics", "--warmup", "0", *TINY, "--out", str(out)]) == 0
    _, data = _written(out)
    assert [(r["framework"], r["trainer"]) for r in data["results"]] == [("keras", "torch-semantics")]


def test_bench_build_later_builds(tmp_path: Path) -> None:
    out = tmp_path / "build"
    assert bench_build.main(["--fresh-rounds", "0", "--min-rounds", "1", "--max-rounds", "1", "--out", str(out)]) == 0
    _, data = _written(out)
    assert [r["what"] for r in data["results"]] == ["later builds", "later builds, ours initialize=False"]


def test_bench_convert_against_its_floor(tmp_path: Path) -> None:
    out = tmp_path / "convert"
    assert bench_convert.main(["--preset", "resnet18", "--min-rounds", "1", "--max-rounds", "1", "--warmup", "0",
                               "--out", str(out)]) == 0
    text, data = _written(out)
    assert data["results"][0]["preset"] == "resnet18" and "Keras build + import" in text


def test_bench_backends_interleaves_worker_processes(tmp_path: Path) -> None:
    out = tmp_path / "backends"
    assert bench_backends.main(["--candidates", "torch,keras:tensorflow", "--batch", "2", "--size", "8",
                                "--warmup", "0", *TINY, "--out", str(out)]) == 0
    _, data = _written(out)
    assert [r["candidate"] for r in data["results"]] == ["torch", "keras:tensorflow"]
    assert data["settings"]["fastest_keras"] == "keras:tensorflow"


def test_gpu_script_dry_run_on_cpu(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    # Keras training is bench_train.keras_mode, run above (compiling a resnet50 step on JAX's CPU takes minutes)
    done = subprocess.run([str(ROOT / "benchmarks" / "gpu.sh"), "--dry-run", "--keras-trainers", "",
                           "--out-dir", str(tmp_path)], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    for part in ("pytorch", "keras-jax"):
        _, data = _written(tmp_path / f"gpu-cpu-dry-run-{part}")
        assert all(r["img_s_ours"] > 0 and 0 < r["mfu_ours"] for r in data["results"])
