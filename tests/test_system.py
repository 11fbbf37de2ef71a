"""Reading defaults and the on-disk rules of a live system."""

from __future__ import annotations

from pathlib import Path

from kmod_audit.system import assemble_rules_d, default_uid_min, nixos_rules_file


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
