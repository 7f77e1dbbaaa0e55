"""The README's Python examples run as written, in order, and print what they claim."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_examples_run_and_print_what_they_claim():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 4
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)
    lines = printed.getvalue().splitlines()
    assert float(lines[0]) < 1e-4  # torch vs keras relative difference of the quick start
    assert lines[1] == "ParamCount(trainable=25557032, buffers=53120)"
    assert lines[2].startswith("4.089")
    assert lines[3] == "['resnet50', 'resnet50_v1', 'resnet50_v2', 'resnet50d']"
    assert lines[4].startswith("LayerRow(name='conv1', kind='Conv', output_shape=(64, 112, 112)")
    assert lines[5] == "resnet18 ResNet"
