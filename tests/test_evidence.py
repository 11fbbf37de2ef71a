"""Evidence files: `--output`, the JSON Schema, and checklists/HDF read by their real consumers.

The consumers are the real parsers: STIG Manager's `reviewsFromCklb`/`reviewsFromCkl` (npm
`@nuwcdivnpt/stig-manager-client-modules`) and MITRE's `inspecjs`, run by
tools/consumers/import.mjs on the files `check` and `verify` wrote.
"""

from __future__ import annotations

import importlib
import importlib.resources
import json
import os
import random
import re
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import jsonschema
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from _support import (
    FIXTURES,
    OVER_BUDGET,
    Auditd,
    HostAudit,
    RunCli,
    consumer_import,
    lower_work_limit,
    require_tool,
    review_results,
    valid_report,
)
from kmod_audit import _jsonspans
from kmod_audit._jsonspans import Node, parse_spans
from kmod_audit.evidence import (
    Assessment,
    ChecklistEntry,
    ChecklistStatus,
    load_template,
    merge_cklb,
)
from kmod_audit.probe_result import NOT_LOADED_BY_CHOICE as NOT_LOADED
from kmod_audit.profiles import select_profiles

RULES = FIXTURES / "rules"
PROBE_FIXTURE = FIXTURES / "probe" / "host-x86_64-all.json"

NIXOS_RULE = "SV-268096r1039563_rule"
AL2023_RULES = ("SV-274091r1120261_rule", "SV-274092r1120264_rule", "SV-274093r1120267_rule")


def _write(run_cli: RunCli, tmp_path: Path, fmt: str, *args: str) -> tuple[int, Path]:
    out = tmp_path / f"out.{fmt}"
    result = run_cli(*args, "--format", fmt, "--output", str(out))
    assert "" == result.out, "with --output nothing goes to stdout"
    assert out.exists(), result.err
    return result.code, out


def _probe_command(tmp_path: Path, data: dict[str, Any]) -> str:
    """A --probe-command that prints `data` as the probe would (no kernel involved)."""
    compact = tmp_path / "probe.json"
    compact.write_text(json.dumps(data))
    script = tmp_path / "probe.sh"
    script.write_text(f"#!/bin/sh\nprintf 'KMOD_AUDIT_PROBE '\ncat '{compact}'\n")
    script.chmod(0o755)
    return str(script)


def _rule(path: Path, rule_id: str) -> dict[str, Any]:
    data = json.loads(path.read_text())
    return next(
        rule for stig in data["stigs"] for rule in stig["rules"] if rule["rule_id_src"] == rule_id
    )


class TestOutput:
    """`--output FILE` writes what stdout would show, atomically, or nothing at all."""

    @pytest.mark.parametrize("fmt", ["text", "json"], ids=["text", "json"])
    def test_file_holds_what_stdout_shows(self, run_cli: RunCli, tmp_path: Path, fmt: str) -> None:
        """The file's bytes are those `check` prints without --output, and the exit code too."""
        source = str(RULES / "missing-b32.fail.rules")
        printed = run_cli("check", source, "--format", fmt)
        code, out = _write(run_cli, tmp_path, fmt, "check", source)
        assert (1, printed.out) == (code, out.read_text())

    def test_replaces_an_existing_file_keeping_its_mode(
        self, run_cli: RunCli, tmp_path: Path
    ) -> None:
        """An existing report is replaced whole, keeps its mode, and no temp file remains."""
        out = tmp_path / "report.json"
        out.write_text("old\n")
        out.chmod(0o640)
        result = run_cli(
            "check", str(RULES / "listing-stig.pass.rules"), "--format", "json",
            "--output", str(out),
        )  # fmt: skip
        assert 0 == result.code, result.err
        assert valid_report(out.read_text())["compliant"] is True
        assert 0o640 == stat.S_IMODE(out.stat().st_mode)
        assert ["report.json"] == sorted(p.name for p in tmp_path.iterdir())

    def test_new_file_mode_follows_the_umask(self, run_cli: RunCli, tmp_path: Path) -> None:
        """A new file is 0666 minus the umask, as the shell's `>` makes it (not mkstemp's 0600)."""
        out = tmp_path / "new.txt"
        old = os.umask(0o022)
        try:
            run_cli("check", str(RULES / "listing-stig.pass.rules"), "--output", str(out))
        finally:
            os.umask(old)
        assert 0o644 == stat.S_IMODE(out.stat().st_mode)

    def test_failed_write_leaves_the_old_file_and_no_temp(
        self, run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A write that fails midway (fsync: EIO) is exit 2 naming the file; the old file stays."""
        out = tmp_path / "report.cklb"
        out.write_text("the assessor's previous checklist\n")

        def broken(_fd: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "fsync", broken)
        result = run_cli(
            "check", str(RULES / "listing-stig.pass.rules"), "--format", "cklb",
            "--output", str(out),
        )  # fmt: skip
        assert 2 == result.code
        assert f"--output {out}: cannot write it (Input/output error)" in result.err
        assert "the assessor's previous checklist\n" == out.read_text()
        assert ["report.cklb"] == sorted(p.name for p in tmp_path.iterdir())

    @pytest.mark.parametrize(
        ("name", "needle"),
        [("missing/dir/out.json", "does not exist"), (".", "is a directory")],
        ids=["missing-directory", "directory"],
    )
    def test_unwritable_path_is_exit_2_naming_it(
        self, run_cli: RunCli, tmp_path: Path, name: str, needle: str
    ) -> None:
        """A path that cannot be written: exit 2, the JSON error names the file, nothing made."""
        path = str(tmp_path / name)
        result = run_cli(
            "check", str(RULES / "listing-stig.pass.rules"), "--format", "json", "--output", path
        )
        assert 2 == result.code
        error = valid_report(result.out)["error"]
        assert error["message"].startswith(f"--output {path}: ")
        assert needle in error["message"]
        assert [] == [p for p in tmp_path.rglob("*") if p.is_file()]

    def test_a_fifo_is_written_into_not_replaced(self, run_cli: RunCli, tmp_path: Path) -> None:
        """A FIFO (as /dev/stdout or /dev/null, not a regular file) gets the report; it stays."""
        fifo = tmp_path / "pipe"
        os.mkfifo(fifo)
        # Opened for reading first (non-blocking), so the writer's open does not wait.
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            result = run_cli(
                "check", str(RULES / "listing-stig.pass.rules"), "--format", "json",
                "--output", str(fifo),
            )  # fmt: skip
            os.set_blocking(reader, True)
            with os.fdopen(os.dup(reader), "rb") as handle:
                received = handle.read()
        finally:
            os.close(reader)
        assert 0 == result.code, result.err
        assert stat.S_ISFIFO(fifo.stat().st_mode)
        assert valid_report(received.decode())["compliant"] is True
        assert ["pipe"] == [p.name for p in tmp_path.iterdir()]

    def test_a_symlink_is_followed(self, run_cli: RunCli, tmp_path: Path) -> None:
        """--output naming a symlink replaces the file it points to; the link stays a link."""
        (tmp_path / "shared").mkdir()
        real = tmp_path / "shared" / "host.json"
        real.write_text("old\n")
        link = tmp_path / "report.json"
        link.symlink_to(real)
        result = run_cli(
            "check", str(RULES / "listing-stig.pass.rules"), "--format", "json",
            "--output", str(link),
        )  # fmt: skip
        assert 0 == result.code, result.err
        assert link.is_symlink()
        assert valid_report(real.read_text())["compliant"] is True

    @pytest.mark.parametrize("fmt", ["cklb", "hdf", "ckl"])
    def test_lone_surrogate_from_the_target_is_written(
        self, run_cli: RunCli, tmp_path: Path, fmt: str
    ) -> None:
        """A kernel name with a lone surrogate (a non-UTF-8 byte) from the target is escaped."""
        text = json.dumps(json.loads(PROBE_FIXTURE.read_text()))
        assert '"kernel": "' in text
        compact = tmp_path / "probe.json"
        compact.write_text(text.replace('"kernel": "', '"kernel": "\\udcff', 1))
        probe = tmp_path / "probe.sh"
        probe.write_text(f"#!/bin/sh\nprintf 'KMOD_AUDIT_PROBE '\ncat '{compact}'\n")
        probe.chmod(0o755)
        code, out = _write(run_cli, tmp_path, fmt, "verify", "--probe-command", str(probe))
        assert 0 == code
        data = out.read_text(encoding="utf-8")
        if fmt == "ckl":
            ET.fromstring(data)  # noqa: S314 - our own file
        else:
            json.loads(data)
            assert "\\udcff" in data  # a JSON escape: the consumers read the surrogate back

    def test_unwritable_path_is_refused_before_the_probe_runs(
        self, run_cli: RunCli, tmp_path: Path
    ) -> None:
        """`verify --output` in a missing directory: exit 2 at once, the target is never asked."""
        ran = tmp_path / "probe-ran"
        probe = tmp_path / "probe.sh"
        probe.write_text(f"#!/bin/sh\ntouch '{ran}'\nexit 1\n")
        probe.chmod(0o755)
        output = tmp_path / "missing" / "x.cklb"
        result = run_cli(
            "verify", "--probe-command", str(probe), "--format", "cklb", "--output", str(output)
        )
        assert 2 == result.code, result.err
        assert f"--output {output}: the directory {output.parent} does not exist" in result.err
        assert not ran.exists()

    def test_verify_writes_its_report(self, run_cli: RunCli, tmp_path: Path) -> None:
        """`verify --output` writes the verify report (here from a captured probe run)."""
        probe = _probe_command(tmp_path, json.loads(PROBE_FIXTURE.read_text()))
        code, out = _write(
            run_cli, tmp_path, "json", "verify", "--probe-command", probe, "--profile", "all"
        )
        assert 0 == code
        assert "compliant" == valid_report(out.read_text())["verdict"]


class TestSeveralFormats:
    """--FORMAT-output FILE writes more reports of the same run beside --format/--output."""

    def test_check_writes_every_format_from_one_run(self, run_cli: RunCli, tmp_path: Path) -> None:
        """Each file holds what a run of that format alone gives; stdout the --format report."""
        source = str(RULES / "missing-b32.fail.rules")
        outputs = {fmt: tmp_path / f"report.{fmt}" for fmt in ("text", "json", "ckl", "hdf")}
        result = run_cli(
            "check", source, "--format", "cklb",
            *(arg for fmt, path in outputs.items() for arg in (f"--{fmt}-output", str(path))),
        )  # fmt: skip
        assert 1 == result.code, result.err
        for fmt in ("text", "json"):
            assert run_cli("check", source, "--format", fmt).out == outputs[fmt].read_text()
        printed = tmp_path / "printed.cklb"
        printed.write_text(result.out)
        expected = {NIXOS_RULE: "fail"}
        assert (expected, expected) == (
            review_results(consumer_import("cklb", printed)),
            review_results(consumer_import("ckl", outputs["ckl"])),
        )
        imported = consumer_import("hdf", outputs["hdf"])
        assert {"V-268096": "Failed"} == {
            c["id"]: c["status"] for p in imported["profiles"] for c in p["controls"]
        }

    def test_verify_runs_the_probe_once(self, run_cli: RunCli, tmp_path: Path) -> None:
        """`verify` with four formats asks the target once; every file has its verdict."""
        runs = tmp_path / "runs"
        data = tmp_path / "probe.json"
        data.write_text(json.dumps(json.loads(PROBE_FIXTURE.read_text())))
        probe = tmp_path / "probe.sh"
        probe.write_text(
            f"#!/bin/sh\necho run >> '{runs}'\nprintf 'KMOD_AUDIT_PROBE '\ncat '{data}'\n"
        )
        probe.chmod(0o755)
        json_out, cklb, hdf = (tmp_path / name for name in ("r.json", "r.cklb", "r.hdf"))
        result = run_cli(
            "verify", "--probe-command", str(probe), "--profile", "all",
            "--format", "text", "--output", str(tmp_path / "r.txt"),
            "--json-output", str(json_out), "--cklb-output", str(cklb), "--hdf-output", str(hdf),
        )  # fmt: skip
        assert (0, "", ["run"]) == (result.code, result.out, runs.read_text().split())
        assert "compliant" == valid_report(json_out.read_text())["verdict"]
        assert "result: COMPLIANT" in (tmp_path / "r.txt").read_text()
        assert dict.fromkeys((NIXOS_RULE, *AL2023_RULES), "pass") == review_results(
            consumer_import("cklb", cklb)
        )
        imported = consumer_import("hdf", hdf)
        assert {"Passed"} == {c["status"] for p in imported["profiles"] for c in p["controls"]}

    def test_json_to_stdout_beside_a_file(self, run_cli: RunCli, tmp_path: Path) -> None:
        """`--output FILE --json-output -` puts the JSON on stdout and the text in FILE."""
        text = tmp_path / "r.txt"
        result = run_cli(
            "check", str(RULES / "listing-stig.pass.rules"), "--output", str(text),
            "--json-output", "-",
        )  # fmt: skip
        assert (0, True) == (result.code, valid_report(result.out)["compliant"])
        assert "result: COMPLIANT" in text.read_text()

    def test_template_with_cklb_output(self, run_cli: RunCli, tmp_path: Path) -> None:
        """--cklb-template fills the --cklb-output checklist while --format json prints."""
        plain = tmp_path / "plain.cklb"
        source = str(RULES / "listing-stig.pass.rules")
        run_cli("check", source, "--format", "cklb", "--output", str(plain))
        filled = tmp_path / "filled.cklb"
        result = run_cli(
            "check", source, "--format", "json", "--cklb-output", str(filled),
            "--cklb-template", str(plain),
        )  # fmt: skip
        assert (0, True) == (result.code, valid_report(result.out)["compliant"])
        assert {NIXOS_RULE: "pass"} == review_results(consumer_import("cklb", filled))

    @pytest.mark.parametrize(
        ("args", "needle"),
        [
            (["--json-output", "a", "--json-output", "b"], "--json-output is given 2 times (a, b)"),
            (["--json-output", "-"], "--json-output -: stdout already carries the --format text"),
            (["--output", "x", "--hdf-output", "./x"], "--output x and --hdf-output ./x name the"),
            (["--metrics", "x", "--json-output", "x"], "--json-output x and --metrics x name the"),
            (["--profile", "cis", "--ckl-output", "c"], "--ckl-output: STIG Viewer checklists"),
            (["--hdf-output", "h", "--cklb-template", "t"], "pass --format cklb (or --cklb-output"),
            (["--text-output", "."], "--text-output .: is a directory"),
        ],
        ids=["twice", "two-on-stdout", "same-file", "metrics", "cis-ckl", "template", "dir"],
    )
    def test_refused_before_any_work(
        self,
        run_cli: RunCli,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        args: list[str],
        needle: str,
    ) -> None:
        """Outputs that cannot all be written are exit 2, and no report is written.

        --metrics is still written on exit 2 (so the last good run's values do not stay).
        """
        monkeypatch.chdir(tmp_path)
        result = run_cli("check", str(RULES / "listing-stig.pass.rules"), *args)
        metrics = [args[args.index("--metrics") + 1]] if "--metrics" in args else []
        assert (2, metrics) == (result.code, sorted(os.listdir(tmp_path))), result.err
        assert needle in result.err
        if metrics:
            assert (
                'kmod_audit_exit_code{command="check"} 2.0' in (tmp_path / metrics[0]).read_text()
            )


class TestSchema:
    """The JSON Schema ships in the package, and it is strict enough to catch a broken report."""

    def _schema(self) -> dict[str, Any]:
        text = (
            importlib.resources.files("kmod_audit") / "schema" / "report.schema.json"
        ).read_text()
        schema = json.loads(text)
        assert isinstance(schema, dict)
        return schema

    def test_schema_is_a_valid_2020_12_schema(self) -> None:
        """The shipped file is itself a valid JSON Schema (draft 2020-12)."""
        jsonschema.Draft202012Validator.check_schema(self._schema())

    @pytest.mark.parametrize(
        "breakage",
        ["drop-profiles", "bad-status", "error-without-exit"],
        ids=["drop-profiles", "bad-status", "error-without-exit"],
    )
    def test_schema_rejects_a_broken_report(self, run_cli: RunCli, breakage: str) -> None:
        """A report missing a contract key, or with an unknown status, does not validate."""
        data = json.loads(
            run_cli("check", str(RULES / "listing-stig.pass.rules"), "--format", "json").out
        )
        if breakage == "drop-profiles":
            del data["profiles"]
        elif breakage == "bad-status":
            data["profiles"][0]["requirements"][0]["status"] = "ok"
        else:
            data = {"error": {"message": "x"}}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(data, self._schema())

    def test_verify_report_conforms(self, run_cli: RunCli, tmp_path: Path) -> None:
        """The verify report of a captured probe run validates (run_cli checks every json)."""
        probe = _probe_command(tmp_path, json.loads(PROBE_FIXTURE.read_text()))
        result = run_cli("verify", "--probe-command", probe, "--profile", "all", "--format", "json")
        assert 0 == result.code, result.err
        assert valid_report(result.out)["evidence"]


class TestChecklistOnlyForStigs:
    """CIS and Tenable are no STIGs: a checklist of them alone is refused before any work."""

    @pytest.mark.parametrize("fmt", ["cklb", "ckl"], ids=["cklb", "ckl"])
    @pytest.mark.parametrize("command", ["check", "verify"], ids=["check", "verify"])
    def test_cis_only_checklist_is_exit_2(
        self, run_cli: RunCli, tmp_path: Path, fmt: str, command: str
    ) -> None:
        """Exit 2 naming the profiles and the formats that hold them; no file, no probe."""
        args = (
            [str(RULES / "cis-benchmark.pass.rules")]
            if command == "check"
            else ["--target", "console:/nonexistent/console"]
        )
        out = tmp_path / "x"
        result = run_cli(
            command, *args, "--profile", "cis", "--profile", "tenable", "--format", fmt,
            "--output", str(out),
        )  # fmt: skip
        assert 2 == result.code, result.err
        assert "checklists exist only for DISA STIGs" in result.err
        assert "cis, tenable is none; use --format hdf (Heimdall) or json" in result.err
        assert not out.exists()

    def test_template_needs_cklb(self, run_cli: RunCli, tmp_path: Path) -> None:
        """--cklb-template with another format is a usage error."""
        template = tmp_path / "t.cklb"
        template.write_text("{}")
        result = run_cli(
            "check", str(RULES / "listing-stig.pass.rules"), "--format", "hdf",
            "--cklb-template", str(template),
        )  # fmt: skip
        assert 2 == result.code
        assert "--cklb-template: it fills a STIG Viewer 3 checklist; pass --format cklb" in (
            result.err
        )

    def test_mixed_selection_leaves_cis_out_and_says_so(
        self, run_cli: RunCli, tmp_path: Path
    ) -> None:
        """With --profile all the checklist holds the two STIGs; its comments name the rest."""
        _, out = _write(
            run_cli, tmp_path, "cklb", "check", str(RULES / "cis-benchmark.pass.rules"),
            "--profile", "all",
        )  # fmt: skip
        data = json.loads(out.read_text())
        assert ["Anduril_NixOS_STIG", "Amazon_Linux_2023_STIG"] == [
            s["stig_id"] for s in data["stigs"]
        ]
        assert "Profiles cis, tenable are no DISA STIGs" in data["target_data"]["comments"]


class TestCheckImported:
    """Checklists and HDF from `check` of rules files, as STIG Manager and inspecjs read them."""

    def test_cklb_statuses_per_rule(self, run_cli: RunCli, tmp_path: Path) -> None:
        """pass, fail and not applicable (create_module on aarch64) as reviewsFromCklb maps them."""
        code, out = _write(
            run_cli, tmp_path, "cklb", "check", str(RULES / "aarch64-stig.pass.rules"),
            "--arch", "aarch64", "--profile", "all",
        )  # fmt: skip
        assert 1 == code
        imported = consumer_import("cklb", out)
        assert {
            NIXOS_RULE: "pass",
            AL2023_RULES[0]: "pass",
            AL2023_RULES[1]: "notapplicable",
            AL2023_RULES[2]: "fail",
        } == review_results(imported)
        assert {("Anduril_NixOS_STIG", "V1R1"), ("Amazon_Linux_2023_STIG", "V1R1")} == {
            (c["benchmarkId"], c["revisionStr"]) for c in imported["checklists"]
        }
        rule = _rule(out, NIXOS_RULE)
        assert ("V-268096", "ANIX-00-000290", "medium", ["CCI-000135", "CCI-000172"]) == (
            rule["group_id"],
            rule["rule_version"],
            rule["severity"],
            rule["ccis"],
        )
        assert "aarch64-stig.pass.rules:3: -a always,exit -F arch=b64" in rule["finding_details"]
        assert (
            "Anduril NixOS Security Technical Implementation Guide, Version 1 Release 1"
            in (rule["check_content"])
        )
        failed = _rule(out, AL2023_RULES[2])
        assert failed["comments"].startswith("Open: kmod-audit check found that it is not met.")
        assert "execve of /usr/bin/kmod" in failed["comments"]

    def test_ckl_statuses_per_rule(self, run_cli: RunCli, tmp_path: Path) -> None:
        """The same judgement as a STIG Viewer 2 checklist, through reviewsFromCkl."""
        _, out = _write(
            run_cli, tmp_path, "ckl", "check", str(RULES / "aarch64-stig.pass.rules"),
            "--arch", "aarch64", "--profile", "all",
        )  # fmt: skip
        imported = consumer_import("ckl", out)
        assert {
            NIXOS_RULE: "pass",
            AL2023_RULES[0]: "pass",
            AL2023_RULES[1]: "notapplicable",
            AL2023_RULES[2]: "fail",
        } == review_results(imported)
        assert [] == imported["errors"]
        [detail] = [
            r["detail"]
            for c in imported["checklists"]
            for r in c["reviews"]
            if r["ruleId"] == NIXOS_RULE
        ]
        assert "aarch64-stig.pass.rules:4: -a always,exit -F arch=b32" in detail

    def test_undecided_is_not_reviewed(
        self, run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A requirement the evaluator cannot decide (exit 3) imports as notchecked."""
        lower_work_limit(monkeypatch)
        rules = tmp_path / "big.rules"
        rules.write_text(OVER_BUDGET)
        code, out = _write(run_cli, tmp_path, "cklb", "check", str(rules))
        assert 3 == code
        assert {NIXOS_RULE: "notchecked"} == review_results(consumer_import("cklb", out))
        assert "not_reviewed" == _rule(out, NIXOS_RULE)["status"]

    def test_hdf_classifies_every_profile(self, run_cli: RunCli, tmp_path: Path) -> None:
        """One control per requirement of every profile (CIS, Tenable too), as inspecjs sees it."""
        _, out = _write(
            run_cli, tmp_path, "hdf", "check", str(RULES / "aarch64-stig.pass.rules"),
            "--arch", "aarch64", "--profile", "all",
        )  # fmt: skip
        imported = consumer_import("hdf", out)
        statuses = {c["id"]: c["status"] for p in imported["profiles"] for c in p["controls"]}
        assert {
            "V-268096": "Passed",
            "V-274091": "Passed",
            "V-274092": "Not Applicable",
            "V-274093": "Failed",
            "cis-kernel-module-syscalls": "Passed",
            "cis-kernel-module-kmod": "Failed",
            "tenable-kernel-module-syscalls": "Passed",
            "tenable-kernel-module-tools": "Failed",
        } == statuses
        assert [
            "kmod-audit-nixos-stig",
            "kmod-audit-al2023-stig",
            "kmod-audit-cis",
            "kmod-audit-tenable",
        ] == [p["name"] for p in imported["profiles"]]

    def test_hdf_undecided_is_not_reviewed(
        self, run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Inspecjs classifies an undecided requirement as Not Reviewed."""
        lower_work_limit(monkeypatch)
        rules = tmp_path / "big.rules"
        rules.write_text(OVER_BUDGET)
        _, out = _write(run_cli, tmp_path, "hdf", "check", str(rules))
        [profile] = consumer_import("hdf", out)["profiles"]
        assert [("V-268096", "Not Reviewed")] == [
            (c["id"], c["status"]) for c in profile["controls"]
        ]


class TestVerifyImported:
    """Checklists from `verify` runs: a captured probe run, and exit 3."""

    def test_captured_run_passes_with_record_fields(self, run_cli: RunCli, tmp_path: Path) -> None:
        """Each stimulus is listed with its SYSCALL record's serial, key, auid, success, exit."""
        probe = _probe_command(tmp_path, json.loads(PROBE_FIXTURE.read_text()))
        code, out = _write(
            run_cli, tmp_path, "cklb", "verify", "--probe-command", probe, "--profile", "all"
        )
        assert 0 == code
        imported = consumer_import("cklb", out)
        assert dict.fromkeys((NIXOS_RULE, *AL2023_RULES), "pass") == review_results(imported)
        details = _rule(out, NIXOS_RULE)["finding_details"]
        assert "kmod-audit 0.1.0 verify at " in details
        assert "b32 finit_module [logged-in user: auid=1000 uid=1000" in details
        assert "recorded: SYSCALL serial=" in details
        assert "key=module_chng auid=1000 success=no exit=" in details

    def test_control_characters_from_the_target_keep_the_ckl_valid(
        self, run_cli: RunCli, tmp_path: Path
    ) -> None:
        """A key with ESC and a kernel name with CR (from the target) still make valid XML."""
        data = json.loads(PROBE_FIXTURE.read_text())
        data["kernel"] = "6.1\r\x1b[2Kfake"
        data["records"] = data["records"].replace('key="module_chng"', 'key="k\x1b[8m"')
        probe = _probe_command(tmp_path, data)
        _, out = _write(run_cli, tmp_path, "ckl", "verify", "--probe-command", probe)
        ET.parse(out)  # noqa: S314 - our own file; a strict XML parser (as STIG Viewer 2) takes it
        [detail] = [
            r["detail"] for c in consumer_import("ckl", out)["checklists"] for r in c["reviews"]
        ]
        assert "key=k\\x1b[8m auid=1000" in detail

    @pytest.mark.parametrize(
        ("host", "needle"),
        [
            ({"hostname": "h", "ips": 5}, "host.ips is 5, not a list of strings"),
            ({"hostname": "h", "macs": "02:00:00:00:00:01"}, "host.macs is "),
            ({"hostname": ["h"]}, 'host.hostname is ["h"], not a string'),
            ("h", "host is str, not an object"),
        ],
        ids=["ips-number", "macs-string", "hostname-list", "host-string"],
    )
    def test_malformed_host_facts_are_an_unreadable_result(
        self, run_cli: RunCli, tmp_path: Path, host: object, needle: str
    ) -> None:
        """Host facts of the wrong type from the target: exit 3 naming them, no crash."""
        data = json.loads(PROBE_FIXTURE.read_text())
        data["host"] = host
        probe = _probe_command(tmp_path, data)
        out = tmp_path / "out.cklb"
        result = run_cli(
            "verify", "--probe-command", probe, "--format", "cklb", "--output", str(out)
        )
        assert 3 == result.code, result.err
        assert "printed an unreadable result" in result.err
        assert needle in result.err
        assert not out.exists()

    @pytest.mark.parametrize(
        ("field", "value", "needle"),
        [
            ("records", None, "records is null"),
            ("lost_after", "x", 'lost_after is "x"'),
            ("machine", [], "machine is []"),
            ("stimuli", [{"id": {}}], "stimuli[0].id is {}"),
        ],
        ids=["records-null", "lost-after-text", "machine-list", "stimulus-id-object"],
    )
    @pytest.mark.parametrize("fmt", ["text", "cklb"])
    def test_malformed_probe_fields_are_an_unreadable_result(
        self, run_cli: RunCli, tmp_path: Path, field: str, value: object, needle: str, fmt: str
    ) -> None:
        """A probe result with a field of another type: exit 3 naming it, not an internal error."""
        data = json.loads(PROBE_FIXTURE.read_text())
        data[field] = value
        probe = _probe_command(tmp_path, data)
        result = run_cli("verify", "--probe-command", probe, "--format", fmt)
        assert 3 == result.code, result.err
        assert f"printed an unreadable result ({needle})" in result.err

    def test_record_time_out_of_range_is_shown_as_read(
        self, run_cli: RunCli, tmp_path: Path
    ) -> None:
        """A record whose time no calendar holds (a forged log line) is shown, not a crash."""
        data = json.loads(PROBE_FIXTURE.read_text())
        data["records"] = re.sub(
            r"msg=audit\(\d+\.", "msg=audit(99999999999999999999.", data["records"]
        )
        probe = _probe_command(tmp_path, data)
        code, out = _write(run_cli, tmp_path, "cklb", "verify", "--probe-command", probe)
        assert 0 == code
        assert " time=99999999999999999999." in _rule(out, NIXOS_RULE)["finding_details"]

    @pytest.mark.parametrize("fmt", ["cklb", "hdf"])
    def test_no_load_says_the_real_load_was_not_exercised(
        self, run_cli: RunCli, tmp_path: Path, fmt: str
    ) -> None:
        """`verify --no-load`: the evidence says the real load was skipped by choice."""
        data = json.loads(PROBE_FIXTURE.read_text())
        data["skipped"] = [{"what": "successful load and unload of dummy", "why": NOT_LOADED}]
        probe = _probe_command(tmp_path, data)
        code, out = _write(run_cli, tmp_path, fmt, "verify", "--probe-command", probe, "--no-load")
        assert 0 == code
        if fmt == "cklb":
            details = _rule(out, NIXOS_RULE)["finding_details"]
        else:
            [control] = json.loads(out.read_text())["profiles"][0]["controls"]
            details = control["code"]
        assert f"Note: not exercised: successful load and unload of dummy: {NOT_LOADED}" in (
            details
        )

    def test_incomplete_evidence_is_not_reviewed(self, run_cli: RunCli, tmp_path: Path) -> None:
        """Marker never seen and records missing (verify exit 3): not_reviewed, notchecked."""
        data = json.loads(PROBE_FIXTURE.read_text())
        data["marker_seen"] = False
        data["records"] = "".join(
            line + "\n" for line in data["records"].splitlines() if "arch=40000003" not in line
        )
        probe = _probe_command(tmp_path, data)
        code, out = _write(run_cli, tmp_path, "cklb", "verify", "--probe-command", probe)
        assert 3 == code
        assert {NIXOS_RULE: "notchecked"} == review_results(consumer_import("cklb", out))
        rule = _rule(out, NIXOS_RULE)
        assert "Incomplete evidence: the marker" in rule["finding_details"]
        assert rule["comments"].startswith("Not reviewed: kmod-audit verify could not decide.")

    def test_missing_records_stay_not_reviewed_beside_a_refuted_rule(
        self, run_cli: RunCli, tmp_path: Path
    ) -> None:
        """Exit 1 for a record read without the key; the b32 records merely missing: notchecked.

        The evidence is incomplete (marker never seen), so the missing b32 records prove
        nothing against V-268096, whatever the run's exit code.
        """
        data = json.loads(PROBE_FIXTURE.read_text())
        data["marker_seen"] = False
        # Drop the records of the b32 module syscalls (i386 init, delete, finit_module);
        # the kmod executions' records lose their key.
        b32_modules = re.compile(r"arch=40000003 syscall=(128|129|350) ")
        data["records"] = "".join(
            line.replace('key="module_chng"', "key=(null)") + "\n"
            if 'exe="/usr/bin/kmod"' in line
            else line + "\n"
            for line in data["records"].splitlines()
            if not b32_modules.search(line)
        )
        probe = _probe_command(tmp_path, data)
        code, out = _write(
            run_cli, tmp_path, "cklb", "verify", "--probe-command", probe, "--profile", "all"
        )
        assert 1 == code
        assert {
            NIXOS_RULE: "notchecked",
            AL2023_RULES[0]: "pass",
            AL2023_RULES[1]: "pass",
            AL2023_RULES[2]: "fail",
        } == review_results(consumer_import("cklb", out))

    def test_strict_with_incomplete_evidence_is_not_reviewed(
        self, run_cli: RunCli, tmp_path: Path
    ) -> None:
        """--strict rests on controls without a record: with the marker missing, not proven."""
        data = json.loads(PROBE_FIXTURE.read_text())
        data["marker_seen"] = False
        probe = _probe_command(tmp_path, data)
        code, out = _write(
            run_cli, tmp_path, "cklb", "verify", "--probe-command", probe, "--strict"
        )
        assert 3 == code
        assert {NIXOS_RULE: "notchecked"} == review_results(consumer_import("cklb", out))
        assert "not_reviewed" == _rule(out, NIXOS_RULE)["status"]


# Run in a private network namespace: `lo` renamed to a name that is no UTF-8 (the kernel
# allows any byte but `/`, `:` and blanks), then the target data read as checklists do.
_ODD_INTERFACE = """
import fcntl, json, socket, struct, subprocess
from kmod_audit._hostinfo import host_facts
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    fcntl.ioctl(sock.fileno(), 0x8923, struct.pack("16s16s", b"lo", b"x\\xff"))  # SIOCSIFNAME
subprocess.run(["mount", "-t", "sysfs", "none", "/sys"], check=True)
print(json.dumps(host_facts()))
"""


@pytest.mark.root
class TestHostFacts:
    """The target data of a checklist, read from the kernel."""

    def test_interface_name_that_is_no_utf8(self) -> None:
        """An interface whose name is no UTF-8 is skipped quietly, not an internal error."""
        unshare = require_tool("unshare", "apt-get install util-linux")
        proc = subprocess.run(
            [unshare, "--net", "--mount", sys.executable, "-c", _ODD_INTERFACE],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert 0 == proc.returncode, proc.stderr
        facts = json.loads(proc.stdout)
        assert ([], []) == (facts["ips"], facts["macs"])


def _load(host_audit: HostAudit, run_cli: RunCli, *profiles: str) -> None:
    rules = run_cli("generate", *(a for p in profiles for a in ("--profile", p))).out
    assert 0 == host_audit.load(rules).returncode


@pytest.mark.root
class TestOnTheHostKernel:
    """Real `check --running` and `verify --target local` on this kernel, imported for real."""

    def test_check_running_rules(
        self, host_audit: HostAudit, run_cli: RunCli, tmp_path: Path
    ) -> None:
        """The rules the kernel holds, judged and imported: pass with the listing as evidence."""
        _load(host_audit, run_cli, "all")
        code, out = _write(run_cli, tmp_path, "cklb", "check", "--running", "--profile", "all")
        assert 0 == code
        imported = consumer_import("cklb", out)
        assert dict.fromkeys((NIXOS_RULE, *AL2023_RULES), "pass") == review_results(imported)
        details = _rule(out, NIXOS_RULE)["finding_details"]
        assert "Source: running rules (auditctl -l)" in details
        assert "-a always,exit -F arch=b32 -S init_module,delete_module,finit_module" in details
        _, ckl = _write(run_cli, tmp_path, "ckl", "check", "--running", "--profile", "all")
        assert review_results(imported) == review_results(consumer_import("ckl", ckl))
        _, hdf = _write(run_cli, tmp_path, "hdf", "check", "--running", "--profile", "all")
        assert {"Passed"} == {
            c["status"] for p in consumer_import("hdf", hdf)["profiles"] for c in p["controls"]
        }

    def test_check_running_without_b32_is_open(
        self, host_audit: HostAudit, run_cli: RunCli, tmp_path: Path
    ) -> None:
        """Without the b32 rule the running rules fail V-268096: open, with the reason."""
        rules = run_cli("generate").out
        assert (
            0
            == host_audit.load(
                "".join(line + "\n" for line in rules.splitlines() if "arch=b32" not in line)
            ).returncode
        )
        code, out = _write(run_cli, tmp_path, "cklb", "check", "--running")
        assert 1 == code
        assert {NIXOS_RULE: "fail"} == review_results(consumer_import("cklb", out))
        assert "b32 init_module" in _rule(out, NIXOS_RULE)["comments"]

    def test_drift_is_in_the_details(
        self, host_audit: HostAudit, run_cli: RunCli, tmp_path: Path
    ) -> None:
        """Running rules judged beside a file: what runs but is not in the file is listed."""
        _load(host_audit, run_cli, "nixos-stig")
        source = RULES / "missing-b32.fail.rules"
        code, out = _write(run_cli, tmp_path, "cklb", "check", "--running", str(source))
        assert 1 == code
        details = _rule(out, NIXOS_RULE)["finding_details"]
        assert "Drift between the running and the on-disk rules:" in details
        assert f"  warning: running but not in rules file {source}" in details
        assert {NIXOS_RULE: "fail"} == review_results(consumer_import("cklb", out))

    def test_verify_local(
        self, host_audit: HostAudit, auditd: Auditd, run_cli: RunCli, tmp_path: Path
    ) -> None:
        """Real syscalls (ENOSYS for create_module), audited: every STIG rule passes."""
        del auditd
        _load(host_audit, run_cli, "all")
        code, out = _write(
            run_cli, tmp_path, "cklb", "verify", "--target", "local", "--profile", "all"
        )
        assert 0 == code
        imported = consumer_import("cklb", out)
        assert dict.fromkeys((NIXOS_RULE, *AL2023_RULES), "pass") == review_results(imported)
        assert os.uname().nodename == imported["target"]["name"]
        create = _rule(out, AL2023_RULES[1])["finding_details"]
        assert "b64 create_module [logged-in user: auid=1000" in create
        assert "success=no exit=-38" in create  # ENOSYS: the syscall is gone, still audited
        _, ckl = _write(run_cli, tmp_path, "ckl", "verify", "--target", "local", "--profile", "all")
        assert review_results(imported) == review_results(consumer_import("ckl", ckl))
        _, hdf = _write(run_cli, tmp_path, "hdf", "verify", "--target", "local", "--profile", "all")
        assert {"Passed"} == {
            c["status"] for p in consumer_import("hdf", hdf)["profiles"] for c in p["controls"]
        }


# --------------------------------------------------------------------------------------
# --cklb-template

_STATUSES = ("not_a_finding", "open", "not_applicable", "not_reviewed")


def _template_rule(rng: random.Random, number: int) -> dict[str, Any]:
    group = f"V-{number}"
    rule: dict[str, Any] = {
        "group_id_src": group,
        "group_tree": [{"id": group, "title": f"SRG-OS-{number:06d}-GPOS-00001"}],
        "group_id": group,
        "severity": rng.choice(["low", "medium", "high"]),
        "group_title": f"SRG-OS-{number:06d}-GPOS-00001",
        "rule_id_src": f"SV-{number}r{1000000 + number}_rule",
        "rule_id": f"SV-{number}r{1000000 + number}",
        "rule_version": f"ANIX-00-{number % 1000000:06d}",
        "rule_title": f'NixOS must do thing {number} \u2014 "quoted" and \\ escaped.',
        "fix_text": "Edit /etc/nixos/configuration.nix:\n\n  services.x.enable = true;\n",
        "check_content": "Run:\n\t$ sudo check\nIf it fails, this is a finding.",
        "ccis": [f"CCI-{rng.randrange(1, 4000):06d}"],
        "uuid": f"00000000-0000-4000-8000-{number:012d}",
        "status": rng.choice(_STATUSES),
        "overrides": {},
        "comments": rng.choice(["", "Reviewed by J. Doe, caf\u00e9 \U0001f600", "POA&M #12"]),
        "finding_details": rng.choice(["", "detail\r\nline2", "x" * 500]),
    }
    if number % 7 == 0:
        rule["x_site_field"] = {"ticket": number, "tags": [True, None, 1.5e3]}
    return rule


def _template(rng: random.Random, count: int) -> dict[str, Any]:
    numbers = [268078 + i for i in range(count)]
    assert 268096 in numbers
    rules = [_template_rule(rng, n) for n in numbers]
    target = next(r for r in rules if r["group_id"] == "V-268096")
    target.update(
        rule_id_src=NIXOS_RULE,
        rule_id=NIXOS_RULE.removesuffix("_rule"),
        status="not_reviewed",
        comments="",
        finding_details="",
    )
    return {
        "title": "NixOS fleet host 17",
        "id": "a609ab31-6873-4bcf-b9fe-0a2afa9c2454",
        "stigs": [
            {
                "stig_name": "Anduril NixOS Security Technical Implementation Guide",
                "display_name": "Anduril NixOS",
                "stig_id": "Anduril_NixOS_STIG",
                "release_info": "Release: 1 Benchmark Date: 22 Oct 2024",
                "version": "1",
                "uuid": "830f0927-3c12-4623-be2c-fa5e0487e9be",
                "size": len(rules),
                "rules": rules,
            }
        ],
        "active": True,
        "mode": 2,
        "has_path": True,
        "target_data": {
            "target_type": "Computing",
            "host_name": "assessor-named-host",
            "ip_address": "",
            "comments": "kept as the assessor wrote it",
        },
        "cklb_version": "1.0",
        "x_unknown_top": [1, 2, 3],
    }


def _spans(text: str) -> dict[str, tuple[int, int]]:
    root = parse_spans(text.removeprefix("\ufeff"))
    stigs = root.get("stigs")
    assert stigs is not None
    spans: dict[str, tuple[int, int]] = {}
    for stig in stigs.items:
        rules = stig.get("rules")
        assert rules is not None
        for rule in rules.items:
            group = rule.get("group_id")
            assert group is not None
            spans[str(group.value)] = (rule.start, rule.end)
    return spans


@pytest.mark.parametrize(
    ("indent", "ascii_only", "bom"),
    [(2, False, False), (None, True, False), ("\t", False, True)],
    ids=["indent-2", "compact-ascii", "tabs-bom"],
)
class TestTemplate:
    """`--cklb-template`: the proven rule is filled in; every other byte stays as it was."""

    def _make(
        self, tmp_path: Path, indent: int | str | None, ascii_only: bool, bom: bool
    ) -> tuple[Path, str]:
        data = _template(random.Random(268096), 320)  # noqa: S311 - reproducible, not a secret
        text = ("\ufeff" if bom else "") + json.dumps(data, indent=indent, ensure_ascii=ascii_only)
        path = tmp_path / "template.cklb"
        path.write_text(text, encoding="utf-8")
        return path, text

    def test_round_trip_changes_only_the_proven_rule(
        self,
        run_cli: RunCli,
        tmp_path: Path,
        indent: int | str | None,
        ascii_only: bool,
        bom: bool,
    ) -> None:
        """Put the original rule back into the output: the template comes back byte for byte."""
        template, text = self._make(tmp_path, indent, ascii_only, bom)
        code, out = _write(
            run_cli, tmp_path, "cklb", "check", str(RULES / "listing-stig.pass.rules"),
            "--cklb-template", str(template),
        )  # fmt: skip
        assert 0 == code
        merged = out.read_text(encoding="utf-8")
        before, after = _spans(text), _spans(merged)
        assert list(before) == list(after)  # same rules, same order
        offset = len("\ufeff") if bom else 0
        start, end = after["V-268096"]
        old_start, old_end = before["V-268096"]
        restored = (
            merged[: start + offset] + text[old_start + offset : old_end + offset]
            + merged[end + offset :]
        )  # fmt: skip
        assert text == restored
        data = json.loads(merged.removeprefix("\ufeff"))
        [stig] = data["stigs"]
        rule = next(r for r in stig["rules"] if r["group_id"] == "V-268096")
        original = next(
            r for r in json.loads(text.removeprefix("\ufeff"))["stigs"][0]["rules"]
            if r["group_id"] == "V-268096"
        )  # fmt: skip
        assert list(original) == list(rule)  # key order kept, nothing added
        assert "not_a_finding" == rule["status"]
        assert "listing-stig.pass.rules:2: -a always,exit -F arch=b32" in rule["finding_details"]
        imported = consumer_import("cklb", out)
        results = review_results(imported)
        assert 320 == len(results)
        assert "pass" == results[NIXOS_RULE]
        assert "assessor-named-host" == imported["target"]["name"]

    def test_not_reviewed_never_overwrites_and_comments_are_kept(
        self,
        run_cli: RunCli,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        indent: int | str | None,
        ascii_only: bool,
        bom: bool,
    ) -> None:
        """A requirement kmod-audit could not decide leaves the template as it is."""
        template, text = self._make(tmp_path, indent, ascii_only, bom)
        lower_work_limit(monkeypatch)
        rules = tmp_path / "big.rules"
        rules.write_text(OVER_BUDGET)
        code, out = _write(
            run_cli, tmp_path, "cklb", "check", str(rules), "--cklb-template", str(template)
        )
        assert 3 == code
        assert text == out.read_text(encoding="utf-8")


class TestTemplateEdges:
    """Templates that lack a STIG, hold assessor comments, or are not checklists."""

    def test_template_size_is_bounded(self, run_cli: RunCli, tmp_path: Path) -> None:
        """A template over 64 MiB is refused before it is read whole (/dev/zero never ends)."""
        template = tmp_path / "huge.cklb"
        with template.open("w") as handle:
            handle.write('{"stigs": [')
            handle.write(" " * (64 * 1024 * 1024))
            handle.write("]}")
        result = run_cli(
            "check", str(RULES / "listing-stig.pass.rules"), "--format", "cklb",
            "--cklb-template", str(template),
        )  # fmt: skip
        assert 2 == result.code, result.err
        assert f"--cklb-template {template}: holds more than 64 MiB" in result.err

    def test_a_comment_of_an_earlier_run_is_replaced(self, run_cli: RunCli, tmp_path: Path) -> None:
        """Last run's checklist as the template: its "Not a finding" comment does not stay."""
        checklist = tmp_path / "host.cklb"
        run_cli(
            "check", str(RULES / "listing-stig.pass.rules"), "--format", "cklb",
            "--output", str(checklist),
        )  # fmt: skip
        assert _rule(checklist, NIXOS_RULE)["comments"].startswith("Not a finding:")
        result = run_cli(
            "check", str(RULES / "missing-b32.fail.rules"), "--format", "cklb",
            "--cklb-template", str(checklist), "--output", str(checklist),
        )  # fmt: skip
        assert 1 == result.code, result.err
        rule = _rule(checklist, NIXOS_RULE)
        assert "open" == rule["status"]
        assert rule["comments"].startswith("Open: kmod-audit check found that it is not met.")
        assert {NIXOS_RULE: "fail"} == review_results(consumer_import("cklb", checklist))

    def test_missing_stig_is_appended(self, run_cli: RunCli, tmp_path: Path) -> None:
        """A NixOS-only checklist gains the AL2023 STIG when --profile all is judged."""
        template = tmp_path / "t.cklb"
        data = _template(random.Random(1), 30)  # noqa: S311 - reproducible, not a secret
        rule = next(r for r in data["stigs"][0]["rules"] if r["group_id"] == "V-268096")
        rule["comments"] = "assessor: see ticket 42"
        template.write_text(json.dumps(data, indent=2))
        _, out = _write(
            run_cli, tmp_path, "cklb", "check", str(RULES / "cis-benchmark.pass.rules"),
            "--profile", "all", "--cklb-template", str(template),
        )  # fmt: skip
        merged = json.loads(out.read_text())
        assert ["Anduril_NixOS_STIG", "Amazon_Linux_2023_STIG"] == [
            s["stig_id"] for s in merged["stigs"]
        ]
        assert "assessor: see ticket 42" == _rule(out, NIXOS_RULE)["comments"]
        assert "open" == _rule(out, NIXOS_RULE)["status"]
        results = review_results(consumer_import("cklb", out))
        assert (33, "fail", "pass") == (len(results), results[NIXOS_RULE], results[AL2023_RULES[0]])

    @pytest.mark.parametrize(
        ("content", "needle"),
        [
            ("{not json", "not JSON (Expecting property name"),
            ('{"title": "x"}', "no `stigs` array, so it is no STIG Viewer 3 checklist"),
            ('{"stigs": [{"stig_id": "x"}]}', "stigs[0] has no `rules` array"),
            (
                '{"stigs": [{"rules": [' + "[" * 100_000 + "]" * 100_000 + "]}]}",
                "no checklist (Nested deeper than 200 levels at line 1 column 219)",
            ),
            (
                '{"stigs": [{"rules": [], "x": ' + "1" * 5000 + "}]}",
                "no checklist (Integer too long to read at line 1 column 31)",
            ),
        ],
        ids=["not-json", "no-stigs", "no-rules", "deeply-nested", "long-integer"],
    )
    def test_bad_template_is_exit_2_before_any_work(
        self, run_cli: RunCli, tmp_path: Path, content: str, needle: str
    ) -> None:
        """A template that is no checklist: exit 2 naming it; verify never reaches the target."""
        template = tmp_path / "bad.cklb"
        template.write_text(content)
        result = run_cli(
            "verify", "--target", "console:/nonexistent/console", "--format", "cklb",
            "--cklb-template", str(template),
        )  # fmt: skip
        assert 2 == result.code, result.err
        assert f"--cklb-template {template}: {needle}" in result.err


# A fixed assessment of every profile, so the merged checklists are reproducible: the
# statuses cover every kind, and the texts hold what JSON must escape.
_GOLDEN_STATUSES: dict[str, ChecklistStatus] = {
    "V-268096": "open",
    "V-274091": "not_a_finding",
    "V-274092": "not_reviewed",
    "V-274093": "not_applicable",
}
CKLB_FIXTURES = FIXTURES / "cklb"


def _rules(stig: Node) -> tuple[Node, ...]:
    rules = stig.get("rules")
    assert rules is not None
    return rules.items


def _member(rule: Node, name: str) -> object:
    assert isinstance(rule.value, dict)
    return rule.value[name]


def _golden_assessment() -> Assessment:
    profiles = select_profiles(["all"])
    outcomes = tuple(
        ChecklistEntry(
            profile=profile,
            requirement=req,
            status=_GOLDEN_STATUSES.get(req.id, "open"),
            comment=f'Open: kmod-audit check found that it is not met. {req.id} "x" \\ caf\u00e9.',
            details=f"{req.id} line 1\n\tline 2 \u2014 \U0001f600\r\nend",
            checks=(),
        )
        for profile in profiles
        for req in profile.requirements
    )
    return Assessment(
        command="check",
        time="2024-10-22T00:00:00Z",
        host={"hostname": "golden-host"},
        target="golden.rules",
        machine="x86_64",
        kernel="6.1.0",
        outcomes=outcomes,
        profiles=profiles,
        verdict="not compliant (exit 1)",
    )


class TestTemplateMerge:
    """The merge's output, byte for byte, and a checklist of 20,000 rules merged whole."""

    @pytest.mark.parametrize(
        "template",
        sorted(CKLB_FIXTURES.glob("*.template.cklb")),
        ids=lambda p: p.name.removesuffix(".template.cklb"),
    )
    def test_merge_matches_golden(self, template: Path) -> None:
        """Each template merges to its golden file, which the merge before issue 16 wrote."""
        golden = template.with_name(template.name.replace(".template.", ".merged."))
        actual = merge_cklb(load_template(str(template)), _golden_assessment())
        if os.environ.get("KMOD_AUDIT_UPDATE_GOLDENS") == "1":
            golden.write_text(actual, encoding="utf-8", newline="")
        assert golden.exists(), f"missing golden {golden}; run with KMOD_AUDIT_UPDATE_GOLDENS=1"
        assert golden.read_bytes().decode("utf-8") == actual

    def test_large_template_merges_every_copy(self, tmp_path: Path) -> None:
        """20,000 copies of the NixOS rule are each filled in; every other byte stays."""
        copy = {
            "group_id_src": "V-268096",
            "group_id": "V-268096",
            "rule_id_src": NIXOS_RULE,
            "rule_id": NIXOS_RULE.removesuffix("_rule"),
            "severity": "medium",
            "status": "not_reviewed",
            "comments": "",
            "finding_details": "",
        }
        nixos = [
            dict(copy, comments="assessor: kept") if n % 1000 == 0 else copy for n in range(20_000)
        ]
        al2023 = [
            dict(copy, group_id=group, rule_id_src=rule, rule_id=rule.removesuffix("_rule"))
            for group, rule in zip(("V-274091", "V-274092", "V-274093"), AL2023_RULES, strict=True)
        ]
        data = {
            "stigs": [
                {"stig_id": "Anduril_NixOS_STIG", "rules": nixos},
                {"stig_id": "Amazon_Linux_2023_STIG", "rules": al2023},
            ],
            "target_data": {"host_name": "assessor-named-host"},
        }
        text = json.dumps(data, indent=2)
        path = tmp_path / "large.cklb"
        path.write_text(text)
        assessment = _golden_assessment()
        merged = merge_cklb(load_template(str(path)), assessment)
        stigs = [parse_spans(t).get("stigs") for t in (text, merged)]
        assert stigs[0] is not None
        assert stigs[1] is not None
        pairs = [
            (old, new)
            for old_stig, new_stig in zip(stigs[0].items, stigs[1].items, strict=True)
            for old, new in zip(_rules(old_stig), _rules(new_stig), strict=True)
        ]
        outcomes = {o.requirement.id: o for o in assessment.outcomes}
        details, comment = outcomes["V-268096"].details, outcomes["V-268096"].comment
        assert [
            ("open", details, "assessor: kept" if n % 1000 == 0 else comment) for n in range(20_000)
        ] == [
            (_member(new, "status"), _member(new, "finding_details"), _member(new, "comments"))
            for _, new in pairs[:20_000]
        ]
        assert ["not_a_finding", "not_reviewed", "not_applicable"] == [
            _member(new, "status") for _, new in pairs[20_000:]
        ]
        # Each rule put back as the template had it gives the template, byte for byte.
        restored, pos = [], 0
        for old, new in pairs:
            restored += [merged[pos : new.start], text[old.start : old.end]]
            pos = new.end
        assert text == "".join([*restored, merged[pos:]])


# Objects as (key, value) pairs, so that a key may repeat.
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(st.tuples(st.sampled_from(["a", "b", "é", 'q"\\']), inner), max_size=4).map(
            tuple
        )
    ),
    max_leaves=25,
)
_blanks = st.sampled_from(["", " ", "\n  ", "\t", "\r\n"])


@st.composite
def _json_texts(draw: st.DrawFn) -> str:
    """A JSON text with random blanks and escapes, at times broken by one edit."""

    def dump(value: object) -> str:
        gap = draw(_blanks)
        if isinstance(value, list):
            return "[" + gap + ("," + gap).join(dump(v) for v in value) + gap + "]"
        if isinstance(value, tuple):
            pairs = (json.dumps(k, ensure_ascii=ascii_only) + ":" + gap + dump(v) for k, v in value)
            return "{" + gap + ("," + gap).join(pairs) + gap + "}"
        return json.dumps(value, ensure_ascii=ascii_only)

    ascii_only = draw(st.booleans())
    text = draw(_blanks) + dump(draw(_json_values)) + draw(_blanks)
    edit = draw(st.sampled_from(["none", "insert", "delete"]))
    pos = draw(st.integers(0, len(text)))
    if edit == "insert":
        text = text[:pos] + draw(st.sampled_from(list('{}[],:"\\ 0-.eNI\ufeff'))) + text[pos:]
    elif edit == "delete":
        text = text[:pos] + text[pos + 1 :]
    return text


def _parsed(read: Callable[[str], Node], text: str) -> Node | tuple[str, int]:
    try:
        return read(text)
    except json.JSONDecodeError as exc:
        return (exc.msg, exc.pos)


def _exact(text: str) -> Node:
    return _jsonspans._read(_jsonspans._Reader(text))


def _walk(node: Node) -> list[Node]:
    """`node` and every value in it."""
    return [
        node,
        *(d for _, n in node.members for d in _walk(n)),
        *(d for n in node.items for d in _walk(n)),
    ]


def _cut(node: Node, levels: int) -> Node:
    """`node` as parse_spans(levels=...) gives it: nothing below `levels` is expanded."""
    if levels == 0:
        return attrs.evolve(node, members=(), items=())
    return attrs.evolve(
        node,
        members=tuple((k, _cut(n, levels - 1)) for k, n in node.members),
        items=tuple(_cut(n, levels - 1) for n in node.items),
    )


class TestSpans:
    """The fast reader of valid checklists gives what the exact reader gives."""

    @settings(max_examples=300, deadline=None)
    @given(text=_json_texts())
    def test_fast_reader_matches_exact_reader(self, text: str) -> None:
        """Every document gives the same spans and values, or the same error at the same place."""
        assert _parsed(_exact, text) == _parsed(parse_spans, text)

    @settings(max_examples=100, deadline=None)
    @given(text=_json_texts(), levels=st.integers(0, 3))
    def test_levels_and_member_spans(self, text: str, levels: int) -> None:
        """`levels` stops the tree at that depth; `member_spans` gives an object's spans."""
        full = _parsed(_exact, text)
        assume(isinstance(full, Node))
        assert isinstance(full, Node)
        assert _cut(full, levels) == parse_spans(text, levels=levels)
        objects = [node for node in _walk(full) if isinstance(node.value, dict)]
        assert [[(k, n.start, n.end) for k, n in node.members] for node in objects] == [
            _jsonspans.member_spans(text, attrs.evolve(node, members=())) for node in objects
        ]

    @pytest.mark.parametrize(
        "text",
        [
            "[" * 200 + "]" * 200,
            "[" * 201 + "]" * 201,
            '{"a": ' * 200 + "1" + "}" * 200,
            '{"a": ' * 201 + "1" + "}" * 201,
            "[NaN]",
            "[1, -Infinity]",
            '{"a": Infinity}',
            "\ufeff{}",
            "[1] x",
            '{"a": 1, "a": [2]}',
        ],
        ids=[
            "depth-200", "depth-201", "object-depth-200", "object-depth-201", "nan",
            "minus-infinity", "infinity", "bom", "extra-data", "repeated-key",
        ],
    )  # fmt: skip
    def test_edges_match_exact_reader(self, text: str) -> None:
        """The nesting limit, NaN and Infinity, a BOM and extra data: as the exact reader."""
        assert _parsed(_exact, text) == _parsed(parse_spans, text)
