"""Every rules fixture is judged by the CLI, and the verdict is the one its name states.

Fixtures live in `tests/fixtures/rules/<case>.{pass,fail,undecided}.rules` (ComplianceAsCode
style; `undecided` is check's exit 3, CANNOT DECIDE).
Options come from a first-lines comment `# kmod-audit: --profile cis ...` or, for captured
`auditctl -l` output (which has no comments), from a sidecar `<case>.<verdict>.args`.
Parser output for every fixture is compared with a golden file in `tests/fixtures/golden/`
(regenerate with `KMOD_AUDIT_UPDATE_GOLDENS=1 pytest tests/test_fixtures.py`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from _support import FIXTURES, RunCli, fixture_args, host_kmod_layout, require_or_skip
from kmod_audit.rules import NOT_READ, Command, parse_rules
from kmod_audit.syscalls import MACHINES

RULES = FIXTURES / "rules"
GOLDEN = FIXTURES / "golden"
CASES = sorted(RULES.glob("*.rules"))


def _needs_host_layout(path: Path) -> None:
    """Fixtures naming /usr or /bin paths are judged against this machine's files."""
    text = path.read_bytes().decode(errors="replace")
    if re.search(r"(^|\s|=)(/usr/|/bin/)", text) and not host_kmod_layout():
        require_or_skip(
            "the fixture names /usr/bin/kmod and its /usr/sbin symlinks, which this machine "
            "lacks (apt-get install kmod)"
        )


def _verdict(path: Path) -> str:
    return path.name.split(".")[-2]


#: The exit code of `check` for each verdict a fixture's name can state.
EXIT_CODES = {"pass": 0, "fail": 1, "undecided": 3}


# What the report must say for some cases: (case, regex over the text output).
EXPECTED_REASONS = {
    "never-before.fail": r"b32 finit_module .*first matching rule is .*never-before\.fail\.rules:2 "
    r"`-a never,exit -F arch=b32 -S finit_module` \(action never\)",
    "never-prepended.fail": r"b64 delete_module .*never-prepended\.fail\.rules:4 "
    r".*\(action never\)",
    "missing-b32.fail": r"\[fail\] b32 init_module .*no loaded rule matches it",
    "archless.fail": r"\[fail\] b32 finit_module",
    "success-only.fail": r"b64 init_module \(auid=1000, success=no\): no loaded rule",
    "uid-instead-of-auid.fail": r"b64 init_module \(auid=1000, uid=0, success=no\)",
    "auid-range-gap.fail": r"\(auid=60001, success=no\)",
    "auid-min-too-high.fail": r"\(auid=1000, success=no\): no loaded rule matches it",
    "key-missing.fail": r"which has no key",
    "key-pinned-mismatch.fail": r"whose key is 'modules'",
    "rejected-before.fail": r"rejected-before\.fail\.rules:3 would record it but never loads: "
    r"`auditctl -R` stops at .*rejected-before\.fail\.rules:2",
    "rejected-after.fail": r"error: .*rejected-after\.fail\.rules:4: Syscall name unknown: "
    r"bogus_call \(auditctl -R stops here\)",
    "rejected-with-continue.fail": r"error: .*rejected-with-continue\.fail\.rules:3: Syscall name "
    r"unknown: init_modul\n",
    "inline-comment.fail": r"parameter passed without an option given \('# 32-bit'\)",
    "duplicate-rule.fail": r"rules:3: Error sending add rule data request \(Rule exists\)",
    "watch-missing-parent.fail": r"parent directory /nonexistent-kmod-audit-dir of the watch "
    r"does not exist",
    "crlf.fail": r"Enable must be 0, 1, or 2 was 1",
    "lock-before.fail": r"locked by `-e 2` at .*lock-before\.fail\.rules:2",
    "disabled.fail": r"audit is disabled by `-e 0`",
    "delete-all-after.fail": r"\[fail\] b64 init_module .*no loaded rule matches it",
    "task-never.fail": r"the task is never audited because of .*`-a never,task`",
    "exclude-syscall.fail": r"SYSCALL records are dropped by the exclude rule",
    "exit-filter.fail": r"b64 init_module \(auid=1000, success=no, exit=-ENOSYS\)",
    "never-subj-type.fail": r"kmod-audit cannot evaluate subj_type=unconfined_t",
    "aarch64-create-module.fail": r"Syscall name unknown: create_module",
    "aarch64-cis-permx-only.fail": r"\[fail\] b32 execveat of /usr/bin/kmod "
    r"\(auid=1000, success=no\): no loaded rule matches it",
    "arch-after-syscall.fail": r"arch must be before -S",
    "watch-symlink.fail": r"names /usr/sbin/insmod, a symlink to /usr/bin/kmod",
    "path-rule-symlink.fail": r"names /usr/sbin/modprobe, a symlink to /usr/bin/kmod",
    "cis-kmod-perm-w.fail": r"with -p wa, which lacks x",
    "cis-kmod-arch-b64-only.fail": r"\[fail\] b32 execve of /usr/bin/kmod",
    "al2023-no-kmod.fail": r"FAIL V-274093",
    "auid-octal-strict.fail": r"--strict: .* lacks the literal filter\(s\) -F auid>=1000",
    "no-auid-filter-strict.fail": r"lacks the literal filter\(s\) -F auid>=1000 and -F auid!=unset",
    "syscalls-numbers-wrong-table.fail": r"\[fail\] b32 init_module",
    "listing-never-first.fail": r"`-a never,exit -F arch=b64 -S all` \(action never\)",
    "listing-empty.fail": r"no loaded rule matches it",
    "listing-b64-only.fail": r"\[fail\] b32 delete_module",
    "key-field-rejected-first.fail": r"key-field-rejected-first\.fail\.rules:2 would record it but "
    r"never loads: `auditctl -R` stops at .*key-field-rejected-first\.fail\.rules:1",
    "fields-64-with-key.fail": r"fields-64-with-key\.fail\.rules:1: Too many fields in rule: "
    r"key=k \(auditctl -R stops here",
    "listing-watch.undecided": r"\[undecided\] b64 execve of /usr/bin/kmod: .*listing-watch\."
    r"undecided\.rules:2 `-w /usr/bin/kmod -p x -k modules` records it only as an `always` rule, "
    r"and auditctl -l prints `-a never,exit -F path=/usr/bin/kmod -F perm=x -k modules` as this "
    r"watch too; a listing cannot tell them apart: judge the rules file, or the running rules "
    r"with --running \(read over netlink, exact\)",
    "listing-watch-no-key.fail": r"b64 execve of /usr/bin/kmod .*first matching rule is "
    r".*listing-watch-no-key\.fail\.rules:2 `-w /usr/bin/kmod -p x`, which has no key",
}


def _case(path: Path) -> str:
    return path.name.removesuffix(".rules")


class TestFixtureVerdicts:
    """The CLI's verdict on each fixture."""

    @pytest.mark.parametrize("path", CASES, ids=_case)
    def test_exit_code_matches_the_name(self, run_cli: RunCli, path: Path) -> None:
        """`check` exits 0 on *.pass.rules, 1 on *.fail.rules and 3 on *.undecided.rules."""
        _needs_host_layout(path)
        result = run_cli("check", *fixture_args(path), str(path))
        expected = EXIT_CODES[_verdict(path)]
        assert expected == result.code, result.out + result.err

    @pytest.mark.parametrize("case", sorted(EXPECTED_REASONS), ids=str)
    def test_report_names_the_cause(self, run_cli: RunCli, case: str) -> None:
        """A failing or undecided fixture's report names the rule, line or event responsible."""
        path = RULES / f"{case}.rules"
        _needs_host_layout(path)
        result = run_cli("check", *fixture_args(path), str(path))
        assert re.search(EXPECTED_REASONS[case], result.out), result.out

    def test_every_failing_fixture_has_an_expected_reason(self) -> None:
        """No failing or undecided fixture is judged only by its exit code."""
        failing = {_case(p) for p in CASES if _verdict(p) != "pass"}
        assert set() == failing - set(EXPECTED_REASONS)

    @pytest.mark.parametrize("path", CASES, ids=_case)
    def test_json_agrees_with_text(self, run_cli: RunCli, path: Path) -> None:
        """The JSON report gives the same verdict and the contract keys."""
        _needs_host_layout(path)
        result = run_cli("check", *fixture_args(path), "--format", "json", str(path))
        data = json.loads(result.out)
        assert (_verdict(path) == "pass") == data["compliant"]
        assert (_verdict(path) == "undecided") == data["undecided"]
        for profile in data["profiles"]:
            assert {"id", "compliant", "requirements"} <= profile.keys()
            for requirement in profile["requirements"]:
                assert {"id", "title", "status", "reasons", "rules"} <= requirement.keys()
                assert requirement["status"] in {"pass", "fail", "undecided"}


class TestRejectedLines:
    """Lines that fail to load make the source non-compliant even when profiles pass."""

    def test_rejected_after_passes_the_profile_but_not_the_source(self, run_cli: RunCli) -> None:
        """A bad line after complete rules: the profile passes, the source fails at that line."""
        path = RULES / "rejected-after.fail.rules"
        data = json.loads(run_cli("check", "--format", "json", str(path)).out)
        assert data["profiles"][0]["compliant"] is True
        assert data["compliant"] is False
        assert [(4, "error")] == [(f["line"], f["severity"]) for f in data["findings"]]

    def test_listing_is_detected(self, run_cli: RunCli) -> None:
        """Captured `auditctl -l` output is recognised and labelled as such."""
        path = RULES / "listing-stig.pass.rules"
        data = json.loads(run_cli("check", "--format", "json", str(path)).out)
        assert "listing" == data["sources"][0]["syntax"]


def _golden_text(path: Path) -> str:
    machine = MACHINES["aarch64" if "aarch64" in path.name else "x86_64"]
    text = path.read_bytes().decode()  # not read_text(): keep CRs as auditctl does
    source = parse_rules(text, path=path.name, machine=machine, files=NOT_READ)
    lines = [f"syntax: {source.syntax}"]
    for item in source.items:
        if isinstance(item, Command):
            body = item.rule.render() if item.rule is not None else ""
            extra = f" value={item.value}" if item.value is not None else ""
            extra += f" key={item.key}" if item.key is not None else ""
            lines.append(f"{item.origin.line}: {item.kind}{extra} {body}".rstrip(" "))
            lines.extend(f"{item.origin.line}:   warning: {w}" for w in item.warnings)
        else:
            lines.append(f"{item.origin.line}: REJECTED {item.message} | {item.hint}")
    return "\n".join(line.encode("unicode_escape").decode() for line in lines) + "\n"


class TestParserGoldens:
    """The parser's model of every fixture matches its golden file."""

    @pytest.mark.parametrize("path", CASES, ids=_case)
    def test_parsed_model_matches_golden(self, path: Path) -> None:
        """Parsing a fixture (offline, so the host's files do not matter) gives the golden model."""
        golden = GOLDEN / (path.name.removesuffix(".rules") + ".parsed")
        actual = _golden_text(path)
        if os.environ.get("KMOD_AUDIT_UPDATE_GOLDENS") == "1":
            GOLDEN.mkdir(exist_ok=True)
            golden.write_text(actual)
        assert golden.exists(), f"missing golden {golden}; run with KMOD_AUDIT_UPDATE_GOLDENS=1"
        assert golden.read_text() == actual
