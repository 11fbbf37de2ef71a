"""The README and docs/: every link resolves, and every command they show is run by a test.

A fenced `sh` block carries a marker on the line before it, `<!-- run-by: TEST -->`, that
names the test running its commands (a test file, or `file::Class` / `file::function`), or
`<!-- runs-where: nix -->` for the commands that need a Nix store (CI has none: they run in
`nix flake check`). The marker must name a test that exists. A test in this file runs the
README's install quick start verbatim on the host kernel; transcripts of `kmod-audit
generate` in the pages are run again and must print what they show.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _support import Auditd, HostAudit

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
KMOD_AUDIT = Path(sys.executable).parent / "kmod-audit"

FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"^<!-- (run-by|runs-where): (\S+) -->$")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _blocks(page: Path) -> list[tuple[int, str, str, str | None]]:
    """(line, language, text, marker) of every fenced block of `page`."""
    lines = page.read_text().splitlines()
    blocks: list[tuple[int, str, str, str | None]] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index].strip())
        if opening is None:
            index += 1
            continue
        start = index
        index += 1
        body: list[str] = []
        indent = len(lines[index - 1]) - len(lines[index - 1].lstrip())
        while index < len(lines) and not lines[index].strip().startswith("```"):
            body.append(lines[index][indent:])
            index += 1
        before = next((line for line in reversed(lines[:start]) if line.strip()), "")
        marker = MARKER.match(before.strip())
        blocks.append(
            (start + 1, opening.group(1), "\n".join(body), marker.group(0) if marker else None)
        )
        index += 1
    return blocks


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings."""
    anchors: set[str] = set()
    fenced = False
    for line in page.read_text().splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip().lower()
        slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
        anchors.add(slug)
    return anchors


def _links(page: Path) -> list[str]:
    text = re.sub(r"^\s*```.*?^\s*```", "", page.read_text(), flags=re.DOTALL | re.MULTILINE)
    return [target for target in LINK.findall(text) if "://" not in target]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_links_resolve(page: Path) -> None:
    """Every relative link names a file of the repository, and every #anchor a heading."""
    broken = []
    for target in _links(page):
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and anchor not in _anchors(linked):
            broken.append(f"{target}: no heading with that anchor in {linked.name}")
    assert broken == []


def test_link_checker_finds_a_broken_link(tmp_path: Path) -> None:
    """The checks above can fail: a missing file and a missing anchor are both found."""
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[a](missing.md) [b](#nope) [c](#title) [d](https://x.org/)\n")
    assert _links(page) == ["missing.md", "#nope", "#title"]
    assert _anchors(page) == {"title"}


def _test_exists(reference: str) -> bool:
    """`tests/test_x.py`, `tests/test_x.py::Name` or `tests/test_x.py::Class::method`."""
    file, *names = reference.split("::")
    path = REPO / file
    if not (path.is_file() and path.parent.name == "tests" and path.name.startswith("test_")):
        return False
    scope: list[ast.stmt] = ast.parse(path.read_text()).body
    for name in names:
        found = [
            node
            for node in scope
            if isinstance(node, ast.ClassDef | ast.FunctionDef) and node.name == name
        ]
        if not found:
            return False
        scope = found[0].body
    return True


SHELL_BLOCKS = [
    pytest.param(page, line, text, marker, id=f"{page.name}:{line}")
    for page in PAGES
    for line, language, text, marker in _blocks(page)
    if language in {"sh", "bash", "console"}
]


@pytest.mark.parametrize(("page", "line", "text", "marker"), SHELL_BLOCKS)
def test_every_shell_block_is_run_by_a_test(
    page: Path, line: int, text: str, marker: str | None
) -> None:
    """A shell block names the test that runs its commands, and that test exists."""
    assert marker is not None, f"{page.name}:{line}: no <!-- run-by: TEST --> before the block"
    kind, _, rest = marker.removeprefix("<!-- ").removesuffix(" -->").partition(": ")
    if kind == "runs-where":
        assert rest == "nix"
        assert all(command.startswith("nix ") for command in _commands(text))
        return
    assert _test_exists(rest), f"{page.name}:{line}: {rest} is not a test of this repository"


def _commands(text: str) -> list[str]:
    return [
        line.split("#", 1)[0].strip()
        for line in text.replace("\\\n", " ").splitlines()
        if line.split("#", 1)[0].strip()
    ]


def test_the_marker_check_can_fail() -> None:
    """Markers naming tests that do not exist are caught."""
    assert _test_exists("tests/test_docs.py::test_the_marker_check_can_fail")
    assert not _test_exists("tests/test_docs.py::no_such_test")
    assert not _test_exists("tests/nope.py")
    assert not _test_exists("README.md")


GENERATE = re.compile(r"^\$ (kmod-audit generate .*)$")


def _generate_transcripts() -> list[tuple[str, str, str]]:
    transcripts = []
    for page in PAGES:
        for line, _, text, _ in _blocks(page):
            lines = text.splitlines()
            for index, shown in enumerate(lines):
                match = GENERATE.match(shown)
                if match is None:
                    continue
                output = []
                for following in lines[index + 1 :]:
                    if following.startswith("$ "):
                        break
                    output.append(following)
                transcripts.append((f"{page.name}:{line}", match.group(1), "\n".join(output)))
    return transcripts


@pytest.mark.parametrize(("where", "command", "output"), _generate_transcripts())
def test_generate_transcripts_print_what_they_show(where: str, command: str, output: str) -> None:
    """`$ kmod-audit generate ...` in a page prints, run again, exactly the lines shown."""
    argv = command.split()[2:]
    proc = subprocess.run(
        [str(KMOD_AUDIT), "generate", *argv], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"{where}: {proc.stderr}"
    assert output.strip() == proc.stdout.strip(), where


def test_ci_runs_the_readme_test_command() -> None:
    """The test command of the README and of docs/development.md is what `.ci/run` calls."""
    for page in (REPO / "README.md", REPO / "docs" / "development.md"):
        blocks = [text for _, _, text, marker in _blocks(page) if marker]
        test_command = next(text for text in blocks if text.startswith("tools/check"))
        assert "tools/check" == _commands(test_command)[0]
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line[:1].isalpha()]
    assert ["tools/setup", "tools/check"] == [line for line in ci if line.startswith("tools/")]


def _install_block() -> str:
    for _, _, text, marker in _blocks(REPO / "README.md"):
        if marker and "test_install_quick_start" in marker:
            return text
    pytest.fail("README.md has no block run by test_install_quick_start")


def _put_back(saved: Path, directory: Path) -> None:
    """Make the files directly in `directory` what they were in `saved` (a copy of it)."""
    for path in directory.iterdir():
        if path.is_file() and not (saved / path.name).exists():
            path.unlink()
    for path in saved.iterdir():
        if path.is_file():
            shutil.copy2(path, directory / path.name)


@pytest.mark.root
def test_install_quick_start(
    host_audit: HostAudit,  # noqa: ARG001 - restores the kernel's rules and flags
    auditd: Auditd,  # noqa: ARG001 - the running auditd the quick start assumes
    tmp_path: Path,
) -> None:
    """The README's Debian/RHEL/AL2023 quick start, run as written on this machine's kernel.

    Only the install prefix (/opt/kmod-audit) and the link's directory (/usr/local/bin) move
    into a temporary directory. The rules go into the real /etc/audit/rules.d and augenrules
    loads them into the kernel: the test puts back rules.d and audit.rules afterwards, and
    the host_audit fixture the kernel's rules and flags.
    """
    if shutil.which("augenrules") is None:
        pytest.skip("augenrules is not installed (tools/setup installs auditd)")
    prefix, bindir = tmp_path / "opt", tmp_path / "bin"
    bindir.mkdir()
    script = _install_block().replace("/opt/kmod-audit", str(prefix))
    script = script.replace("/usr/local/bin", str(bindir))
    rules_d = Path("/etc/audit/rules.d")
    saved = tmp_path / "saved"
    shutil.copytree("/etc/audit", saved, symlinks=True)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    env.pop("VIRTUAL_ENV", None)
    try:
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
    finally:
        _put_back(saved, Path("/etc/audit"))
        _put_back(saved / "rules.d", rules_d)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("result: COMPLIANT") == 2, proc.stdout[-3000:]


def test_lock_expectation_file(tmp_path: Path) -> None:
    """The monitoring page's lock-expectation commands write a file promtool accepts."""
    from _support import promtool  # noqa: PLC0415 - only this test needs promtool

    page = REPO / "docs" / "monitoring.md"
    block = next(
        text for _, _, text, marker in _blocks(page) if marker and "test_lock_expectation" in marker
    )
    directory = "/var/lib/prometheus/node-exporter"
    assert directory in block
    subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.replace(directory, str(tmp_path))], check=True
    )
    written = tmp_path / "kmod-audit-lock.prom"
    assert ["kmod-audit-lock.prom"] == [path.name for path in tmp_path.iterdir()]
    checked = subprocess.run(
        [promtool(), "check", "metrics"],
        input=written.read_text(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "kmod_audit_lock_expected 1" in written.read_text()
