"""The README's Python examples run as written, in order, and print what they claim.

Each `print(...)  # claim` line of the examples is checked against its own comment, so the
README and the test cannot drift apart: the claim is the exact text printed, or, where it
holds `...`, the text up to there; the quick start's `~1e-7` is a float32 rounding
difference, held to the float32 parity bound.
"""

import contextlib
import io
import re
from pathlib import Path

from support import F32_RTOL

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_examples_run_and_print_what_they_claim():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 4
    claims = [m.group(1).strip() for block in blocks for m in re.finditer(r"^print\(.*\)\s+# (.*)$", block, re.M)]
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)
    lines = printed.getvalue().splitlines()
    assert len(lines) == len(claims) >= 6, (lines, claims)
    assert claims[0].startswith("~") and float(lines[0]) < F32_RTOL  # torch vs keras, relative to the output scale
    for line, claim in zip(lines[1:], claims[1:]):
        if "..." in claim:
            assert line.startswith(claim.split("...")[0]), (line, claim)
        else:
            assert line == claim
    assert "ParamCount(trainable=25557032, buffers=53120)" in lines  # torchvision's resnet50 documentation
