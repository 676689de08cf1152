"""The import contract that `lint-imports` cannot check, and the lean core import.

`lint-imports` (.ci/run, contracts in pyproject.toml) keeps the sub-packages layered and the core free of the
harness. Two rules are checked here: no module imports or reads an underscore name of another sub-package
(private names are free to change), and `import hf_token_merge` loads none of the evaluation, analysis or data
stacks (they cost seconds and belong to the harness).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import hf_token_merge

PACKAGE_DIR = Path(hf_token_merge.__file__).parent
REPO_ROOT = PACKAGE_DIR.parent
# transformers imports accelerate itself when the quantizer registry loads, so it is not on this list.
HEAVY_STACKS = ("datasets", "jiwer", "soundfile", "scipy", "matplotlib", "sklearn", "evaluate", "umap")
HARNESS = ("reference", "evaluation", "analysis", "hub", "job", "codec_job", "job_steps", "cli")


def unit(module: str) -> str:
    """The sub-package (or top-level module) a dotted `hf_token_merge...` name belongs to; "" for the root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


REFLECTION = ("getattr", "hasattr", "setattr", "delattr")


def private_definitions(package_dir: Path = PACKAGE_DIR) -> dict[str, set[str]]:
    """Underscore name -> the sub-packages that define it (functions, classes, assigned names and attributes, and
    private strings assigned to a name, such as a handle's `attribute = "_sequence_merge_handle"`)."""
    defined: dict[str, set[str]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        here = unit(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.append(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names += [
                    t.id if isinstance(t, ast.Name) else t.attr
                    for t in targets
                    if isinstance(t, ast.Name | ast.Attribute)
                ]
                if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                    names.append(node.value.value)
            for name in names:
                if is_private(name):
                    defined.setdefault(name, set()).add(here)
    return defined


def private_uses(
    source: str, module: str, is_package: bool = False, defined: dict[str, set[str]] | None = None
) -> list[str]:
    """Underscore names of other sub-packages that `module` imports, reads as attributes, or reaches by reflection.

    Args:
        source: The module's source.
        module: Its dotted name, e.g. `hf_token_merge.remap.apply`.
        is_package: Whether it is a package's `__init__` (relative imports resolve against itself).
        defined: `private_definitions()`: `getattr(obj, "_name")` (and has/set/delattr) is a use of another
            sub-package's private name when only other sub-packages define `_name` (names of other libraries,
            such as transformers' `config._attn_implementation`, are defined nowhere here and pass).

    Returns:
        One line per use: `module:line what`.
    """
    here = unit(module)
    package = module if is_package else module.rpartition(".")[0]
    tree = ast.parse(source)
    names: dict[str, str] = {}  # local name -> the dotted hf_token_merge name it is bound to
    problems: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("hf_token_merge"):
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}"
                names[alias.asname or alias.name] = full
                if unit(full) != here and any(is_private(part) for part in full.split(".")):
                    problems.append(f"{module}:{node.lineno} imports {full}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if not alias.name.startswith("hf_token_merge"):
                    continue
                if unit(alias.name) != here and any(is_private(part) for part in alias.name.split(".")):
                    problems.append(f"{module}:{node.lineno} imports {alias.name}")
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    names[alias.name.split(".")[0]] = alias.name.split(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            dotted = _dotted(node.value)
            head = dotted.split(".")[0] if dotted else None
            if head in names:
                full = names[head] + dotted[len(head) :]
                if unit(full) != here:
                    problems.append(f"{module}:{node.lineno} reads {full}.{node.attr}")
        if (
            defined is not None
            and isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in REFLECTION
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and is_private(node.args[1].value)
        ):
            owners = defined.get(node.args[1].value, set())
            if owners and here not in owners:
                name = node.args[1].value
                problems.append(f"{module}:{node.lineno} {node.func.id}s {name!r} of {'/'.join(sorted(owners))}")
    return problems


def test_no_sub_package_uses_another_ones_private_names():
    defined = private_definitions()
    problems = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_package else parts)
        problems += private_uses(path.read_text(encoding="utf-8"), module, is_package, defined)
    assert problems == []


def test_the_private_name_check_finds_each_kind_of_use():
    source = textwrap.dedent(
        """
        import hf_token_merge.remap.apply
        import hf_token_merge.remap.apply as apply_module
        from hf_token_merge.config.token_merge_config import _CHOICES, TokenMergeConfig
        from hf_token_merge.remap import apply
        from hf_token_merge.sequence._hidden import thing
        from hf_token_merge.evaluation.data import _records_to_dataset
        from . import _same_package_is_fine

        hf_token_merge.remap.apply._swap
        apply_module._swap
        apply._merged_rows
        TokenMergeConfig._validate_stopping
        TokenMergeConfig.__name__
        """
    )
    assert private_uses(source, "hf_token_merge.evaluation.wer") == [
        "hf_token_merge.evaluation.wer:4 imports hf_token_merge.config.token_merge_config._CHOICES",
        "hf_token_merge.evaluation.wer:6 imports hf_token_merge.sequence._hidden.thing",
        "hf_token_merge.evaluation.wer:10 reads hf_token_merge.remap.apply._swap",
        "hf_token_merge.evaluation.wer:11 reads hf_token_merge.remap.apply._swap",
        "hf_token_merge.evaluation.wer:12 reads hf_token_merge.remap.apply._merged_rows",
        "hf_token_merge.evaluation.wer:13 reads hf_token_merge.config.token_merge_config.TokenMergeConfig"
        "._validate_stopping",
    ]
    reflection = textwrap.dedent(
        """
        getattr(model, "_sequence_merge_handle", None)
        setattr(model, "_sequence_merge_handle", None)
        hasattr(config, "_attn_implementation")
        getattr(model, "_own")
        getattr(model, "public")
        """
    )
    defined = {"_sequence_merge_handle": {"sequence"}, "_own": {"evaluation", "sequence"}}
    assert private_uses(reflection, "hf_token_merge.evaluation.kl", defined=defined) == [
        "hf_token_merge.evaluation.kl:2 getattrs '_sequence_merge_handle' of sequence",
        "hf_token_merge.evaluation.kl:3 setattrs '_sequence_merge_handle' of sequence",
    ]
    assert private_definitions()["_sequence_merge_handle"] == {"sequence"}  # the real package
    # Inside its own sub-package a private name is fine.
    assert private_uses("from hf_token_merge.evaluation.data import _x\n", "hf_token_merge.evaluation.wer") == []


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=300
    )
    return set(out.stdout.split())


def test_the_core_import_loads_no_evaluation_analysis_or_data_stack():
    for statement in ("import hf_token_merge", "from hf_token_merge import TokenMergeConfig, apply_token_merge"):
        loaded = _modules_after(statement)
        assert "hf_token_merge.remap.apply" in loaded  # the import did run, from this checkout
        assert sorted(name for name in HEAVY_STACKS if name in loaded) == [], statement
        harness = sorted(m for m in loaded if m.startswith("hf_token_merge.") and unit(m) in HARNESS)
        assert harness == [], statement


def test_the_cli_parser_takes_the_builtin_sets_without_loading_the_evaluation_stack():
    loaded = _modules_after("from hf_token_merge.cli.main import build_parser; build_parser()")
    assert "hf_token_merge.evaluation.builtin" in loaded
    assert sorted(name for name in ("datasets", "jiwer", "soundfile") if name in loaded) == []
    assert sorted(m for m in loaded if m.startswith("hf_token_merge.evaluation.")) == [
        "hf_token_merge.evaluation.builtin"
    ]
