"""benchmarks/bench_forward.py runs end to end and writes its table (no timing is asserted: speed
is a benchmark's business, not a test's)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import bench_forward  # noqa: E402


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
