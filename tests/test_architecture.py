"""The package's shape: imports run one way, and no module reaches into another's private names.

The layers are import-linter contracts in pyproject.toml (`tools/check` runs `lint-imports`).
These tests prove that the contracts hold on this tree, and that they still bite: a copy of
the package with one forbidden import must fail them. The private-name rule is an AST check.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "verifier" / "kmod_audit"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter with this repository's contracts over the package under `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree / "verifier")}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(tree / "pyproject.toml")],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def _copy(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(
        PACKAGE, tree / "verifier" / "kmod_audit", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(REPO / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_contracts_hold() -> None:
    """Every import-linter contract is kept by this tree."""
    proc = _lint_imports(REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_copy_of_the_tree_is_judged_as_the_tree(tmp_path: Path) -> None:
    """The unchanged copy passes: so a failure of the mutated copy below is the mutation's."""
    proc = _lint_imports(_copy(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # A command that reaches back into the CLI: the cycle issue 17 removed.
        ("verify.py", "from kmod_audit import cli", "nothing imports the CLI"),
        # The model reading the host.
        ("rules.py", "from kmod_audit import system", "the model does no I/O"),
        # A renderer running a command.
        ("evidence/__init__.py", "from kmod_audit import check", "renderers and sinks"),
    ],
)
def test_a_forbidden_import_breaks_the_contracts(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    """One forbidden import in a copy of the package makes `lint-imports` fail, naming it."""
    tree = _copy(tmp_path)
    target = tree / "verifier" / "kmod_audit" / module
    if not target.exists():  # evidence is a package after issue 17; a module before
        target = target.parent.with_suffix(".py")
    text = target.read_text()
    # After the module docstring and `from __future__`: the first blank line after them.
    head, sep, rest = text.partition("from __future__ import annotations\n")
    target.write_text(f"{head}{sep}{line}  # noqa\n{rest}")
    lineno = (head + sep).count("\n") + 1
    importer = ".".join(target.relative_to(tree / "verifier").with_suffix("").parts)
    importer = importer.removesuffix(".__init__")
    imported = "kmod_audit." + line.rsplit(" ", 1)[-1]
    proc = _lint_imports(tree)
    assert proc.returncode != 0, proc.stdout
    # The copy was analysed, not the installed package: the report names the inserted line.
    cited = rf"{re.escape(importer)} -> {re.escape(imported)} \((l\.\d+, )*l\.{lineno}[,)]"
    assert re.search(cited, proc.stdout), proc.stdout
    assert f"{contract}" in proc.stdout


def _private_imports(path: Path) -> list[str]:
    """`from <module> import _name` or `<module>._name` where <module> is another package module.

    Allowed: a private name of a module whose own file name starts with `_` (the package's
    private helpers), and dunders such as `__version__`.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    package_modules: dict[str, str] = {}  # local name -> module file stem
    problems: list[str] = []

    def private(name: str) -> bool:
        return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            inside = node.level > 0 or module == "kmod_audit" or module.startswith("kmod_audit.")
            if not inside:
                continue
            stem = module.rsplit(".", 1)[-1] if module and module != "kmod_audit" else ""
            for alias in node.names:
                if not stem:  # `from . import x`: x is a module (or a package attribute)
                    package_modules[alias.asname or alias.name] = alias.name
                    continue
                if private(alias.name) and not private(stem):
                    problems.append(f"{path.name}:{node.lineno}: from {module} import {alias.name}")
    problems.extend(
        f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in package_modules
        and private(node.attr)
        and not private(package_modules[node.value.id])
    )
    return problems


def test_no_module_imports_another_modules_private_names() -> None:
    """A `_name` is private to its module; only the `_helper.py` modules share theirs."""
    problems = [
        problem for path in sorted(PACKAGE.rglob("*.py")) for problem in _private_imports(path)
    ]
    assert problems == []


def test_the_private_name_check_finds_a_violation(tmp_path: Path) -> None:
    """The check above can fail: it flags both spellings of reaching into a module."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from .verify import _relevant\n"
        "from . import system\n"
        "from ._files import write_atomic\n"
        "from . import __version__\n"
        "system._protected('x')\n"
    )
    assert _private_imports(sample) == [
        "sample.py:1: from verify import _relevant",
        "sample.py:5: system._protected",
    ]


# `from kmod_audit.x import a, b` wherever it is written: Python files, shell heredocs, the
# NixOS tests' Python. A move inside the package must carry every one of them along.
_FROM_IMPORT = re.compile(
    r"^\s*from (kmod_audit(?:\.\w+)*) import (\([^)]*\)|[\w, ]+)", re.MULTILINE
)


def _kmod_audit_imports(text: str) -> list[tuple[str, str]]:
    """(module, name) for each `from kmod_audit... import name` in `text`."""
    found = []
    for match in _FROM_IMPORT.finditer(text):
        names = match.group(2).strip("()").replace("\n", " ")
        for part in names.split(","):
            name = part.split("#")[0].split(" as ")[0].strip()
            if name.isidentifier():
                found.append((match.group(1), name))
    return found


def _tracked_text_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=60
    ).stdout.decode()
    paths = []
    for name in filter(None, listed.split("\0")):
        path = REPO / name
        if path.suffix in {".py", ".nix", ".sh", ""} or path.parent.name in {"tools", "bench"}:
            paths.append(path)
    return paths


def test_every_import_of_the_package_outside_it_resolves() -> None:
    """Every `from kmod_audit... import name` in the tree names something the package has.

    This covers what the type checker never sees: tools/vm-verify's heredoc, vm-tests/*.nix.
    """
    code = (
        "import importlib, json, sys\n"
        "bad = []\n"
        "for module, name in json.load(sys.stdin):\n"
        "    try:\n"
        "        loaded = importlib.import_module(module)\n"
        "    except ImportError as exc:\n"
        "        bad.append(f'{module}: {exc}')\n"
        "        continue\n"
        "    if not hasattr(loaded, name):\n"
        "        try:\n"
        "            importlib.import_module(f'{module}.{name}')\n"
        "        except ImportError:\n"
        "            bad.append(f'{module} has no {name}')\n"
        "print(json.dumps(bad))\n"
    )
    pairs = sorted(
        {
            pair
            for path in _tracked_text_files()
            if path.is_file()
            for pair in _kmod_audit_imports(path.read_text(encoding="utf-8", errors="replace"))
        }
    )
    assert len(pairs) > 50  # the scan sees the tree's imports, not nothing
    env = {**os.environ, "PYTHONPATH": str(REPO / "verifier")}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(pairs),
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(proc.stdout) == []


def test_the_import_scan_reads_heredocs() -> None:
    """The scan above finds an import inside a shell heredoc, with parentheses and aliases."""
    text = (
        "python - <<'EOF'\n"
        "from kmod_audit.evidence import write_atomic\n"
        "from kmod_audit import (\n    run_check,\n    Host as H,  # x\n)\nEOF\n"
    )
    assert _kmod_audit_imports(text) == [
        ("kmod_audit.evidence", "write_atomic"),
        ("kmod_audit", "run_check"),
        ("kmod_audit", "Host"),
    ]
