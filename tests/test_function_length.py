"""No function in the package is longer than a reader can hold, unless the allow-list says why.

Length is counted from the `def` line to the function's last line, without its docstring (the docstring documents
the function; the code is what a reader has to hold). Nested functions count on their own and inside their parent.
Run `python tests/test_function_length.py` for the longest functions.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "hf_token_merge"
LIMIT = 60

# "path:function" -> why it may be longer. Remove an entry once the function is split; the test fails on stale ones.
ALLOWED = {
    "cli/main.py:_add_evaluate": "a flat list of argparse options; splitting it would scatter one command's help",
    "cli/sweep.py:add_parser": "a flat list of argparse options; splitting it would scatter one command's help",
}


def function_lengths(package_dir: Path = PACKAGE_DIR) -> list[tuple[int, str]]:
    """`(length without docstring, "path:function")` of every function in the package, longest first."""
    lengths = []
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            length = node.end_lineno - node.lineno + 1
            if ast.get_docstring(node, clean=False) is not None:
                length -= node.body[0].end_lineno - node.body[0].lineno + 1
            lengths.append((length, f"{relative}:{node.name}"))
    return sorted(lengths, reverse=True)


def test_no_function_is_longer_than_the_limit_without_a_reason():
    too_long = {name: length for length, name in function_lengths() if length > LIMIT}
    unexplained = sorted(f"{name} ({length} lines)" for name, length in too_long.items() if name not in ALLOWED)
    assert not unexplained, f"split these functions (or add a reason to ALLOWED): {unexplained}"
    stale = sorted(name for name in ALLOWED if name not in too_long)
    assert not stale, f"these are no longer too long; remove them from ALLOWED: {stale}"


def test_the_measure_counts_code_without_the_docstring(tmp_path):
    source = 'def f():\n    """Doc.\n\n    More.\n    """\n    a = 1\n    return a\n\n\ndef g():\n    return 2\n'
    (tmp_path / "m.py").write_text(source, encoding="utf-8")
    assert function_lengths(tmp_path) == [(3, "m.py:f"), (2, "m.py:g")]


if __name__ == "__main__":
    for length, name in function_lengths()[: int(sys.argv[1]) if len(sys.argv) > 1 else 25]:
        print(f"{length:4d}  {name}{'  (allowed: ' + ALLOWED[name] + ')' if name in ALLOWED else ''}")
