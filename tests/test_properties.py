"""Property tests: no input makes the verifier crash, and its judgement behaves sensibly.

The inputs are random text (any unicode, control characters, CR, tabs, NUL, very long
lines, raw bytes) and *mutated* rules files: realistic lines (`generate` output, the
standards' example lines, watches, control lines) with words dropped, duplicated or
swapped, characters replaced, `#` inserted, operators changed, unknown syscalls and fields
inserted, lines reordered and `-e 2` added.

Bugs the properties found are pinned by small strict-xfail tests next to them and kept out
of the properties' inputs with a commented `assume`, so the properties still guard
everything else; remove the `assume` when the bug is fixed.

Runtime: the example counts are tuned so that the whole module runs in well under a
minute on two cores (about 15 s on one here); the CLI examples dominate.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from _support import RunCli
from kmod_audit.check import Options, judge
from kmod_audit.generate import generate_lines
from kmod_audit.loader import RuleSet, load
from kmod_audit.profiles import PROFILES, select_profiles
from kmod_audit.rules import (
    NOT_READ,
    THIS_MACHINE,
    Command,
    RulesSource,
    Syntax,
    detect_syntax,
    parse_rules,
)
from kmod_audit.syscalls import MACHINES, Machine

# --------------------------------------------------------------------------------------
# Realistic lines to start from.

_ALL_PROFILES: Final = tuple(PROFILES.values())
_GENERATED: Final = tuple(
    dict.fromkeys(
        line
        for machine in MACHINES.values()
        for profiles in [_ALL_PROFILES, *((p,) for p in _ALL_PROFILES)]
        for line in generate_lines(profiles, machine=machine)
    )
)
_EXAMPLES: Final = tuple(
    line for profile in _ALL_PROFILES for req in profile.requirements for line in req.example
)
#: Lines that record module loads with a key (and so never suppress a later rule).
KEYED_LINES: Final = (
    *_GENERATED,
    *_EXAMPLES,
    "-w /usr/bin/kmod -p x -k modules",
    "-w /sbin/insmod -p x -k modules",
    "-w /etc/modprobe.d/ -p wa -k modprobe",
    "-a always,exit -F arch=b64 -S init_module,delete_module -k modules",
    "-a always,exit -F arch=b32 -S init_module -S delete_module -F key=modules",
    "-a always,exit -S finit_module -F success=1 -k loads",
    "-a always,exit -F arch=b64 -S all -F auid=0 -k root-actions",
    "-a always,exit -F arch=b64 -S init_module -F exit=-EPERM -k denied",
    "-a always,exit -F arch=b64 -S delete_module -F auid>=01750 -F auid!=-1 -k unload",
    "-a always,exit -F arch=b64 -S 175,176 -F uid=0 -k numbers",
    "-a always,exit -F arch=b64 -S finit_module -F a1&0x2 -k flags",
    "-a always,exit -F exe=/usr/bin/kmod -k kmod-exec",
    "-a always,exit -F arch=b64 -S openat -F dir=/etc -F perm=w -k etc",
    "-a always,exit -F arch=b64 -S init_module -C auid!=uid -k other-user",
)
CONTROL_LINES: Final = (
    "-D",
    "-b 8192",
    "-e 1",
    "-f 1",
    "-c",
    "-i",
    "-r 0",
    "--backlog_wait_time 60000",
)
#: Lines that can hide module loads from a later rule, or stop loading.
HIDING_LINES: Final = (
    "-a never,exit -F arch=b64 -S init_module",
    "-a never,exit -F arch=b32 -S all -F auid=unset",
    "-A never,exit -F arch=b64 -S finit_module -F subj_type=kmod_t",
    "-a always,exit -F arch=b64 -S init_module",
    "-a never,task -F uid=0",
    "-a always,exclude -F msgtype=SYSCALL",
    "-a never,user -F msgtype=USER_LOGIN",
    "-a never,filesystem -F fstype=tracefs",
    "-d always,exit -F arch=b64 -S init_module -k modules",
    "-W /usr/bin/kmod -p x -k modules",
    "-D -k modules",
    "-e 0",
    "-e 2",
    "-f 2",
)
SEED_LINES: Final = (*KEYED_LINES, *CONTROL_LINES, *HIDING_LINES)

_OPERATOR: Final = re.compile(r"!=|>=|<=|&=|=|<|>|&")
_OPERATORS: Final = ("=", "!=", "<", ">", "<=", ">=", "&", "&=")
#: Characters that mean something to auditctl or to a line reader.
_ODD_CHARS: Final = "#\t\r\n\x00\x01\x0b\x1c\u2028\u00e9\\ =!<>&,-/0x9aA"
JUNK_WORDS: Final = (
    "-S nosuchcall",
    "-S create_module",
    "-S 99999",
    "-S all",
    "-S -1",
    "-F bogus=1",
    "-F auid>=-1",
    "-F uid&1",
    "-F arch=b32",
    "-F arch=b64",
    "-F key=",
    "-F path=relative",
    "-F perm=q",
    "-C auid!=uid",
    "-k",
    "-p",
    "-F",
    "#",
    "-e 2",
    "extra",
    "-w /nonexistent/kmod",
)
_SYSCALL_NAMES: Final = (
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "query_module",
    "nosuchcall",
    "175",
    "0x9f",
    "all",
    "",
)

Mutation = Callable[[st.DrawFn, list[str]], list[str]]


def _pick(draw: st.DrawFn, items: list[str]) -> int:
    return draw(st.integers(0, len(items) - 1))


def _on_words(change: Callable[[st.DrawFn, list[str]], list[str]]) -> Mutation:
    """Apply `change` to the words of one line."""

    def mutate(draw: st.DrawFn, lines: list[str]) -> list[str]:
        if not lines:
            return lines
        index = _pick(draw, lines)
        words = lines[index].split(" ")
        lines = list(lines)
        lines[index] = " ".join(change(draw, words))
        return lines

    return mutate


def _drop_word(draw: st.DrawFn, words: list[str]) -> list[str]:
    del words[_pick(draw, words)]
    return words


def _duplicate_word(draw: st.DrawFn, words: list[str]) -> list[str]:
    index = _pick(draw, words)
    words.insert(index, words[index])
    return words


def _swap_words(draw: st.DrawFn, words: list[str]) -> list[str]:
    first, second = _pick(draw, words), _pick(draw, words)
    words[first], words[second] = words[second], words[first]
    return words


def _insert_junk(draw: st.DrawFn, words: list[str]) -> list[str]:
    words.insert(draw(st.integers(0, len(words))), draw(st.sampled_from(JUNK_WORDS)))
    return words


def _replace_syscalls(draw: st.DrawFn, words: list[str]) -> list[str]:
    for index, word in enumerate(words[:-1]):
        if word == "-S":
            names = draw(st.lists(st.sampled_from(_SYSCALL_NAMES), min_size=1, max_size=4))
            words[index + 1] = ",".join(names)
            break
    return words


def _on_line(change: Callable[[st.DrawFn, str], str]) -> Mutation:
    """Apply `change` to the text of one line."""

    def mutate(draw: st.DrawFn, lines: list[str]) -> list[str]:
        if not lines:
            return lines
        index = _pick(draw, lines)
        lines = list(lines)
        lines[index] = change(draw, lines[index])
        return lines

    return mutate


def _replace_char(draw: st.DrawFn, line: str) -> str:
    if not line:
        return line
    index = draw(st.integers(0, len(line) - 1))
    char = draw(st.one_of(st.sampled_from(_ODD_CHARS), st.characters(codec="utf-8")))
    return line[:index] + char + line[index + 1 :]


def _insert_hash(draw: st.DrawFn, line: str) -> str:
    index = draw(st.integers(0, len(line)))
    return line[:index] + "#" + line[index:]


def _change_operator(draw: st.DrawFn, line: str) -> str:
    found = list(_OPERATOR.finditer(line))
    if not found:
        return line
    match = draw(st.sampled_from(found))
    return line[: match.start()] + draw(st.sampled_from(_OPERATORS)) + line[match.end() :]


def _reorder_lines(draw: st.DrawFn, lines: list[str]) -> list[str]:
    return draw(st.permutations(lines))


def _duplicate_line(draw: st.DrawFn, lines: list[str]) -> list[str]:
    if not lines:
        return lines
    index = _pick(draw, lines)
    return [*lines[: index + 1], lines[index], *lines[index + 1 :]]


def _drop_line(draw: st.DrawFn, lines: list[str]) -> list[str]:
    if not lines:
        return lines
    index = _pick(draw, lines)
    return lines[:index] + lines[index + 1 :]


def _insert_line(draw: st.DrawFn, lines: list[str]) -> list[str]:
    line = draw(st.sampled_from((*SEED_LINES, "-e 2", "", "   ", "# comment", "\r")))
    index = draw(st.integers(0, len(lines)))
    return [*lines[:index], line, *lines[index:]]


MUTATIONS: Final[tuple[Mutation, ...]] = (
    _on_words(_drop_word),
    _on_words(_duplicate_word),
    _on_words(_swap_words),
    _on_words(_insert_junk),
    _on_words(_replace_syscalls),
    _on_line(_replace_char),
    _on_line(_insert_hash),
    _on_line(_change_operator),
    _reorder_lines,
    _duplicate_line,
    _drop_line,
    _insert_line,
)


@st.composite
def mutated_files(draw: st.DrawFn, seeds: tuple[str, ...] = SEED_LINES) -> str:
    """A rules file made of realistic lines, then mutated a few times."""
    lines = draw(st.lists(st.sampled_from(seeds), min_size=1, max_size=8))
    for mutation in draw(st.lists(st.sampled_from(MUTATIONS), max_size=6)):
        lines = mutation(draw, lines)
    return "\n".join(lines) + draw(st.sampled_from(("\n", "", "\r\n", "\n\n")))


_LONG_LINES: Final = st.builds(
    lambda char, count: char * count, st.characters(codec="utf-8"), st.integers(6000, 9000)
)
#: Any text: arbitrary unicode (control characters, CR, tabs, NUL), long lines.
random_texts: Final = st.one_of(
    st.text(),
    st.lists(
        st.one_of(st.text(max_size=60), st.text(st.sampled_from(_ODD_CHARS)), _LONG_LINES),
        max_size=8,
    ).map("\n".join),
)
any_texts: Final = st.one_of(random_texts, mutated_files())
any_contents: Final = st.one_of(any_texts.map(lambda text: text.encode()), st.binary(max_size=200))

#: Files that record module loads and can neither hide one from a later rule nor stop
#: loading (after the precondition checks below).
keyed_files: Final = st.one_of(
    st.lists(st.sampled_from((*KEYED_LINES, *CONTROL_LINES)), unique=True, max_size=8).map(
        lambda lines: "".join(line + "\n" for line in lines)
    ),
    mutated_files((*KEYED_LINES, *CONTROL_LINES)).map(lambda text: text.rstrip("\n") + "\n"),
)

machines: Final = st.sampled_from(tuple(MACHINES.values()))
profile_ids: Final = st.sampled_from(tuple(PROFILES))

#: rules.d files: realistic lines with comments and blank lines, always newline-terminated.
rules_d_files: Final = st.dictionaries(
    st.sampled_from((1, 2, 9, 10, 11, 20, 99, 100)),
    st.lists(
        st.sampled_from((*SEED_LINES, "# comment", "  # comment", "", "-e 1", "-D", "-b 320")),
        max_size=6,
    ).map(lambda lines: "".join(line + "\n" for line in lines)),
    min_size=1,
    max_size=4,
)


# --------------------------------------------------------------------------------------
# Helpers.


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for the rules files the examples write (one per module, not per example)."""
    return tmp_path_factory.mktemp("properties")


def _write(workdir: Path, content: bytes) -> str:
    handle, path = tempfile.mkstemp(suffix=".rules", dir=workdir)
    with os.fdopen(handle, "wb") as file:
        file.write(content)
    return path


def _load(text: str, machine: Machine, *, live: bool, path: str = "t.rules") -> RuleSet:
    return load(
        parse_rules(
            text,
            path=path,
            machine=machine,
            syntax="rules",
            files=THIS_MACHINE if live else NOT_READ,
        ),
        files=THIS_MACHINE if live else NOT_READ,
    )


def _options(machine: Machine, profiles: Iterable[str], *, strict: bool = False) -> Options:
    return Options(
        machine=machine,
        profiles=select_profiles(list(profiles)),
        uid_min=1000,
        kmod_path="/usr/bin/kmod",
        strict=strict,
        files=NOT_READ,
    )


def _misplaced(
    locations: Iterable[tuple[str, int, str]], path: str, lines: list[str]
) -> list[tuple[str, int, str]]:
    """The (path, line, text) triples that do not name a line of `lines` by its text."""
    return [
        (where, number, text)
        for where, number, text in locations
        if not (where == path and 1 <= number <= len(lines) and lines[number - 1] == text)
    ]


def _misquoted(rules: Iterable[str], path: str, lines: list[str]) -> list[str]:
    """The `path:line: text` references that do not quote line `line` of `lines`."""
    wrong: list[str] = []
    for rule in rules:
        number, _, text = rule.removeprefix(f"{path}:").partition(": ")
        if not (
            rule.startswith(f"{path}:")
            and number.isdecimal()
            and 1 <= int(number) <= len(lines)
            and lines[int(number) - 1].strip() == text
        ):
            wrong.append(rule)
    return wrong


def _contract_violations(data: object) -> list[str]:
    """What the `--format json` output lacks of the DESIGN section 3 contract."""
    if not isinstance(data, dict):
        return ["not an object"]
    problems: list[str] = []
    if not isinstance(data.get("compliant"), bool):
        problems.append("compliant is not a bool")
    profiles = data.get("profiles")
    if not isinstance(profiles, list):
        return [*problems, "profiles is not a list"]
    for profile in profiles:
        if not isinstance(profile, dict):
            problems.append("a profile is not an object")
            continue
        if not isinstance(profile.get("id"), str):
            problems.append("profile id is not a string")
        if not isinstance(profile.get("compliant"), bool):
            problems.append("profile compliant is not a bool")
        requirements = profile.get("requirements")
        if not isinstance(requirements, list):
            problems.append("requirements is not a list")
            continue
        for req in requirements:
            if not isinstance(req, dict):
                problems.append("a requirement is not an object")
                continue
            problems.extend(
                f"requirement {key} is not a string"
                for key in ("id", "title")
                if not isinstance(req.get(key), str)
            )
            if req.get("status") not in {"pass", "fail", "undecided"}:
                problems.append(f"requirement status is {req.get('status')!r}")
            for key in ("reasons", "rules"):
                value = req.get(key)
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    problems.append(f"requirement {key} is not a list of strings")
    return problems


#: gawk's `\s` (C isspace()); mawk, Debian's default awk, has no `\s` at all.
_AUGENRULES_SPACE: Final = "[ \t\n\v\f\r]*"


def _augenrules(files: dict[int, str]) -> str:
    """What augenrules (audit-userspace 3.0.9, with gawk) writes for rules.d `N-*.rules`.

    It `cat`s the files in `ls -1v` order into one awk program that drops empty lines and
    comments, keeps the last `-D` (alone), `-b`, `-f` and `-e` lines, and prints `-D`, `-b`,
    `-f` first and `-e` last.
    """
    last = {"D": "", "b": "", "f": "", "e": ""}
    rules: list[str] = []
    text = "".join(files[number] for number in sorted(files))
    for line in text.split("\n")[: -1 if text.endswith("\n") else None]:
        if not line or re.match(_AUGENRULES_SPACE + "#", line):
            continue
        for option in ("e", "D", "f", "b"):
            tail = _AUGENRULES_SPACE + "$" if option == "D" else ""
            if re.match(f"{_AUGENRULES_SPACE}-{option}{tail}", line):
                last[option] = line
                break
        else:
            rules.append(line)
    header = f"## This file is automatically generated from rules.d\n{last['D']}\n"
    return (
        header + f"{last['b']}\n{last['f']}\n" + "".join(r + "\n" for r in rules) + last["e"] + "\n"
    )


def _statuses(data: Any) -> list[tuple[str, str, str]]:
    """(profile, requirement, status) of a `--format json` report."""
    return [
        (profile["id"], req["id"], req["status"])
        for profile in data["profiles"]
        for req in profile["requirements"]
    ]


def _write_rules_d(workdir: Path, files: dict[int, str]) -> Path:
    directory = Path(tempfile.mkdtemp(dir=workdir, suffix=".d"))
    for number, text in files.items():
        (directory / f"{number}-part.rules").write_text(text)
    (directory / "README").write_text("-e 2\nnot a rules file\n")
    return directory


def _recording_base(text: str, machine: Machine) -> RuleSet:
    """Load `text`, skipping (assume) files that could hide a module load from later rules."""
    base = _load(text, machine, live=False)
    assume(not base.issues)
    assume(base.enabled != 0 and base.locked_at is None)
    assume(not base.task and not base.exclude)
    assume(all(rule.action == "always" and rule.keys for rule in base.exit))
    return base


# Every example writes its own file and run_cli resets the captured output before each
# run, so reusing the function-scoped `run_cli` across examples is safe.
_CLI_SETTINGS: Final = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
_CLI_OPTIONS: Final = st.lists(
    st.sampled_from(
        (
            ("--profile", "all"),
            ("--profile", "cis"),
            ("--profile", "tenable"),
            ("--arch", "aarch64"),
            ("--arch", "x86_64"),
            ("--strict",),
            ("--offline",),
            ("--key", "modules"),
            ("--uid-min", "500"),
        )
    ),
    unique=True,
    max_size=4,
).map(lambda groups: [arg for group in groups for arg in group])


# --------------------------------------------------------------------------------------


class TestNeverRaises:
    """No text makes the parser, the loader or the judge raise."""

    @settings(max_examples=400, deadline=None)
    @given(
        text=any_texts,
        machine=machines,
        syntax=st.sampled_from((None, "rules", "listing")),
        live=st.booleans(),
        flags=st.tuples(st.booleans(), st.booleans()),
    )
    def test_parse_load_and_judge_accept_any_text(
        self,
        text: str,
        machine: Machine,
        syntax: Syntax | None,
        live: bool,
        flags: tuple[bool, bool],
    ) -> None:
        """parse_rules, load and judge return a report on every profile for any text."""
        keep_going, strict = flags
        source = parse_rules(
            text,
            path="any.rules",
            machine=machine,
            syntax=syntax,
            files=THIS_MACHINE if live else NOT_READ,
        )
        ruleset = load(source, files=THIS_MACHINE if live else NOT_READ, keep_going=keep_going)
        report = judge(ruleset, _options(machine, ["all"], strict=strict), label="any")
        assert list(PROFILES) == [p.id for p in report.profiles]


class TestCliNeverCrashes:
    """`kmod-audit check` on any file exits 0, 1, 2 or 3 and keeps its JSON contract."""

    @_CLI_SETTINGS
    @given(content=any_contents, options=_CLI_OPTIONS)
    def test_exit_code_and_json_contract(
        self, run_cli: RunCli, workdir: Path, content: bytes, options: list[str]
    ) -> None:
        """Text and JSON runs agree on an exit code of 0-3 and never show a traceback.

        3 (cannot decide) only when a requirement is undecided and nothing fails.
        """
        path = _write(workdir, content)
        text = run_cli("check", path, *options)
        result = run_cli("check", path, *options, "--format", "json")
        # Exit 2 is for unreadable input: here only a file that looks binary (a NUL in its
        # first 8 KiB); any other 2 would be an error swallowed by the CLI's last resort.
        binary = b"\x00" in content[:8192]
        assert text.code == result.code
        assert result.code in ({2} if binary else {0, 1, 3}), result.err
        for run in (text, result):
            assert [] == [word for word in ("Traceback", "internal error") if word in run.err]
        if binary:
            return
        data = json.loads(result.out)
        assert [] == _contract_violations(data)
        assert (result.code == 0) == data["compliant"]
        failed = "fail" in {status for *_, status in _statuses(data)} or any(
            f["severity"] == "error" for f in data["findings"]
        )
        assert (result.code == 3) == (data["undecided"] and not failed)
        requested = [options[i + 1] for i, arg in enumerate(options) if arg == "--profile"]
        assert [p.id for p in select_profiles(requested)] == [p["id"] for p in data["profiles"]]

    @_CLI_SETTINGS
    @given(content=any_contents, options=_CLI_OPTIONS)
    def test_findings_point_at_their_line(
        self, run_cli: RunCli, workdir: Path, content: bytes, options: list[str]
    ) -> None:
        """Every JSON finding names the file and a line of it whose text it quotes."""
        assume(b"\x00" not in content[:8192])
        path = _write(workdir, content)
        data = json.loads(run_cli("check", path, *options, "--format", "json").out)
        lines = content.decode("utf-8", errors="replace").split("\n")
        findings = [f for s in data["sources"] for f in s["findings"]] + data["findings"]
        locations = [(f["path"], f["line"], f["text"]) for f in findings]
        rules = [r for p in data["profiles"] for req in p["requirements"] for r in req["rules"]]
        assert ([], []) == (_misplaced(locations, path, lines), _misquoted(rules, path, lines))


class TestRulesD:
    """A rules.d directory is judged like the file augenrules assembles from it."""

    @_CLI_SETTINGS
    @given(files=st.lists(any_texts, min_size=1, max_size=3), options=_CLI_OPTIONS)
    def test_findings_point_at_their_file_and_line(
        self, run_cli: RunCli, workdir: Path, files: list[str], options: list[str]
    ) -> None:
        """Every finding names the rules.d file and the line of it that it quotes."""
        assume(not any(b"\x00" in text.encode()[:8192] for text in files))  # binary: exit 2
        directory = Path(tempfile.mkdtemp(dir=workdir, suffix=".d"))
        contents = {}
        for index, text in enumerate(files):
            path = directory / f"{10 * (index + 1)}-mutated.rules"
            path.write_bytes(text.encode())
            contents[str(path)] = text.split("\n")
        result = run_cli("check", str(directory), *options, "--format", "json")
        assert (True, "") == (result.code in {0, 1, 3}, result.err)
        data = json.loads(result.out)
        findings = [f for s in data["sources"] for f in s["findings"]] + data["findings"]
        misplaced = [
            (f["path"], f["line"], f["text"])
            for f in findings
            if not (
                f["path"] in contents
                and 1 <= f["line"] <= len(contents[f["path"]])
                # A file without a final newline runs into the next file's first line
                # (augenrules cats them): that merged line starts with the quoted line.
                and f["text"].startswith(contents[f["path"]][f["line"] - 1])
            )
        ]
        assert [] == misplaced

    @_CLI_SETTINGS
    @given(files=rules_d_files, options=_CLI_OPTIONS)
    def test_directory_is_judged_like_its_augenrules_output(
        self, run_cli: RunCli, workdir: Path, files: dict[int, str], options: list[str]
    ) -> None:
        """`check DIR` gives the exit code and verdicts of `check` on augenrules' output."""
        directory = _write_rules_d(workdir, files)
        assembled = _write(workdir, _augenrules(files).encode())
        from_dir = run_cli("check", str(directory), *options, "--format", "json")
        from_file = run_cli("check", assembled, *options, "--format", "json")
        assert (from_file.code, _statuses(json.loads(from_file.out))) == (
            from_dir.code,
            _statuses(json.loads(from_dir.out)),
        )

    def test_directory_of_comments_only_is_judged(self, run_cli: RunCli, workdir: Path) -> None:
        """A rules.d holding only comments and blank lines is judged (no rules: exit 1)."""
        directory = _write_rules_d(workdir, {10: "# nothing here yet\n\n"})
        result = run_cli("check", str(directory))
        assert (1, "") == (result.code, result.err)

    def test_file_without_final_newline_runs_into_the_next(
        self, run_cli: RunCli, workdir: Path
    ) -> None:
        """The last line of a file without a final newline joins the next file's first line."""
        stig = generate_lines([PROFILES["nixos-stig"]], machine=MACHINES["x86_64"])
        files = {10: "-w /usr/bin/kmod -p x -k modules", 20: "".join(f"{x}\n" for x in stig)}
        directory = _write_rules_d(workdir, files)
        assembled = _write(workdir, _augenrules(files).encode())
        from_dir = run_cli("check", str(directory), "--arch", "x86_64", "--offline")
        from_file = run_cli("check", assembled, "--arch", "x86_64", "--offline")
        assert (1, 1) == (from_file.code, from_dir.code)


class TestLocations:
    """Rejected lines, load issues and findings point at the line they are about."""

    @settings(max_examples=400, deadline=None)
    @given(text=any_texts, machine=machines, live=st.booleans())
    def test_every_issue_names_its_line(self, text: str, machine: Machine, live: bool) -> None:
        """Each rejection, load issue and finding carries the path and a line with its text."""
        path = "/etc/audit/rules.d/mutated.rules"
        source = parse_rules(
            text, path=path, machine=machine, files=THIS_MACHINE if live else NOT_READ
        )
        ruleset = load(source, files=THIS_MACHINE if live else NOT_READ)
        report = judge(ruleset, _options(machine, ["all"]), label="mutated")
        lines = text.split("\n")
        locations = [
            *((r.origin.path, r.origin.line, r.origin.text) for r in source.rejections),
            *((i.origin.path, i.origin.line, i.origin.text) for i in ruleset.issues),
            *((f.path, f.line, f.text) for f in report.findings),
        ]
        assert [] == _misplaced(locations, path, lines)


class TestMonotonicity:
    """Adding the generated lines can only help; a `never` rule in front always hurts."""

    @settings(max_examples=200, deadline=None)
    @given(text=keyed_files, machine=machines, profile=profile_ids)
    def test_appending_generate_output_makes_the_profile_compliant(
        self, text: str, machine: Machine, profile: str
    ) -> None:
        """A clean, keyed file followed by `generate --profile P` complies with P.

        Preconditions (DESIGN section 5, the first matching exit rule decides): the file
        loads without issue, does not disable or lock audit, and has no `never`, keyless,
        task or exclude rule. Runs where the appended lines themselves fail to load (a
        rule of the file already holds one of them: 'Rule exists') are skipped.
        """
        _recording_base(text, machine)
        generated = "".join(
            line + "\n" for line in generate_lines([PROFILES[profile]], machine=machine)
        )
        ruleset = _load(text + generated, machine, live=False)
        assume(not ruleset.issues)
        report = judge(ruleset, _options(machine, [profile]), label="appended")
        assert [(profile, True)] == [(p.id, p.compliant) for p in report.profiles]

    @settings(max_examples=200, deadline=None)
    @given(text=keyed_files, machine=machines)
    def test_prepending_a_never_rule_breaks_nixos_stig(self, text: str, machine: Machine) -> None:
        """`-a never,exit -F arch=b64 -S init_module` first makes nixos-stig fail, naming line 1."""
        base = _recording_base(text, machine)
        assume(
            not any(
                isinstance(item, Command) and item.kind in {"prepend", "delete", "delete_all"}
                for item in base.source.items
            )
        )
        never = "-a never,exit -F arch=b64 -S init_module"
        generated = "".join(
            line + "\n" for line in generate_lines([PROFILES["nixos-stig"]], machine=machine)
        )
        compliant = _load(text + generated, machine, live=False)
        assume(not compliant.issues)
        path = "/etc/audit/audit.rules"
        ruleset = _load(never + "\n" + text + generated, machine, live=False, path=path)
        report = judge(ruleset, _options(machine, ["nixos-stig"]), label="never first")
        (requirement,) = report.profiles[0].requirements
        named = [r for r in requirement.reasons if f"{path}:1 `{never}`" in r]
        assert ("fail", True) == (requirement.status, bool(named))

    @_CLI_SETTINGS
    @given(text=mutated_files(), data=st.data(), options=_CLI_OPTIONS)
    def test_comments_and_blank_lines_do_not_change_the_exit_code(
        self, run_cli: RunCli, workdir: Path, text: str, data: st.DataObject, options: list[str]
    ) -> None:
        """The exit code is the same with comment and blank lines interleaved."""
        lines = text.split("\n")
        assume(detect_syntax(lines) == "rules")  # a listing with comments is a rules file
        padded: list[str] = []
        for line in lines:
            fillers = data.draw(
                st.lists(st.sampled_from(("", "   ", "# comment", "   #-e 2", "#")), max_size=2)
            )
            padded.extend([*fillers, line])
        plain = run_cli("check", _write(workdir, text.encode()), *options)
        commented = run_cli("check", _write(workdir, "\n".join(padded).encode()), *options)
        assert plain.code == commented.code


class TestSources:
    """The parsed source keeps one item per meaningful line, in order, and reads back."""

    @settings(max_examples=300, deadline=None)
    @given(text=mutated_files(), machine=machines)
    def test_items_are_in_line_order(self, text: str, machine: Machine) -> None:
        """Commands and rejections come in line order (a line may yield several)."""
        source: RulesSource = parse_rules(text, path="ordered.rules", machine=machine)
        numbers = [item.origin.line for item in source.items]
        assert sorted(numbers) == numbers

    @settings(max_examples=300, deadline=None)
    @given(text=mutated_files(), machine=machines)
    def test_rendered_rules_read_back_as_the_same_listing(
        self, text: str, machine: Machine
    ) -> None:
        """Loaded rules printed as `auditctl -l` would (Rule.render) read back unchanged.

        `check` compares the running rules (a listing) with the on-disk ones by
        signature to report drift; a file and its own listing must not drift. (How the
        real `auditctl -l` spells rules is checked by test_auditctl_oracle.py.)
        """
        ruleset = _load(text, machine, live=False)
        listing = "".join(rule.render() + "\n" for rule in ruleset.rules) or "No rules\n"
        source = parse_rules(
            listing, path="auditctl -l", machine=machine, syntax="listing", files=NOT_READ
        )
        back = load(source, files=NOT_READ)
        assert ((), [r.signature() for r in ruleset.rules]) == (
            source.rejections,
            [r.signature() for r in back.rules],
        )

    def test_every_arch_field_is_rendered(self, x86_64: Machine) -> None:
        """A rule with two `-F arch=` fields renders both, as `auditctl -l` prints it."""
        line = "-a always,exit -F arch=b32 -F arch=b64 -S init_module -k m"
        (rule,) = _load(line + "\n", x86_64, live=False).rules
        assert "-a always,exit -F arch=b32 -F arch=b64 -S init_module -F key=m" == rule.render()

    def test_empty_syscall_mask_renders_like_auditctl(self, x86_64: Machine) -> None:
        """A rule whose `-S` names no syscall renders without `-S`, as `auditctl -l` prints it."""
        (rule,) = _load("-a always,exit -F arch=b64 -S , -k m\n", x86_64, live=False).rules
        assert "-a always,exit -F arch=b64 -F key=m" == rule.render()
