"""Reading defaults and the on-disk rules of a live system."""

from __future__ import annotations

import io
import os
import resource
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from _support import HostAudit, auditctl
from kmod_audit.augenrules import Augenrules, assemble_rules_d
from kmod_audit.cli import main
from kmod_audit.errors import ParseError
from kmod_audit.sources import discover_on_disk, start_loads
from kmod_audit.system import (
    MAX_RULES_BYTES,
    default_uid_min,
    nixos_rules_file,
    read_rules_text,
)


class TestAugenrules:
    """rules.d is assembled the way augenrules does it."""

    def test_order_and_controls(self, tmp_path: Path) -> None:
        """Natural file order; last -D/-b/-f first, rules, last -e at the end; comments go."""
        (tmp_path / "10-b.rules").write_text("-e 2\n-a always,exit -F arch=b64 -S open -k b\n")
        (tmp_path / "2-a.rules").write_text("# comment\n-D\n-b 1024\n-e 1\n-w /etc/x -p w\n")
        (tmp_path / "99-z.rules").write_text("-b 8192\n-f 1\n")
        (tmp_path / "ignored.conf").write_text("-e 0\n")
        text, origins = assemble_rules_d(str(tmp_path))
        assert (
            "-D\n-b 8192\n-f 1\n-w /etc/x -p w\n-a always,exit -F arch=b64 -S open -k b\n-e 2\n"
        ) == text
        assert [
            ("2-a.rules", 2),
            ("99-z.rules", 1),
            ("99-z.rules", 2),
            ("2-a.rules", 5),
            ("10-b.rules", 2),
            ("10-b.rules", 1),
        ] == [(Path(o.path).name, o.line) for o in origins]


class TestNixos:
    """The rules file audit-rules-nixos.service loads."""

    def test_exec_start(self, tmp_path: Path) -> None:
        """The path after -R in ExecStart is the loaded rules file."""
        unit = tmp_path / "audit-rules-nixos.service"
        unit.write_text(
            "[Service]\nType=oneshot\nRemainAfterExit=true\n"
            "ExecStart=/nix/store/aaa-audit-4.0.5-bin/bin/auditctl -R "
            "/nix/store/bbb-audit.rules/audit.rules\n"
            "ExecStopPost=/nix/store/aaa-audit-4.0.5-bin/bin/auditctl -D\n"
        )
        assert "/nix/store/bbb-audit.rules/audit.rules" == nixos_rules_file((str(unit),))

    def test_no_unit(self, tmp_path: Path) -> None:
        """No unit, no file."""
        assert nixos_rules_file((str(tmp_path / "missing.service"),)) is None


class TestLoginDefs:
    """UID_MIN comes from login.defs."""

    def test_reads_uid_min(self, tmp_path: Path) -> None:
        """The UID_MIN line sets the default; SYS_UID_MIN does not."""
        defs = tmp_path / "login.defs"
        defs.write_text("#UID_MIN 10\nSYS_UID_MIN 100\nUID_MIN\t\t\t 500\n")
        assert 500 == default_uid_min(str(defs))

    def test_default_when_missing(self, tmp_path: Path) -> None:
        """Without login.defs the default is 1000."""
        assert 1000 == default_uid_min(str(tmp_path / "none"))


STIG_RULES = (
    "-a always,exit -F arch=b64 -S init_module,finit_module,delete_module"
    " -F auid>=1000 -F auid!=unset -k modules\n"
    "-a always,exit -F arch=b32 -S init_module,finit_module,delete_module"
    " -F auid>=1000 -F auid!=unset -k modules\n"
)
NEVER_RULES = "-a never,exit -F arch=b64 -S all\n-a never,exit -F arch=b32 -S all\n"
DEBIAN = Augenrules(listing="ls", quoted_cat=False, strip_cr=False, awk_space=False, utf8=False)


def _check(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    return main(["check", "--profile", "nixos-stig", *argv], out=out), out.getvalue()


def _cli(*argv: str, stdin: int | None = None, env: dict[str, str] | None = None) -> Run:
    """Run the CLI in a child (stdin matters; a hang fails the test, it does not block CI)."""
    proc = subprocess.run(
        [sys.executable, "-m", "kmod_audit", *argv],
        stdin=stdin,
        # A child that reads without end dies of MemoryError instead of starving the machine.
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (2**31, 2**31)),
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


@attrs.frozen
class Run:
    """A finished CLI run."""

    code: int
    out: str
    err: str


class TestVerdictAsDebianAugenrules:
    """`check DIR` judges rules.d as Debian's augenrules (mawk) assembles it."""

    @pytest.fixture(autouse=True)
    def _debian(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(
            "kmod_audit.sources.augenrules_dialects",
            lambda *_a, **_k: ((DEBIAN,), "test: Debian augenrules, mawk"),
            raising=False,
        )

    @pytest.mark.parametrize(
        ("files", "expected"),
        [
            ({"30-local.rules": NEVER_RULES, "30-local-stig.rules": STIG_RULES}, 1),
            ({"10 never.rules": NEVER_RULES, "20-stig.rules": STIG_RULES}, 0),
            ({".10-never.rules": NEVER_RULES, "zz-stig.rules": STIG_RULES}, 0),
            ({"10-lock.rules": "  -e 2\n", "20-stig.rules": STIG_RULES}, 1),
            ({"1²2.rules": STIG_RULES}, 0),
        ],
        ids=["ls-v-order", "name-with-space", "dotfile", "indented-e-2", "unicode-digit"],
    )
    def test_verdict(self, tmp_path: Path, files: dict[str, str], expected: int) -> None:
        """The verdict is the one the rules augenrules really assembles deserve."""
        for name, text in files.items():
            (tmp_path / name).write_text(text)
        code, out = _check([str(tmp_path)])
        assert expected == code, out

    def test_split_name_is_reported(self, tmp_path: Path) -> None:
        """A rules file whose name the shell splits is named as not loaded."""
        (tmp_path / "10 never.rules").write_text(NEVER_RULES)
        (tmp_path / "20-stig.rules").write_text(STIG_RULES)
        _, out = _check([str(tmp_path)])
        assert "10 never.rules is not loaded" in out


class TestUnknownDialect:
    """When augenrules' dialect is unknown, the worst assembly is judged."""

    def test_indented_lock_is_worst(self, tmp_path: Path) -> None:
        """An indented `-e 2` locks the rules under mawk: no false COMPLIANT."""
        (tmp_path / "10-lock.rules").write_text("  -e 2\n")
        (tmp_path / "20-stig.rules").write_text(STIG_RULES)
        code, out = _check(["--offline", str(tmp_path)])
        assert 1 == code
        assert "judged as the worst" in out


class TestSpecialFiles:
    """Only regular files and directories are read, and only up to MAX_RULES_BYTES."""

    def test_fifo_source(self, tmp_path: Path) -> None:
        """A FIFO as SOURCE is refused at once (exit 2), naming it."""
        fifo = tmp_path / "rules.fifo"
        os.mkfifo(fifo)
        run = _cli("check", str(fifo))
        assert (2, True) == (run.code, f"{fifo}: is a FIFO" in run.err), run.err

    def test_fifo_in_rules_d(self, tmp_path: Path) -> None:
        """A FIFO named *.rules inside rules.d is refused, naming it."""
        (tmp_path / "20-stig.rules").write_text(STIG_RULES)
        os.mkfifo(tmp_path / "30-x.rules")
        run = _cli("check", str(tmp_path))
        assert (2, True) == (run.code, "30-x.rules: is a FIFO" in run.err), run.err

    def test_fifo_in_discovered_rules_d(self, tmp_path: Path) -> None:
        """With no SOURCE, a FIFO in the discovered rules.d is refused too."""
        (tmp_path / "20-stig.rules").write_text(STIG_RULES)
        os.mkfifo(tmp_path / "30-x.rules")
        code = (
            "import kmod_audit.system as s, kmod_audit.sources as d, sys\n"
            f"s.RULES_D = {str(tmp_path)!r}\n"
            "s.nixos_rules_file = lambda *a: None\n"
            "try:\n    d.discover_on_disk()\n"
            "except s.ParseError as e:\n    sys.exit(str(e))\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
        )
        assert "30-x.rules: is a FIFO" in proc.stderr

    def test_dev_zero(self) -> None:
        """A character device is refused, not read without end."""
        run = _cli("check", "/dev/zero")
        assert (2, True) == (run.code, "/dev/zero: is a character device" in run.err), run.err

    def test_too_big(self, tmp_path: Path) -> None:
        """A regular file above the limit is refused, naming the limit."""
        big = tmp_path / "big.rules"
        with big.open("wb") as f:
            f.truncate(MAX_RULES_BYTES + 1)
        with pytest.raises(ParseError, match="more than 64 MiB"):
            read_rules_text(str(big))

    def test_endless_stdin(self) -> None:
        """Stdin is read bounded too: `/dev/zero` on stdin is exit 2 naming the limit."""
        with open("/dev/zero", "rb") as zero:
            run = _cli("check", "-", stdin=zero.fileno())
        assert (2, True) == (run.code, "more than 64 MiB" in run.err), run.err


class TestOddInput:
    """Odd input gives a clear error or the right result, never an internal error."""

    def test_invalid_utf8_stdin_in_utf8_locale(self) -> None:
        """Invalid UTF-8 on stdin is read like a file's (strict UTF-8 stdio as in en_US.UTF-8)."""
        proc = subprocess.run(
            [sys.executable, "-m", "kmod_audit", "check", "-"],
            input=b"\xff\n",
            capture_output=True,
            env={**os.environ, "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8:strict"},
            timeout=120,
            check=False,
        )
        assert (1, b"") == (proc.returncode, proc.stderr)
        assert b"<stdin>:1" in proc.stdout

    def test_closed_stdin(self) -> None:
        """`check - <&-` says stdin is closed (exit 2)."""
        proc = subprocess.run(
            ["/bin/sh", "-c", 'exec "$0" -m kmod_audit check - <&-', sys.executable],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert (2, "kmod-audit: <stdin>: stdin is closed") == (
            proc.returncode,
            proc.stderr.split(";")[0],
        )

    def test_nixos_unit_unbalanced_quote(self, tmp_path: Path) -> None:
        """An ExecStart with an unbalanced quote is a ParseError naming the unit."""
        unit = tmp_path / "audit-rules-nixos.service"
        unit.write_text('[Service]\nExecStart=/nix/store/x/bin/auditctl -R "/nix/store/y.rules\n')
        with pytest.raises(ParseError, match="No closing quotation") as info:
            nixos_rules_file((str(unit),))
        assert str(unit) == info.value.path


DEBIAN_UNIT = Path("/lib/systemd/system/auditd.service")
DEBIAN_INIT = Path("/etc/init.d/auditd")
AUGENRULES_SCRIPT = Path("/sbin/augenrules")
# audit >= 4 (upstream init.d/audit-rules.service.in): auditd.service loads nothing itself.
AUDIT4_RULES_UNIT = (
    "[Unit]\nDescription=Load Audit Rules\n\n[Service]\nType=oneshot\n"
    "ExecStart=/sbin/augenrules --load\n\n[Install]\nWantedBy=multi-user.target\n"
)
AUDIT4_AUDITD_UNIT = (
    "[Unit]\nWants=audit-rules.service\n\n[Service]\nType=forking\nExecStart=/sbin/auditd\n"
)


def _root(
    tmp_path: Path,
    *,
    units: dict[str, str] | None = None,
    rules_d: dict[str, str] | None = None,
    systemd: bool = True,
) -> Path:
    """A scratch root: /etc/audit/audit.rules with the STIG rules, rules.d, units."""
    root = tmp_path / "root"
    audit = root / "etc/audit"
    (audit / "rules.d").mkdir(parents=True)
    (audit / "audit.rules").write_text(STIG_RULES)
    for name, text in (rules_d or {}).items():
        (audit / "rules.d" / name).write_text(text)
    for name, text in (units or {}).items():
        path = root / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if systemd:
        (root / "run/systemd/system").mkdir(parents=True)
    return root


def _debian_unit() -> str:
    if not DEBIAN_UNIT.exists():
        pytest.skip("needs Debian's auditd.service (apt-get install auditd)")
    return DEBIAN_UNIT.read_text()


# README, a backup and an upper-case name: rules.d exists but holds no *.rules file.
NOT_RULES = {"README": "-a never,exit -S all\n", "x.rules.bak": STIG_RULES, "X.RULES": STIG_RULES}


class TestNextStart:
    """The on-disk rules are what the next start of audit loads, read from its units."""

    def test_empty_rules_d_is_what_augenrules_writes(self, tmp_path: Path) -> None:
        """An empty rules.d gives no rules, as the real augenrules writes over audit.rules."""
        root = _root(
            tmp_path,
            units={"/lib/systemd/system/auditd.service": _debian_unit()},
            rules_d=NOT_RULES,
        )
        if not AUGENRULES_SCRIPT.exists():
            pytest.skip("needs the real augenrules (apt-get install auditd)")
        script = AUGENRULES_SCRIPT.read_text()
        scratch = tmp_path / "scratch"
        scratch.mkdir()
        destination = root / "etc/audit/audit.rules"
        for old, new in (
            ("DestinationFile=/etc/audit/audit.rules", f"DestinationFile={destination}"),
            ("SourceRulesDir=/etc/audit/rules.d", f"SourceRulesDir={root}/etc/audit/rules.d"),
            ("TmpRules=$(mktemp /tmp/", f"TmpRules=$(mktemp {scratch}/"),
        ):
            assert old in script
            script = script.replace(old, new)
        on_disk = discover_on_disk(str(root))
        assert on_disk is not None
        # No --load: the script only rewrites the scratch audit.rules.
        subprocess.run(
            ["/bin/sh", "-c", script],
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
            capture_output=True,
            check=True,
            timeout=60,
        )
        real = destination.read_bytes().split(b"\n", 1)[1]
        assert (real, "") == (on_disk.assemblies[0].file_text.split(b"\n", 1)[1], on_disk.text)

    def test_check_discovery_empty_rules_d(self, tmp_path: Path, host_audit: HostAudit) -> None:
        """`check` with no SOURCE fails an empty rules.d beside a STIG audit.rules (replaced)."""
        root = _root(
            tmp_path,
            units={"/lib/systemd/system/auditd.service": _debian_unit()},
            rules_d=NOT_RULES,
        )
        assert 0 == host_audit.load(STIG_RULES).returncode
        auditctl("-e", "1")  # the running rules are judged too; restored by host_audit
        code = (
            "import sys, kmod_audit.system as s\n"
            f"s.RULES_D = {str(root / 'etc/audit/rules.d')!r}\n"
            f"s.AUDIT_RULES = {str(root / 'etc/audit/audit.rules')!r}\n"
            f"s.UNIT_DIRS = ({str(root / 'lib/systemd/system')!r},)\n"
            "s.INIT_SCRIPTS = ()\n"
            "s.nixos_rules_file = lambda *a: None\n"
            "from kmod_audit.cli import main\n"
            "sys.exit(main(['check', '--profile', 'nixos-stig']))\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
        )
        assert (1, True) == (proc.returncode, "holds no *.rules file" in proc.stdout), proc.stdout

    def test_auditctl_unit_judges_audit_rules(self, tmp_path: Path) -> None:
        """A drop-in that loads audit.rules with auditctl instead makes audit.rules the rules."""
        override = (
            "[Service]\nExecStartPost=\nExecStartPost=-/sbin/auditctl -R /etc/audit/audit.rules\n"
        )
        root = _root(
            tmp_path,
            units={
                "/lib/systemd/system/auditd.service": _debian_unit(),
                "/etc/systemd/system/auditd.service.d/rules.conf": override,
            },
            rules_d=NOT_RULES,
        )
        on_disk = discover_on_disk(str(root))
        assert on_disk is not None
        assert (str(root / "etc/audit/audit.rules"), STIG_RULES) == (on_disk.path, on_disk.text)

    def test_unit_that_loads_nothing(self, tmp_path: Path) -> None:
        """A drop-in that removes `augenrules --load` leaves the next start with no rules."""
        root = _root(
            tmp_path,
            units={
                "/lib/systemd/system/auditd.service": _debian_unit(),
                "/etc/systemd/system/auditd.service.d/none.conf": "[Service]\nExecStartPost=\n",
            },
            rules_d={"10-stig.rules": STIG_RULES},
        )
        on_disk = discover_on_disk(str(root))
        assert on_disk is not None
        assert ("", True) == (on_disk.text, "nothing loads rules" in on_disk.label)

    def test_audit4_rules_service(self, tmp_path: Path) -> None:
        """Audit >= 4: audit-rules.service runs `augenrules --load`, so rules.d is judged."""
        root = _root(
            tmp_path,
            units={
                "/usr/lib/systemd/system/auditd.service": AUDIT4_AUDITD_UNIT,
                "/usr/lib/systemd/system/audit-rules.service": AUDIT4_RULES_UNIT,
            },
            rules_d={"10-never.rules": NEVER_RULES},
        )
        on_disk = discover_on_disk(str(root))
        assert on_disk is not None
        assert (NEVER_RULES, ()) == (on_disk.text, on_disk.alternatives)

    @pytest.mark.parametrize(
        ("setting", "expected"), [("no", "audit.rules"), ("yes", "rules.d")], ids=["no", "yes"]
    )
    def test_init_script_use_augenrules(self, tmp_path: Path, setting: str, expected: str) -> None:
        """Without systemd, Debian's init script runs augenrules unless USE_AUGENRULES=no."""
        if not DEBIAN_INIT.exists():
            pytest.skip("needs Debian's /etc/init.d/auditd (apt-get install auditd)")
        root = _root(
            tmp_path,
            units={
                "/etc/init.d/auditd": DEBIAN_INIT.read_text(),
                "/etc/default/auditd": f'USE_AUGENRULES="{setting}"\n',
            },
            rules_d={"10-never.rules": NEVER_RULES},
            systemd=False,
        )
        on_disk = discover_on_disk(str(root))
        assert on_disk is not None
        assert (expected, ()) == (os.path.basename(on_disk.path), on_disk.alternatives)

    def test_not_live_judges_every_possibility(self, tmp_path: Path) -> None:
        """Not this running machine (--offline): rules.d and audit.rules are both judged."""
        root = _root(
            tmp_path,
            units={"/lib/systemd/system/auditd.service": _debian_unit()},
            rules_d={"10-never.rules": NEVER_RULES},
        )
        on_disk = discover_on_disk(str(root), live=False)
        assert on_disk is not None
        assert ["rules.d", "audit.rules"] == [
            os.path.basename(one.path) for one in on_disk.alternatives
        ]

    def test_locale_of_the_manager(self, tmp_path: Path) -> None:
        """The manager's DefaultEnvironment= sets the locale; with no source, it is unknown."""
        units = {"/lib/systemd/system/auditd.service": _debian_unit()}
        unknown = start_loads(str(_root(tmp_path / "a", units=units)))
        units["/etc/systemd/system.conf.d/locale.conf"] = (
            '[Manager]\nDefaultEnvironment="LANG=en_US.UTF-8" PATH=/bin\n'
        )
        managed = start_loads(str(_root(tmp_path / "b", units=units)))
        assert [None, (("LANG", "en_US.UTF-8"),)] == [unknown.ties.env, managed.ties.env]

    def test_locale_from_unit_environment(self, tmp_path: Path) -> None:
        """Augenrules' locale is the system locale, overridden by the unit's Environment=."""
        units = {
            "/lib/systemd/system/auditd.service": _debian_unit(),
            "/etc/default/locale": "LANG=C.UTF-8\n",
        }
        plain = start_loads(str(_root(tmp_path / "a", units=units)))
        units["/etc/systemd/system/auditd.service.d/locale.conf"] = (
            '[Service]\nEnvironment="LANG=en_US.UTF-8" LOCPATH=/opt/locales\n'
        )
        overridden = start_loads(str(_root(tmp_path / "b", units=units)))
        assert [(("LANG", "C.UTF-8"),), (("LANG", "en_US.UTF-8"), ("LOCPATH", "/opt/locales"))] == [
            plain.ties.env,
            overridden.ties.env,
        ]
