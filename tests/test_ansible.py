"""The Ansible collection (collections/ansible_collections/kmodaudit/kmod_audit).

Packaging with `ansible-galaxy collection build`, `ansible-lint` with the production
profile, and the `kmod_audit` module run by the real engine (`ansible localhost`, local
connection) on rules files: nothing here touches the host's audit state. The roles and
the fleet playbook drive real hosts over ssh in tests/test_vm_fleet.py.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

from _ansible import BIN, COLLECTION, MODULE, PLAYBOOK, adhoc_result, environment, run, tool
from _support import FIXTURES, consumer_import, require_or_skip, review_results, valid_report

PASS = FIXTURES / "rules" / "listing-stig.pass.rules"
FAIL = FIXTURES / "rules" / "listing-never-first.fail.rules"
KMOD_AUDIT = str(BIN / "kmod-audit")


def _closed_port() -> int:
    # Bound and closed again: nothing listens there (connection refused).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _module(tmp_path: Path, args: dict[str, Any], *options: str, **env: str) -> dict[str, Any]:
    """Run the module once on localhost (ad hoc, local connection); return its result."""
    result = run(
        [tool("ansible"), "localhost", *options, "-m", MODULE, "-a", json.dumps(args)],
        environment(tmp_path, **env),
        cwd=tmp_path,
        timeout=300,
    )
    return adhoc_result(result)


class TestCollection:
    """The collection packs, installs and passes ansible-lint."""

    def test_build_and_install(self, tmp_path: Path) -> None:
        """`ansible-galaxy collection build` packs it; the installed copy documents the module."""
        built = run(
            [tool("ansible-galaxy"), "collection", "build", str(COLLECTION), "--output-path", "."],
            environment(tmp_path),
            cwd=tmp_path,
        )
        assert 0 == built.code, built.describe()
        archive = tmp_path / "kmodaudit-kmod_audit-1.0.0.tar.gz"
        assert archive.is_file(), built.describe()
        with tarfile.open(archive) as tar:
            names = set(tar.getnames())
        assert {
            "galaxy.yml" not in names,  # build turns it into MANIFEST.json
            "MANIFEST.json" in names,
            "meta/runtime.yml" in names,
            "plugins/modules/kmod_audit.py" in names,
            "roles/rules/tasks/main.yml" in names,
            "roles/prove/tasks/main.yml" in names,
            "playbooks/prove-fleet.yml" in names,
        } == {True}
        installed = tmp_path / "installed"
        install = run(
            [tool("ansible-galaxy"), "collection", "install", str(archive), "-p", str(installed)],
            # Not the in-place collection: galaxy would find it "already installed" there.
            environment(tmp_path, ANSIBLE_COLLECTIONS_PATH=str(installed)),
            cwd=tmp_path,
        )
        assert 0 == install.code, install.describe()
        assert (installed / "ansible_collections/kmodaudit/kmod_audit/MANIFEST.json").is_file()
        doc = run(
            [tool("ansible-doc"), "--json", "-t", "module", MODULE],
            environment(tmp_path, ANSIBLE_COLLECTIONS_PATH=str(installed)),
            cwd=tmp_path,
        )
        assert 0 == doc.code, doc.describe()
        documented = json.loads(doc.out).get(MODULE)
        assert documented is not None, doc.describe()
        assert str(installed) in documented["doc"]["filename"]
        assert {"command", "profiles", "no_load", "cklb", "fail_on"} <= set(
            documented["doc"]["options"]
        )
        assert {"compliant", "undecided", "verdict", "report"} <= set(documented["return"])
        roles = run(
            [tool("ansible-doc"), "--json", "-t", "role", "kmodaudit.kmod_audit.rules"],
            environment(tmp_path, ANSIBLE_COLLECTIONS_PATH=str(installed)),
            cwd=tmp_path,
        )
        assert 0 == roles.code, roles.describe()

    def test_ansible_lint_production_profile(self, tmp_path: Path) -> None:
        """ansible-lint passes on the collection with the production profile, docs parsed."""
        lint = run(
            [tool("ansible-lint"), "--nocolor", "--offline", "--profile", "production", "."],
            environment(tmp_path, NO_COLOR="1", ANSIBLE_LINT_SKIP_SCHEMA_UPDATE="1"),
            cwd=COLLECTION,
            timeout=600,
        )
        assert 0 == lint.code, lint.describe()
        output = lint.out + lint.err
        assert "Profile 'production' was required, and it passed." in output, lint.describe()
        # ansible-lint only logs a module whose documentation does not parse.
        assert "[ERROR]" not in output, lint.describe()


class TestModule:
    """The module maps kmod-audit's exit codes and JSON to task results."""

    def test_compliant(self, tmp_path: Path) -> None:
        """Exit 0: compliant, the JSON report registered as data, nothing changed."""
        result = _module(tmp_path, {"command": "check", "sources": [str(PASS)]})
        assert ("SUCCESS", False) == (result["_status"], result["changed"])
        assert (True, False, "compliant", 0) == (
            result["compliant"],
            result["undecided"],
            result["verdict"],
            result["exit_code"],
        )
        report = valid_report(json.dumps(result["report"]))
        assert report["compliant"] is True
        assert ["nixos-stig"] == [p["id"] for p in report["profiles"]]
        assert ["--format", "json", "--", str(PASS)] == result["cmd"][-4:]

    def test_not_compliant_is_a_verdict(self, tmp_path: Path) -> None:
        """Exit 1: compliant false, the task succeeds with the failing requirement."""
        result = _module(tmp_path, {"command": "check", "sources": [str(FAIL)]})
        assert "SUCCESS" == result["_status"]
        assert (False, False, "not-compliant", 1) == (
            result["compliant"],
            result["undecided"],
            result["verdict"],
            result["exit_code"],
        )
        requirements = result["report"]["profiles"][0]["requirements"]
        assert [("V-268096", "fail")] == [(r["id"], r["status"]) for r in requirements]

    def test_fail_on_noncompliant(self, tmp_path: Path) -> None:
        """fail_on=noncompliant fails the task on exit 1, with the verdict in the message."""
        result = _module(
            tmp_path, {"command": "check", "sources": [str(FAIL)], "fail_on": "noncompliant"}
        )
        assert "FAILED" == result["_status"]
        assert "kmod-audit check: not-compliant (exit 1)" == result["msg"]

    def test_unreachable_target_is_undecided(self, tmp_path: Path) -> None:
        """Exit 3 (ssh refused): undecided, never compliant; kmod-audit's message returned."""
        port = _closed_port()
        result = _module(tmp_path, {"command": "verify", "target": f"ssh://root@127.0.0.1:{port}"})
        assert "SUCCESS" == result["_status"]
        assert (False, True, "undecided", 3) == (
            result["compliant"],
            result["undecided"],
            result["verdict"],
            result["exit_code"],
        )
        assert "Connection refused" in result["message"]
        assert 3 == result["report"]["error"]["exit"]
        unproven = _module(
            tmp_path,
            {
                "command": "verify",
                "target": f"ssh://root@127.0.0.1:{port}",
                "fail_on": "unproven",
            },
        )
        assert "FAILED" == unproven["_status"]
        assert unproven["msg"].startswith("kmod-audit verify: undecided (exit 3): ssh could not")

    def test_usage_error_fails_with_the_message(self, tmp_path: Path) -> None:
        """Exit 2 fails the task and names what kmod-audit refused."""
        result = _module(tmp_path, {"command": "check", "profiles": ["no-such-profile"]})
        assert "FAILED" == result["_status"]
        assert 2 == result["exit_code"]
        assert result["msg"].startswith("kmod-audit check failed (exit 2): --profile: unknown")
        assert "no-such-profile" in result["msg"]

    def test_missing_kmod_audit(self, tmp_path: Path) -> None:
        """Without kmod-audit on the host the task fails and says how to install it."""
        result = _module(tmp_path, {"command": "check"}, PATH="/usr/bin:/bin")
        assert "FAILED" == result["_status"]
        assert result["msg"].startswith("kmod-audit is not installed on this host")
        assert "kmodaudit.kmod_audit.prove" in result["msg"]
        assert result["compliant"] is False

    def test_option_of_the_other_command(self, tmp_path: Path) -> None:
        """An option of verify given to check is refused before anything runs."""
        result = _module(tmp_path, {"command": "check", "no_load": True})
        assert "FAILED" == result["_status"]
        assert "option(s) no_load do not apply to command=check" in result["msg"]

    def test_check_mode_never_loads(self, tmp_path: Path) -> None:
        """In check mode verify runs with --no-load."""
        port = _closed_port()
        result = _module(
            tmp_path, {"command": "verify", "target": f"ssh://root@127.0.0.1:{port}"}, "--check"
        )
        assert "--no-load" in result["cmd"]
        assert (False, "undecided") == (result["changed"], result["verdict"])

    def test_checklist(self, tmp_path: Path) -> None:
        """With cklb, the STIG Viewer 3 checklist comes back as text that STIG Manager imports."""
        result = _module(tmp_path, {"command": "check", "sources": [str(PASS)], "cklb": True})
        assert (True, 0, 0) == (result["compliant"], result["exit_code"], result["cklb_exit"])
        assert KMOD_AUDIT == result["cmd"][0]  # found on PATH
        cklb = tmp_path / "host.cklb"
        cklb.write_text(result["cklb"])
        assert {"SV-268096r1039563_rule": "pass"} == review_results(consumer_import("cklb", cklb))


#: A fake kmod-audit whose answer changes from one call to the next: the first call says
#: compliant (exit 0, checklist not_a_finding), every later one not compliant (exit 1,
#: checklist open). It honours --format json|cklb and --cklb-output as kmod-audit does.
_FICKLE = """\
import json, pathlib, sys
argv = sys.argv[1:]
with open(CALLS, "a") as calls:
    calls.write(" ".join(argv) + "\\n")
first = len(pathlib.Path(CALLS).read_text().splitlines()) == 1
rule = {"rule_id_src": "SV-268096r1039563_rule", "status": "not_a_finding" if first else "open"}
checklist = json.dumps({"stigs": [{"rules": [rule]}]})
report = {"compliant": first, "verdict": "compliant" if first else "not-compliant"}
if "--cklb-output" in argv:
    pathlib.Path(argv[argv.index("--cklb-output") + 1]).write_text(checklist)
fmt = argv[argv.index("--format") + 1]
print(json.dumps(report) if fmt == "json" else checklist)
sys.exit(0 if first else 1)
"""


class TestOneRun:
    """With cklb the verdict and the checklist come from one run of kmod-audit."""

    def test_fickle_executable_is_called_once(self, tmp_path: Path) -> None:
        """A kmod-audit that would answer differently a second time is called once."""
        calls = tmp_path / "calls"
        fake = tmp_path / "kmod-audit"
        fake.write_text(f"#!{sys.executable}\nCALLS = {str(calls)!r}\n{_FICKLE}")
        fake.chmod(0o755)
        result = _module(
            tmp_path,
            {"command": "verify", "executable": str(fake), "cklb": True, "fail_on": "noncompliant"},
        )
        assert 1 == len(calls.read_text().splitlines()), calls.read_text()
        assert ("SUCCESS", True, 0, 0) == (
            result["_status"],
            result["compliant"],
            result["exit_code"],
            result["cklb_exit"],
        )
        rules = json.loads(result["cklb"])["stigs"][0]["rules"]
        assert ["not_a_finding"] == [rule["status"] for rule in rules]
        assert "--cklb-output" in result["cmd"]


class TestFleetPlaybookWithoutHosts:
    """prove-fleet.yml never calls a host it could not reach compliant."""

    def test_unreachable_hosts_could_not_prove(self, tmp_path: Path) -> None:
        """Unreachable hosts: "could not prove" in the table, the run fails, also with --limit."""
        ports = [_closed_port(), _closed_port()]
        inventory = tmp_path / "inventory.ini"
        inventory.write_text(
            "".join(
                f"gone{n} ansible_host=127.0.0.1 ansible_port={port} ansible_user=root\n"
                for n, port in enumerate(ports)
            )
        )
        for limit in ([], ["--limit", "gone1"]):
            reports = tmp_path / f"reports{len(limit)}"
            reports.mkdir()
            stale = reports / "gone1.verify.json"  # from an earlier, compliant run
            stale.write_text('{"compliant": true}')
            result = run(
                [
                    tool("ansible-playbook"),
                    "-i",
                    str(inventory),
                    *limit,
                    "-e",
                    f"kmod_audit_reports_dir={reports}",
                    str(PLAYBOOK),
                ],
                environment(tmp_path),
                cwd=tmp_path,
            )
            assert 2 == result.code, result.describe()
            assert not stale.exists()
            summary = (reports / "fleet-summary.txt").read_text()
            hosts = ["gone1"] if limit else ["gone0", "gone1"]
            rows = [line.split() for line in summary.splitlines()[2:-1]]
            assert [(host, "could", "not", "prove", "none", "none") for host in hosts] == [
                tuple(row[:6]) for row in rows
            ], summary
            assert all("unreachable:" in line for line in summary.splitlines()[2:-1])
            assert "Connection refused" in summary
            assert summary.splitlines()[-1] == (
                f"result: 0 compliant, 0 NOT compliant, {len(hosts)} could not prove "
                f"({len(hosts)} hosts): FLEET NOT PROVEN COMPLIANT"
            )
            assert f"{len(hosts)} of {len(hosts)} hosts are not proven compliant" in result.out


class TestRulesRoleCheckMode:
    """The rules role under --check --diff on this machine: it shows, and writes nothing."""

    def test_check_diff_shows_the_rules_and_writes_nothing(self, tmp_path: Path) -> None:
        """The diff holds the generated lines; the file is not written, augenrules not run."""
        if os.geteuid() != 0 or shutil.which("auditctl") is None:
            require_or_skip("the rules role reads `auditctl -s` (root, auditd installed)")
        rules_d = tmp_path / "rules.d"
        rules_d.mkdir()
        playbook = tmp_path / "rules.yml"
        playbook.write_text(
            "- name: Install kmod-audit's rules\n"
            "  hosts: localhost\n"
            "  gather_facts: false\n"
            "  roles:\n"
            "    - role: kmodaudit.kmod_audit.rules\n"
            f"      vars: {{rules_dir: {rules_d}}}\n"
        )
        result = run(
            [
                tool("ansible-playbook"),
                "--connection",
                "local",
                "--check",
                "--diff",
                "-e",
                '{"kmod_audit_profiles": ["cis"]}',
                str(playbook),
            ],
            environment(tmp_path),
            cwd=tmp_path,
        )
        assert 0 == result.code, result.describe()
        assert 1 == result.recap()["localhost"]["changed"], result.describe()
        generated = subprocess.run(
            [KMOD_AUDIT, "generate", "--profile", "cis", "--kmod-path", "/usr/bin/kmod"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f"+++ after: {rules_d}/50-kmod-audit.rules" in result.out
        for line in generated.splitlines():
            assert f"+{line}\n" in result.out
        assert [] == list(rules_d.iterdir())
        assert "RUNNING HANDLER [kmodaudit.kmod_audit.rules : Load the audit rules" in result.out
        handler = result.out.split("Load the audit rules into the kernel]", 1)[1]
        assert handler.lstrip("* \n").startswith("skipping: [localhost]"), result.describe()
