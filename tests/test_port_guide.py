"""docs/port-your-own-model.md: its Python examples run as written, in order, and print
exactly the text the guide shows after each."""

import contextlib
import io
import re
from pathlib import Path

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "port-your-own-model.md"


def test_the_guides_examples_print_what_it_shows() -> None:
    text = GUIDE.read_text()
    # each runnable example is a python block followed by "prints" and a text block
    examples = re.findall(r"```python\n((?:(?!```).)*)```\n\nprints\n\n```text\n(.*?)```", text, flags=re.S)
    assert len(examples) == 4
    namespace: dict = {}
    for code, shown in examples:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code, str(GUIDE), "exec"), namespace)
        assert printed.getvalue() == shown
