"""What every benchmark here shares: interleaved timing, the ratio with its confidence
interval, and results written as markdown and JSON.

A ratio is measured, never two absolute times divided: each round times ours and the
reference back to back (the order alternating, ABBA), the round's ratio ours/ref cancels
whatever the shared machine did to both, and the reported ratio is the median of the
rounds' ratios with a distribution-free 95% confidence interval (order statistics of
the median). `spread` is the interval's width over the ratio: rounds continue until it
is under `target_spread` or the round or time budget is spent, so a claim carries its
own evidence. On a machine shared with other jobs single rounds vary by tens of
percent; only the interval says what a run resolved.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """fn(*args) and its wall time."""
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free confidence interval of the median: the order statistics k and
    n+1-k with P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2; (min, max) when n is too small."""
    xs, n = sorted(values), len(values)
    tail, k, cumulative = (1 - confidence) / 2, 0, 0.0
    while k < n // 2:
        cumulative += math.comb(n, k) / 2**n
        if cumulative > tail:
            break
        k += 1
    k = max(k, 1)
    return xs[k - 1], xs[n - k]


@dataclass
class Ratio:
    """ours/ref from interleaved rounds: the median of per-round ratios and its 95% interval."""

    ours: list[float]
    ref: list[float]
    ratio: float = field(init=False)
    low: float = field(init=False)
    high: float = field(init=False)

    def __post_init__(self) -> None:
        rounds = [a / b for a, b in zip(self.ours, self.ref)]
        self.ratio = statistics.median(rounds)
        self.low, self.high = median_interval(rounds)

    @property
    def spread(self) -> float:
        """Width of the 95% interval relative to the ratio."""
        return (self.high - self.low) / self.ratio

    @property
    def rounds(self) -> int:
        return len(self.ours)

    def summary(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "ci95": [self.low, self.high], "spread": self.spread, "rounds": self.rounds,
                "median_ours_s": statistics.median(self.ours), "median_ref_s": statistics.median(self.ref)}

    def cells(self) -> list[str]:
        """ratio (bold), 95% interval, spread, rounds: the columns every table shares."""
        return [f"**{self.ratio:.3f}**", f"{self.low:.3f}-{self.high:.3f}", f"{self.spread:.1%}", str(self.rounds)]


RATIO_HEADER = ["ours/ref", "95% CI", "spread", "rounds"]


def interleave(ours: Callable[[], Any], ref: Callable[[], Any], *, warmup: int = 1, min_rounds: int = 6,
               max_rounds: int = 60, target_spread: float = 0.05, max_seconds: float = 300.0,
               label: str = "") -> Ratio:
    """Time `ours` and `ref` in alternating order (ABBA) after `warmup` calls of each, until
    the ratio's 95% interval is narrower than `target_spread` (at least `min_rounds`, at
    most `max_rounds` rounds or about `max_seconds`)."""
    for _ in range(warmup):
        ours(), ref()
    a: list[float] = []
    b: list[float] = []
    began = time.perf_counter()
    with _progress(max_rounds, label) as bar:
        for r in range(max_rounds):
            pair = [(ours, a), (ref, b)]
            for fn, sink in pair if r % 2 == 0 else pair[::-1]:
                sink.append(timed(fn)[1])
            bar(Ratio(a, b) if len(a) >= 2 else None)
            done = len(a) >= min_rounds and len(a) % 2 == 0  # whole ABBA pairs only
            if done and (Ratio(a, b).spread < target_spread or time.perf_counter() - began > max_seconds):
                break
    return Ratio(a, b)


class _progress:
    """A tqdm bar over rounds showing the running ratio (silent when tqdm is missing or stderr is no tty)."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.bar = total, label, None

    def __enter__(self) -> Callable[[Ratio | None], None]:
        try:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=self.label, leave=False, unit="round",
                            disable=not sys.stderr.isatty())
        except ImportError:
            pass

        def update(r: Ratio | None) -> None:
            if self.bar is not None:
                if r is not None:
                    self.bar.set_postfix(ratio=f"{r.ratio:.3f}", spread=f"{r.spread:.0%}", refresh=False)
                self.bar.update()

        return update

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def set_torch_threads(n: int) -> None:
    """torch.set_num_threads(n) when n > 0. On a machine whose cores are oversubscribed by other
    jobs, PyTorch's OpenMP workers wait for each other at every op (a 0.5 s step took 3-7 s here
    with 2 threads, 0.5 s with 1): one thread per process keeps a ratio measurable there."""
    if n > 0:
        import torch

        torch.set_num_threads(n)


def thread_env(n: int) -> dict[str, str]:
    """Environment variables limiting a new process's TensorFlow, XLA (JAX) and OpenMP pools to n
    threads, as set_torch_threads does for PyTorch (nothing when n is 0)."""
    if n <= 0:
        return {}
    return {"OMP_NUM_THREADS": str(n), "TF_NUM_INTRAOP_THREADS": str(n), "TF_NUM_INTEROP_THREADS": str(n),
            "XLA_FLAGS": f"--xla_cpu_multi_thread_eigen={str(n > 1).lower()} intra_op_parallelism_threads={n}"}


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                            "python": platform.python_version(), "load_average": _load()}
    for name in ("torch", "torchvision", "keras", "jax", "tensorflow"):
        module = sys.modules.get(name)
        if module is not None:
            info[name] = getattr(module, "__version__", "?")
        else:  # measured in worker processes (bench_backends): the installed version
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                info[name] = importlib.metadata.version(name)
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def device_label(device: str) -> str:
    """'cpu', or the GPU's short name ('h100', 'h200', ...) for file names."""
    if device == "cpu":
        return "cpu"
    import torch

    name = torch.cuda.get_device_name(0).lower()
    return next((tag for tag in ("h200", "h100", "a100", "l40s", "l4", "a10g") if tag in name), "cuda")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


@dataclass
class Report:
    """One benchmark run: markdown sections for people, the same numbers as JSON for tools."""

    title: str
    command: str
    sections: list[str] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def add(self, heading: str, header: list[str], rows: list[list[str]], note: str = "") -> None:
        self.sections += [f"## {heading}", "", *([note, ""] if note else []), markdown_table(header, rows), ""]

    def markdown(self) -> str:
        m = machine()
        load = f", load average {m['load_average']}" if m.get("load_average") else ""
        where = (f"{m.get('gpu', m['cpu'])}, {m['cpus']} CPUs{load}; torch {m.get('torch', '-')}, "
                 f"Keras {m.get('keras', '-')}")
        return "\n".join([f"# {self.title}", "", f"`{self.command}`", "", where, "",
                          "Ratios are ours/ref: the median of per-round ratios of interleaved (ABBA) calls, with "
                          "its 95% confidence interval; spread = interval width / ratio.", "", *self.sections])

    def write(self, path: Path) -> tuple[Path, Path]:
        """`path` with .md and .json suffixes, each written whole or not at all; returns both."""
        from shared_specs.checkpoint import atomic_write

        path.parent.mkdir(parents=True, exist_ok=True)
        md, js = path.with_suffix(".md"), path.with_suffix(".json")
        text = json.dumps({"title": self.title, "command": self.command, "machine": machine(),
                           "settings": self.settings, "results": self.results}, indent=2) + "\n"
        atomic_write(md, lambda f: f.write(self.markdown().encode()))
        atomic_write(js, lambda f: f.write(text.encode()))
        return md, js

    def publish(self, path: Path) -> None:
        """Write the results (`write`) and print them, and where they went."""
        md, _ = self.write(path)
        print("\n" + self.markdown())
        print(f"written to {md} and .json")


def command_line(script: str, argv: Sequence[str]) -> str:
    """The command that reproduces a run, with the environment that shaped it."""
    env = [f"{k}={v}" if " " not in v else f"{k}='{v}'" for k in ("KERAS_BACKEND", *thread_env(1))
           if (v := os.environ.get(k))]
    return " ".join([*env, f"python benchmarks/{script}", *argv])
