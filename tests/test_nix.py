"""The Nix side, checked without a Nix store.

Every .nix file parses and is formatted as nixfmt leaves it, the pure renderer
(nixos-modules/render.nix) gives byte for byte what `kmod-audit generate` prints, and the
module's checks (nixos-modules/guards.nix) hold for both nixpkgs layouts.

Uses Debian's nix-bin (`nix-instantiate --parse` and `--eval --strict`), which `tools/setup`
installs. As root the x86_64 renderings are also loaded into the host kernel. With
KMOD_AUDIT_NIXPKGS_LIB (a nixpkgs lib/ directory) the whole module is evaluated too.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest

from _support import HostAudit, RunCli, promtool, require_or_skip
from kmod_audit.generate import KEY_PATTERN

REPO = Path(__file__).resolve().parents[1]
NIX_FILES = sorted(
    p for p in REPO.rglob("*.nix") if ".venv" not in p.parts and ".git" not in p.parts
)

PROFILE_SETS = [
    ["nixos-stig"],
    ["al2023-stig"],
    ["cis"],
    ["tenable"],
    ["all"],
    ["nixos-stig", "cis"],
    ["tenable", "al2023-stig"],
]
ARCHES = ["x86_64", "aarch64"]
OPTION_SETS: list[dict[str, object]] = [
    {},
    {"key": "kernel_modules", "uidMin": 500},
    {"kmodPath": "/nix/store/00000000000000000000000000000000-kmod-31/bin/kmod", "key": "m.1"},
]
CASES = list(itertools.product(range(len(PROFILE_SETS)), ARCHES, range(len(OPTION_SETS))))


def _nix_instantiate() -> str:
    found = shutil.which("nix-instantiate")
    if found is None:
        if os.environ.get("KMOD_AUDIT_REQUIRE_ROOT") == "1":
            pytest.fail("nix-instantiate is missing (apt-get install nix-bin; tools/setup does)")
        pytest.skip("nix-instantiate is missing (apt-get install nix-bin)")
    return found


# Debian's nix-bin is configured with `build-users-group = nixbld`, and a machine without
# that group (nix-bin installed without recommends, no nix-daemon) makes every command
# print "warning: the group 'nixbld' specified in 'build-users-group' does not exist".
# Nothing here builds, so no build users are needed: an empty group switches them off and
# with it that warning, and an empty stderr still means Nix had nothing to say about the
# file. NIX_CONFIG is read before the command line (`--option` comes too late for it).
NIX_ENV_CONFIG = "build-users-group ="


def _nix_env() -> dict[str, str]:
    env = dict(os.environ)
    env["NIX_CONFIG"] = "\n".join(filter(None, [env.get("NIX_CONFIG"), NIX_ENV_CONFIG]))
    return env


def _nix_clean(*args: str) -> str:
    """Run `nix-instantiate ARGS...`; fail unless it exits 0 with an empty stderr.

    Anything Nix prints on stderr (a warning, a trace) fails the test: returns stdout.
    """
    proc = subprocess.run(
        [_nix_instantiate(), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=_nix_env(),
    )
    if (proc.returncode, proc.stderr) != (0, ""):
        pytest.fail(f"nix-instantiate {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc.stdout


def _nix_value(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[ " + " ".join(_nix_value(v) for v in value) + " ]"
    msg = f"no Nix form for {value!r}"
    raise TypeError(msg)


def _arguments(profiles: list[str], arch: str, options: dict[str, object]) -> str:
    pairs = {"profiles": profiles, "arch": arch, **options}
    return "{ " + " ".join(f"{k} = {_nix_value(v)};" for k, v in pairs.items()) + " }"


@pytest.fixture(scope="module")
def rendered() -> list[str]:
    """Every case rendered by render.nix in one evaluation."""
    calls = " ".join(
        f"(r.render {_arguments(PROFILE_SETS[p], arch, OPTION_SETS[o])}).text"
        for p, arch, o in CASES
    )
    expression = f"let r = import {REPO / 'nixos-modules' / 'render.nix'}; in [ {calls} ]"
    texts = json.loads(_nix_clean("--eval", "--strict", "--json", "-E", expression))
    assert len(CASES) == len(texts)
    return list(texts)


def _generate_args(profiles: list[str], arch: str, options: dict[str, object]) -> list[str]:
    args = ["generate", "--arch", arch]
    for profile in profiles:
        args += ["--profile", profile]
    args += ["--key", str(options.get("key", "module_chng"))]
    args += ["--uid-min", str(options.get("uidMin", 1000))]
    args += ["--kmod-path", str(options.get("kmodPath", "/usr/bin/kmod"))]
    return args


def _case_id(case: tuple[int, str, int]) -> str:
    p, arch, o = case
    return f"{'+'.join(PROFILE_SETS[p])}-{arch}-opts{o}"


class TestParse:
    """Every .nix file in the repository parses."""

    @pytest.mark.parametrize("path", NIX_FILES, ids=lambda p: str(p.relative_to(REPO)))
    def test_parses(self, path: Path) -> None:
        """`nix-instantiate --parse` accepts the file and says nothing on stderr."""
        assert _nix_clean("--parse", str(path))

    def test_a_warning_about_the_file_fails(self, tmp_path: Path) -> None:
        """The check keeps its power: what Nix prints about a file still fails it.

        Nix 2.8's parser has no warnings, so evaluate a file that prints one the way
        nixpkgs' `lib.warn` does (a trace); the nixbld setting must not hide it.
        """
        path = tmp_path / "warns.nix"
        path.write_text('builtins.trace "warning: deprecated option" 1\n')
        with pytest.raises(pytest.fail.Exception, match="warning: deprecated option"):
            _nix_clean("--eval", str(path))

    def test_expected_files_exist(self) -> None:
        """The module, its renderer and its entry point are there."""
        names = {str(p.relative_to(REPO)) for p in NIX_FILES}
        assert {
            "nixos-modules/default.nix",
            "nixos-modules/kmod-audit.nix",
            "nixos-modules/render.nix",
            "nixos-modules/monitor.nix",
            "nixos-modules/monitor-unit.nix",
            "vm-tests/monitor.nix",
        } <= names


# nixfmt 1.1.0 built for the development machines (../shared/tools/README.md); versions
# 1.0.1 to 1.4.0, what nixpkgs' nixfmt-tree runs (`nix fmt`, the flake's treefmt check),
# format this project's files identically.
SHARED_NIXFMT = REPO.parent / "shared" / "tools" / "nixfmt"


def _nixfmt() -> str:
    """../shared/tools/nixfmt, else `nixfmt` on PATH; skip (or fail in CI) without one."""
    if SHARED_NIXFMT.exists():
        return str(SHARED_NIXFMT)
    found = shutil.which("nixfmt")
    if found is not None:
        return found
    if SHARED_NIXFMT.parent.is_dir():
        # The shared tools are beside the clone (as in CI), so nixfmt should be too.
        require_or_skip(f"{SHARED_NIXFMT} is missing and no nixfmt is on PATH")
    pytest.skip(f"no nixfmt: neither {SHARED_NIXFMT} nor `nixfmt` on PATH (nix fmt has it)")


def _tracked_nix_files() -> list[str]:
    """The .nix files git tracks (relative paths), or every .nix file outside a checkout."""
    git = shutil.which("git")
    if git is not None and (REPO / ".git").exists():
        proc = subprocess.run(
            [git, "ls-files", "-z", "--", "*.nix"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return sorted(proc.stdout.split("\0")[:-1])
    return [str(p.relative_to(REPO)) for p in NIX_FILES]


class TestFormat:
    """Every tracked .nix file is formatted as nixfmt (and so `nix fmt`) leaves it."""

    def test_nixfmt_check(self) -> None:
        """`nixfmt --check` passes on every tracked .nix file."""
        nixfmt = _nixfmt()
        version = subprocess.run(
            [nixfmt, "--version"], capture_output=True, text=True, check=False, timeout=60
        )
        assert 0 == version.returncode, f"{nixfmt} --version: {version.stderr}"
        if not re.fullmatch(r"nixfmt 1\.\d+\.\d+\S*\n", version.stdout):
            pytest.skip(f"{nixfmt} is {version.stdout.strip()!r}, not the RFC 166 nixfmt 1.x")
        files = _tracked_nix_files()
        assert "nixos-modules/render.nix" in files
        proc = subprocess.run(
            [nixfmt, "--check", *files],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        output = proc.stdout + proc.stderr
        assert (0, "") == (proc.returncode, output), f"{output}format with `{nixfmt} FILE...`"


class TestRenderer:
    """render.nix and `kmod-audit generate` agree byte for byte."""

    @pytest.mark.parametrize("case", CASES, ids=_case_id)
    def test_byte_identical_to_generate(
        self, rendered: list[str], run_cli: RunCli, case: tuple[int, str, int]
    ) -> None:
        """The Nix rendering equals the CLI's output for the same profiles, arch and options."""
        p, arch, o = case
        result = run_cli(*_generate_args(PROFILE_SETS[p], arch, OPTION_SETS[o]))
        assert 0 == result.code, result.err
        assert result.out == rendered[CASES.index(case)]

    def test_exports(self) -> None:
        """render.nix exports what the module and the flake use, nothing unused."""
        expression = f"builtins.attrNames (import {REPO / 'nixos-modules' / 'render.nix'})"
        names = json.loads(_nix_clean("--eval", "--strict", "--json", "-E", expression))
        assert ["machines", "profileIds", "render", "wantsAbi"] == names

    @pytest.mark.parametrize("case", [c for c in CASES if c[1] == "aarch64"], ids=_case_id)
    def test_aarch64_has_no_create_or_query_module(
        self, rendered: list[str], case: tuple[int, str, int]
    ) -> None:
        """create_module and query_module do not exist on aarch64 and never appear."""
        text = rendered[CASES.index(case)]
        assert text
        assert "create_module" not in text
        assert "query_module" not in text

    @pytest.mark.root
    @pytest.mark.parametrize(
        # Not the option set naming a /nix/store kmod: that directory does not exist on this
        # host, and the kernel refuses a watch whose parent is missing (as it should).
        "case",
        [c for c in CASES if c[1] == "x86_64" and "kmodPath" not in OPTION_SETS[c[2]]],
        ids=_case_id,
    )
    def test_x86_64_rendering_loads_into_the_kernel(
        self, rendered: list[str], host_audit: HostAudit, case: tuple[int, str, int]
    ) -> None:
        """The real `auditctl -R` loads every x86_64 rendering without an error."""
        text = rendered[CASES.index(case)]
        loaded = host_audit.load(text)
        assert (0, "") == (loaded.returncode, loaded.stderr)
        assert len(text.splitlines()) == len(host_audit.listing().splitlines())


GUARDS = REPO / "nixos-modules" / "guards.nix"
# How the lock-mode assertion's message opens: the option path, then the nixpkgs needed.
LOCK_MESSAGE = (
    'security.kernelModuleAudit.enable with security.audit.enable = "lock" needs nixpkgs\n'
    "from NixOS 25.11 or newer"
)
# A stand-in ExecStart, as nixpkgs' security.audit module defines for its rules unit.
EXEC_START = "/nix/store/00000000000000000000000000000000-audit/bin/auditctl -R rules"
# config.systemd.services as NixOS evaluates it in lock mode: nixpkgs >= 25.11 defines
# audit-rules-nixos; older nixpkgs defines audit.service, and our lock override alone
# leaves an audit-rules-nixos without ExecStart (its serviceConfig defaults to {}).
SERVICES = {
    "nixpkgs-25.11": {
        "audit-rules-nixos": {"restartIfChanged": False, "serviceConfig": {"ExecStart": EXEC_START}}
    },
    "nixpkgs-25.05": {
        "audit": {"serviceConfig": {"ExecStart": EXEC_START}},
        "audit-rules-nixos": {"restartIfChanged": False, "serviceConfig": {}},
    },
    "no-serviceConfig": {"audit-rules-nixos": {"restartIfChanged": False}},
    "no-units": {},
}


def _nix_json(value: object) -> str:
    """`value` as a Nix expression (through builtins.fromJSON)."""
    return f"(builtins.fromJSON {json.dumps(json.dumps(value))})"


class TestGuards:
    """nixos-modules/guards.nix: the module's checks, with stand-ins for NixOS (no nixpkgs)."""

    @pytest.mark.parametrize(
        ("layout", "holds"),
        [
            ("nixpkgs-25.11", True),
            ("nixpkgs-25.05", False),
            ("no-serviceConfig", False),
            ("no-units", False),
        ],
    )
    def test_lock_assertion(self, layout: str, holds: bool) -> None:
        """Lock mode needs nixpkgs' audit-rules-nixos with an ExecStart, not only our override."""
        expression = f"(import {GUARDS}).lockAssertion {_nix_json(SERVICES[layout])}"
        result = json.loads(_nix_clean("--eval", "--strict", "--json", "-E", expression))
        assert holds == result["assertion"]
        assert result["message"].startswith(LOCK_MESSAGE)
        assert "systemd.services.audit-rules-nixos" in result["message"]

    def test_lock_warning_says_leaving_needs_a_reboot(self) -> None:
        """The lock-mode warning says that leaving lock mode needs a reboot, and why."""
        warning = json.loads(_nix_clean("--eval", "--json", "-E", f"(import {GUARDS}).lockWarning"))
        text = " ".join(warning.split())
        assert "Leaving lock mode needs a reboot too" in text
        assert "stop commands (auditctl -e 0, auditctl -D) fail" in text

    @pytest.mark.parametrize(("enabled", "warns"), [("2", True), ("1", False), ("0", False)])
    def test_unlock_check(self, tmp_path: Path, enabled: str, warns: bool) -> None:
        """The activation snippet warns exactly when the running kernel is still locked."""
        auditctl = tmp_path / "auditctl"
        auditctl.write_text(
            f"#!/bin/sh\n[ \"$1\" = -s ] && printf 'enabled {enabled}\\nfailure 1\\n'\n"
        )
        auditctl.chmod(0o755)
        script = json.loads(
            _nix_clean(
                "--eval",
                "--json",
                "-E",
                f"(import {GUARDS}).unlockCheck {json.dumps(str(auditctl))}",
            )
        )
        proc = subprocess.run(
            ["bash", "-euc", script], capture_output=True, text=True, check=False, timeout=60
        )
        assert 0 == proc.returncode, proc.stderr
        assert "" == proc.stdout
        if warns:
            assert proc.stderr.startswith(
                "warning: security.kernelModuleAudit: the kernel audit rules are still locked"
            )
            assert "Reboot to apply" in proc.stderr
        else:
            assert "" == proc.stderr

    def test_unlock_check_without_audit(self, tmp_path: Path) -> None:
        """A failing auditctl (a container, no audit in the kernel) prints nothing."""
        script = json.loads(
            _nix_clean(
                "--eval",
                "--json",
                "-E",
                f"(import {GUARDS}).unlockCheck {json.dumps(str(tmp_path / 'missing'))}",
            )
        )
        proc = subprocess.run(
            ["bash", "-euc", script], capture_output=True, text=True, check=False, timeout=60
        )
        assert (0, "", "") == (proc.returncode, proc.stdout, proc.stderr)


MONITOR_UNIT = REPO / "nixos-modules" / "monitor-unit.nix"
TEXTFILE_DIR = "/var/lib/prometheus-node-exporter-text-files"
SETTINGS = {
    "profiles": ["nixos-stig", "cis"],
    "key": "module_chng",
    "uidMin": 1000,
    "kmodPath": "/nix/store/00000000000000000000000000000000-kmod-31/bin/kmod",
}
# The argv of `kmod-audit check` and `verify` for SETTINGS, one string each.
JUDGED = (
    "--profile=nixos-stig --profile=cis --key=module_chng --uid-min=1000 "
    f"--kmod-path={SETTINGS['kmodPath']}"
)
LOCK_METRICS = (
    "# HELP kmod_audit_lock_expected 1 when the audit rules must be locked "
    "(auditctl -s: enabled 2).\n"
    "# TYPE kmod_audit_lock_expected gauge\n"
    "kmod_audit_lock_expected 1\n"
)


def _monitor(expression: str) -> Any:
    """`expression` evaluated with `m` bound to nixos-modules/monitor-unit.nix."""
    out = _nix_clean(
        "--eval", "--strict", "--json", "-E", f"let m = import {MONITOR_UNIT}; in {expression}"
    )
    return json.loads(out)


def _node(**node: object) -> str:
    """config.services.prometheus.exporters.node as a Nix value."""
    return _nix_json({"enable": True, "enabledCollectors": [], "disabledCollectors": [], **node})


@attrs.frozen
class ScriptRun:
    """One run of the unit's script with a scripted kmod-audit."""

    status: int
    argv: list[str]
    stderr: str


class TestMonitorUnit:
    """nixos-modules/monitor-unit.nix: the monitor's unit, without nixpkgs."""

    FLAG = "--collector.textfile.directory"

    @pytest.mark.parametrize(
        ("node", "expected"),
        [
            (
                {"enabledCollectors": ["textfile"], "extraFlags": [f"{FLAG}={TEXTFILE_DIR}"]},
                TEXTFILE_DIR,
            ),
            # node_exporter enables the textfile collector by default.
            ({"extraFlags": [f"{FLAG}={TEXTFILE_DIR}"]}, TEXTFILE_DIR),
            ({"extraFlags": [FLAG, TEXTFILE_DIR]}, TEXTFILE_DIR),
            ({"extraFlags": [f"{FLAG} {TEXTFILE_DIR}"]}, TEXTFILE_DIR),
            (
                {"extraFlags": [f"{FLAG}=/var/lib/a", "--log.level=warn", f"{FLAG}=/var/lib/b"]},
                "/var/lib/b",
            ),
            ({"enable": False, "extraFlags": [f"{FLAG}={TEXTFILE_DIR}"]}, None),
            ({"enabledCollectors": ["textfile"]}, None),
            ({"disabledCollectors": ["textfile"], "extraFlags": [f"{FLAG}={TEXTFILE_DIR}"]}, None),
            ({"extraFlags": ["--no-collector.textfile", f"{FLAG}={TEXTFILE_DIR}"]}, None),
            ({"extraFlags": ["--collector.disable-defaults", f"{FLAG}={TEXTFILE_DIR}"]}, None),
            (
                {
                    "enabledCollectors": ["textfile"],
                    "extraFlags": ["--collector.disable-defaults", f"{FLAG}={TEXTFILE_DIR}"],
                },
                TEXTFILE_DIR,
            ),
        ],
        ids=[
            "enabled-collector",
            "default-on-collector",
            "two-elements",
            "one-element-with-space",
            "last-wins",
            "exporter-off",
            "no-directory-flag",
            "collector-disabled",
            "no-collector-flag",
            "disable-defaults",
            "disable-defaults-and-enabled",
        ],
    )
    def test_textfile_directory(self, node: dict[str, object], expected: str | None) -> None:
        """The default is node_exporter's textfile directory when its collector reads one."""
        assert expected == _monitor(f"m.textfileDirectory {_node(**node)}")

    def _script(self, *, directory: str | None, verify: bool, locked: bool) -> str:
        arguments = {
            "kmodAudit": "KMOD_AUDIT",
            "settings": SETTINGS,
            "directory": directory,
            "verify": verify,
            "locked": locked,
        }
        script = _monitor(f"m.script {_nix_json(arguments)}")
        assert isinstance(script, str)
        return script

    def _run(self, tmp_path: Path, script: str, check: int, verify: int) -> ScriptRun:
        """Run `script` as NixOS runs a unit's script (`sh -e`), kmod-audit scripted."""
        log = tmp_path / "argv"
        fake = tmp_path / "kmod-audit"
        fake.write_text(
            "#!/bin/sh\n"
            'printf \'%s\\n\' "$*" >> "$ARGV_LOG"\n'
            'case "$1" in check) exit "$CHECK_STATUS";; verify) exit "$VERIFY_STATUS";; esac\n'
            "exit 99\n"
        )
        fake.chmod(0o755)
        env = {
            **os.environ,
            "ARGV_LOG": str(log),
            "CHECK_STATUS": str(check),
            "VERIFY_STATUS": str(verify),
        }
        proc = subprocess.run(
            ["bash", "-ec", script.replace("'KMOD_AUDIT'", shlex.quote(str(fake)))],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env=env,
        )
        argv = log.read_text().splitlines() if log.exists() else []
        return ScriptRun(proc.returncode, argv, proc.stderr)

    def test_check_only(self, tmp_path: Path) -> None:
        """Without verify: one `check` (running and on-disk rules), the settings, --metrics."""
        script = self._script(directory=TEXTFILE_DIR, verify=False, locked=False)
        run = self._run(tmp_path, script.replace(TEXTFILE_DIR, str(tmp_path)), 0, 0)
        assert (0, "") == (run.status, run.stderr)
        assert [f"check {JUDGED} --metrics={tmp_path}/kmod-audit-check.prom"] == run.argv

    @pytest.mark.parametrize(
        ("check", "verify", "status"),
        [(0, 0, 0), (1, 0, 1), (0, 1, 1), (0, 3, 3), (3, 1, 3), (2, 1, 2), (1, 3, 1)],
    )
    def test_check_and_verify(self, tmp_path: Path, check: int, verify: int, status: int) -> None:
        """Both commands always run (each writes its metrics); a failure fails the unit.

        The unit exits with check's status when it is not 0, else with verify's.
        """
        script = self._script(directory=TEXTFILE_DIR, verify=True, locked=False)
        run = self._run(tmp_path, script.replace(TEXTFILE_DIR, str(tmp_path)), check, verify)
        assert status == run.status, run.stderr
        assert [
            f"check {JUDGED} --metrics={tmp_path}/kmod-audit-check.prom",
            f"verify --target=local --no-load {JUDGED} --metrics={tmp_path}/kmod-audit-verify.prom",
        ] == run.argv

    def test_without_a_directory_no_metrics(self, tmp_path: Path) -> None:
        """Without a textfile directory the commands run without --metrics; no file is touched."""
        script = self._script(directory=None, verify=True, locked=True)
        run = self._run(tmp_path, script, 1, 0)
        assert 1 == run.status
        assert [
            f"check {JUDGED}",
            f"verify --target=local --no-load {JUDGED}",
        ] == run.argv
        assert "kmod-audit-lock.prom" not in script

    def test_lock_file(self, tmp_path: Path) -> None:
        """In lock mode the script writes kmod-audit-lock.prom, which promtool accepts."""
        script = self._script(directory=str(tmp_path), verify=False, locked=True)
        run = self._run(tmp_path, script, 1, 0)
        assert 1 == run.status
        lock = tmp_path / "kmod-audit-lock.prom"
        assert LOCK_METRICS == lock.read_text()
        assert ["argv", "kmod-audit", "kmod-audit-lock.prom"] == sorted(
            p.name for p in tmp_path.iterdir()
        )
        # The real consumer's parser: the exposition format and its lint.
        lint = subprocess.run(
            [promtool(), "check", "metrics"],
            input=lock.read_text(),
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert (0, "", "") == (lint.returncode, lint.stdout, lint.stderr)

    def test_unlocked_removes_a_stale_lock_file(self, tmp_path: Path) -> None:
        """Without lock mode, a lock file left by an earlier "lock" generation goes."""
        (tmp_path / "kmod-audit-lock.prom").write_text(LOCK_METRICS)
        script = self._script(directory=str(tmp_path), verify=False, locked=False)
        run = self._run(tmp_path, script, 0, 0)
        assert 0 == run.status
        assert not (tmp_path / "kmod-audit-lock.prom").exists()

    def test_without_verify_removes_a_stale_verify_file(self, tmp_path: Path) -> None:
        """Without verify, the verify metrics of an earlier generation go (else: stale forever)."""
        stale = tmp_path / "kmod-audit-verify.prom"
        stale.write_text('kmod_audit_last_run_timestamp_seconds{command="verify"} 1\n')
        script = self._script(directory=str(tmp_path), verify=False, locked=False)
        run = self._run(tmp_path, script, 0, 0)
        assert (0, "") == (run.status, run.stderr)
        assert not stale.exists()
        assert [f"check {JUDGED} --metrics={tmp_path}/kmod-audit-check.prom"] == run.argv

    @pytest.mark.parametrize("verify", [False, True])
    def test_service_config(self, verify: bool) -> None:
        """A hardened root oneshot that may write only the textfile directory.

        CAP_SYS_MODULE is never in the bounding set. With verify, the seccomp-based
        settings that would hide its module syscalls (and b32 calls) from audit are off.
        """
        arguments = _nix_json({"directory": TEXTFILE_DIR, "verify": verify})
        config = _monitor(f"m.serviceConfig {arguments}")
        assert "oneshot" == config["Type"]
        assert "root" == config["User"]
        assert [TEXTFILE_DIR] == config["ReadWritePaths"]
        assert "strict" == config["ProtectSystem"]
        assert config["NoNewPrivileges"] is True
        assert config["PrivateTmp"] is True
        assert "0022" == config["UMask"]
        expected_caps = ["CAP_AUDIT_CONTROL"]
        if verify:
            expected_caps += ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_SETGID", "CAP_SETUID"]
        assert expected_caps == config["CapabilityBoundingSet"]
        assert ["AF_UNIX", "AF_NETLINK"] == config["RestrictAddressFamilies"]
        assert config["ProtectKernelLogs"] is True
        seccomp = {"ProtectKernelModules", "SystemCallArchitectures"}
        assert (set() if verify else seccomp) == seccomp & set(config)

    @pytest.mark.parametrize("verify", [False, True])
    def test_systemd_accepts_the_unit(self, tmp_path: Path, verify: bool) -> None:
        """`systemd-analyze verify` accepts the service and timer as NixOS renders them.

        Rendered like nixpkgs' systemd-lib (a list gives one `Key=value` line per item,
        booleans are true/false), with the script as ExecStart: a misspelt or misplaced
        setting would be reported ("Unknown key ...").
        """
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            require_or_skip("systemd-analyze is missing (apt-get install systemd)")
        assert analyze is not None
        directory = tmp_path / "textfiles"
        directory.mkdir()
        arguments = {
            "kmodAudit": "/usr/bin/true",
            "settings": SETTINGS,
            "directory": str(directory),
            "verify": verify,
            "locked": True,
        }
        unit = _nix_json({"directory": str(directory), "verify": verify})
        units = _monitor(
            f'{{ service = m.serviceConfig {unit}; timer = m.timerConfig "hourly";'
            f" script = m.script {_nix_json(arguments)}; }}"
        )
        script = tmp_path / "kmod-audit-monitor-start"
        script.write_text(units["script"])

        def section(settings: dict[str, object]) -> str:
            lines = []
            for key, value in settings.items():
                for item in value if isinstance(value, list) else [value]:
                    text = (
                        {True: "true", False: "false"}.get(item, item)
                        if isinstance(item, bool)
                        else item
                    )
                    lines.append(f"{key}={text}\n")
            return "".join(lines)

        service = tmp_path / "kmod-audit-monitor.service"
        service.write_text(
            "[Unit]\nDescription=kmod-audit monitor\nAfter=audit-rules-nixos.service\n\n"
            f"[Service]\nExecStart=/bin/sh -e {script}\n{section(units['service'])}\n"
            "[Install]\nWantedBy=audit-rules-nixos.service\n"
        )
        timer = tmp_path / "kmod-audit-monitor.timer"
        timer.write_text(
            "[Unit]\nDescription=kmod-audit monitor timer\n\n"
            f"[Timer]\n{section(units['timer'])}\n[Install]\nWantedBy=timers.target\n"
        )
        proc = subprocess.run(
            [analyze, "verify", str(service), str(timer)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert (0, "") == (proc.returncode, proc.stderr), service.read_text()

    def test_service_config_without_a_directory(self) -> None:
        """No textfile directory: nothing is writable."""
        config = _monitor("m.serviceConfig { directory = null; verify = false; }")
        assert [] == config["ReadWritePaths"]

    def test_timer(self) -> None:
        """The timer runs on the calendar expression, and catches up after downtime."""
        assert {"OnCalendar": "*:0/15", "Persistent": True} == _monitor('m.timerConfig "*:0/15"')

    @pytest.mark.parametrize(
        ("directory", "failed"),
        [
            (TEXTFILE_DIR, []),
            (None, []),
            ("/tmp/metrics", ["under\n/tmp, /var/tmp or the Nix store"]),
            ("/var/tmp", ["under\n/tmp, /var/tmp or the Nix store"]),
            ("/nix/store/metrics", ["under\n/tmp, /var/tmp or the Nix store"]),
            ("/var/lib/text files", ["use an\nabsolute path of letters"]),
            ("/var/lib/%n", ["use an\nabsolute path of letters"]),
            (
                "/tmp/a b",
                ["use an\nabsolute path of letters", "under\n/tmp, /var/tmp or the Nix store"],
            ),
        ],
        ids=["fine", "none", "tmp", "var-tmp", "store", "space", "specifier", "both"],
    )
    def test_directory_assertions(self, directory: str | None, failed: list[str]) -> None:
        """A textfile directory the unit and node_exporter cannot share fails evaluation."""
        arguments = _nix_json(
            {"moduleEnabled": True, "directory": directory, "services": SERVICES["nixpkgs-25.11"]}
        )
        assertions = _monitor(f"m.assertions {arguments}")
        messages = [a["message"] for a in assertions if not a["assertion"]]
        assert len(failed) == len(messages), messages
        for part, message in zip(failed, messages, strict=True):
            assert message.startswith(
                f'security.kernelModuleAudit.monitor.textfileDirectory = "{directory}"'
            )
            assert part in message

    @pytest.mark.parametrize(
        ("module", "layout", "opening"),
        [
            (True, "nixpkgs-25.11", None),
            (False, "nixpkgs-25.11", "security.kernelModuleAudit.monitor.enable is set but"),
            (True, "nixpkgs-25.05", "security.kernelModuleAudit.monitor.enable needs nixpkgs"),
        ],
        ids=["fine", "module-off", "old-nixpkgs"],
    )
    def test_assertions(self, module: bool, layout: str, opening: str | None) -> None:
        """The monitor needs the module, and nixpkgs' audit-rules-nixos to trigger on."""
        assertions = _monitor(
            f"m.assertions {{ moduleEnabled = {str(module).lower()}; directory = null; "
            f"services = {_nix_json(SERVICES[layout])}; }}"
        )
        messages = [a["message"] for a in assertions if not a["assertion"]]
        assert ([] if opening is None else [opening]) == [m[: len(opening or "")] for m in messages]

    @pytest.mark.parametrize(
        ("directory", "extra_flags", "warns"),
        [
            (TEXTFILE_DIR, [f"--collector.textfile.directory={TEXTFILE_DIR}"], False),
            ("/var/lib/elsewhere", [f"--collector.textfile.directory={TEXTFILE_DIR}"], True),
            ("/var/lib/elsewhere", [], True),
            (None, [], False),
        ],
        ids=["same", "different", "exporter-without-directory", "none"],
    )
    def test_directory_warning(
        self, directory: str | None, extra_flags: list[str], warns: bool
    ) -> None:
        """Metrics written where node_exporter does not look give a warning."""
        node = _node(extraFlags=extra_flags)
        warnings = _monitor(
            f"m.directoryWarning {{ directory = {_nix_json(directory)}; node = {node}; }}"
        )
        assert warns == bool(warnings)
        if warns:
            assert "the kmod-audit metrics will not be scraped" in " ".join(warnings[0].split())


def _nixpkgs_lib() -> Path:
    """A nixpkgs `lib` directory from KMOD_AUDIT_NIXPKGS_LIB (skip without one)."""
    value = os.environ.get("KMOD_AUDIT_NIXPKGS_LIB")
    if not value:
        pytest.skip(
            "KMOD_AUDIT_NIXPKGS_LIB is not set (a nixpkgs lib directory, e.g. a checkout of "
            "nix-community/nixpkgs.lib + /lib): the module is evaluated by `nix flake check`"
        )
    path = Path(value)
    if not (path / "default.nix").is_file():
        pytest.fail(
            f"KMOD_AUDIT_NIXPKGS_LIB={value}: no default.nix there (point it at nixpkgs' lib/)"
        )
    return path


def _eval_module_command(config: str, rules_unit: str = "audit-rules-nixos") -> list[str]:
    """`nix-instantiate` evaluating the module with `config` (tools/nix/eval-module.nix)."""
    return [
        _nix_instantiate(),
        "--eval",
        "--strict",
        "--json",
        str(REPO / "tools" / "nix" / "eval-module.nix"),
        "--arg",
        "lib",
        f"import {json.dumps(str(_nixpkgs_lib()))}",
        "--argstr",
        "rulesUnit",
        rules_unit,
        "--arg",
        "config",
        config,
    ]


def _evaluate_config(config: str, rules_unit: str = "audit-rules-nixos") -> dict[str, Any]:
    """What tools/nix/eval-module.nix prints for `config` (a Nix attribute set)."""
    result = json.loads(_nix_clean(*_eval_module_command(config, rules_unit)[1:]))
    assert isinstance(result, dict)
    return result


def _evaluate(rules_unit: str, audit_enable: str, extra: str = "") -> dict[str, Any]:
    """The module enabled with `security.audit.enable = audit_enable` and `extra` settings."""
    config = (
        "{ security.kernelModuleAudit.enable = true; "
        f"security.audit.enable = {audit_enable}; {extra} }}"
    )
    return _evaluate_config(config, rules_unit)


class TestModule:
    """The module under lib.evalModules (tools/nix/eval-module.nix), with a nixpkgs lib."""

    def test_lock_with_audit_rules_nixos(self) -> None:
        """With nixpkgs >= 25.11 in lock mode: no failed assertion, the override and the warning."""
        result = _evaluate("audit-rules-nixos", '"lock"')
        assert [] == result["failedAssertions"]
        assert {"restartIfChanged": False, "serviceConfig": {"ExecStart": EXEC_START}} == result[
            "auditRulesService"
        ]
        warnings = [" ".join(w.split()) for w in result["warnings"]]
        assert any("Leaving lock mode needs a reboot too" in w for w in warnings)
        assert {} == result["activationScripts"]

    def test_lock_with_an_older_nixpkgs_fails(self) -> None:
        """With nixpkgs <= 25.05 (audit.service) in lock mode, an assertion fails."""
        result = _evaluate("audit", '"lock"')
        failed = result["failedAssertions"]
        assert [LOCK_MESSAGE] == [m[: len(LOCK_MESSAGE)] for m in failed]

    @pytest.mark.parametrize("rules_unit", ["audit-rules-nixos", "audit"])
    def test_unlocked(self, rules_unit: str) -> None:
        """Without lock: no assertion on the unit, no override, the activation check."""
        result = _evaluate(rules_unit, "true")
        assert [] == result["failedAssertions"]
        assert [] == result["warnings"]
        assert ["kernelModuleAuditLocked"] == list(result["activationScripts"])
        expected = (
            {"serviceConfig": {"ExecStart": EXEC_START}}
            if rules_unit == "audit-rules-nixos"
            else None
        )
        assert expected == result["auditRulesService"]


NODE_EXPORTER = (
    'services.prometheus.exporters.node = { enable = true; enabledCollectors = [ "textfile" ]; '
    f'extraFlags = [ "--collector.textfile.directory={TEXTFILE_DIR}" ]; }};'
)


class TestMonitorModule:
    """security.kernelModuleAudit.monitor under lib.evalModules, with a nixpkgs lib."""

    def test_with_node_exporter(self) -> None:
        """With node_exporter's textfile collector: metrics there, timer, trigger, directory."""
        result = _evaluate(
            "audit-rules-nixos",
            "true",
            "security.kernelModuleAudit.monitor.enable = true; " + NODE_EXPORTER,
        )
        assert ([], []) == (result["failedAssertions"], result["warnings"])
        assert {
            "enable": True,
            "interval": "hourly",
            "textfileDirectory": TEXTFILE_DIR,
            "verify": False,
        } == result["monitor"]
        service = result["monitorService"]
        assert ["audit-rules-nixos.service"] == service["wantedBy"]
        assert ["audit-rules-nixos.service"] == service["after"]
        kmod_audit = "'/nix/store/00000000000000000000000000000000-kmod-audit-0.1.0/bin/kmod-audit'"
        kmod = "/nix/store/00000000000000000000000000000000-kmod-31/bin/kmod"
        checks = [line for line in service["script"].splitlines() if line.startswith(kmod_audit)]
        expected = (
            f"{kmod_audit} 'check' '--profile=nixos-stig' '--key=module_chng' "
            f"'--uid-min=1000' '--kmod-path={kmod}' "
            f"'--metrics={TEXTFILE_DIR}/kmod-audit-check.prom' || check=$?"
        )
        assert [expected] == checks
        assert f"rm -f '{TEXTFILE_DIR}/kmod-audit-lock.prom'" in service["script"]
        assert [TEXTFILE_DIR] == service["serviceConfig"]["ReadWritePaths"]
        assert {
            "wantedBy": ["timers.target"],
            "timerConfig": {"OnCalendar": "hourly", "Persistent": True},
        } == {k: result["monitorTimer"][k] for k in ("wantedBy", "timerConfig")}
        assert [f"d {TEXTFILE_DIR} 0755 root root -"] == result["tmpfilesRules"]

    def test_without_node_exporter(self) -> None:
        """No node_exporter textfile directory: no metrics, no directory; the unit still runs."""
        result = _evaluate(
            "audit-rules-nixos", "true", "security.kernelModuleAudit.monitor.enable = true;"
        )
        assert ([], []) == (result["failedAssertions"], result["warnings"])
        assert result["monitor"]["textfileDirectory"] is None
        assert "--metrics" not in result["monitorService"]["script"]
        assert [] == result["tmpfilesRules"]
        assert [] == result["monitorService"]["serviceConfig"]["ReadWritePaths"]

    def test_verify_every_hour_at_quarter_past(self) -> None:
        """With verify, it runs too (after auditd), and the timer keeps the given calendar."""
        result = _evaluate(
            "audit-rules-nixos",
            "true",
            "security.kernelModuleAudit.monitor = "
            '{ enable = true; verify = true; interval = "*:15"; };' + NODE_EXPORTER,
        )
        service = result["monitorService"]
        assert ["audit-rules-nixos.service", "auditd.service"] == service["after"]
        assert "'--no-load' '--profile=nixos-stig'" in service["script"]
        assert (
            f"'--metrics={TEXTFILE_DIR}/kmod-audit-verify.prom' || verify=$?" in service["script"]
        )
        assert "*:15" == result["monitorTimer"]["timerConfig"]["OnCalendar"]

    def test_lock_writes_the_lock_file(self) -> None:
        """security.audit.enable = "lock": the script writes kmod-audit-lock.prom."""
        result = _evaluate(
            "audit-rules-nixos",
            '"lock"',
            "security.kernelModuleAudit.monitor.enable = true; " + NODE_EXPORTER,
        )
        assert [] == result["failedAssertions"]
        script = result["monitorService"]["script"]
        temporary, lock = (
            f"{TEXTFILE_DIR}/.kmod-audit-lock.prom.tmp",
            f"{TEXTFILE_DIR}/kmod-audit-lock.prom",
        )
        assert f"mv -f '{temporary}' '{lock}'" in script
        assert "'kmod_audit_lock_expected 1'" in script

    def test_without_the_module(self) -> None:
        """The monitor without security.kernelModuleAudit.enable fails evaluation."""
        result = _evaluate_config(
            "{ security.audit.enable = true; security.kernelModuleAudit.monitor.enable = true; }"
        )
        assert ["security.kernelModuleAudit.monitor.enable is set but"] == [
            m[:52] for m in result["failedAssertions"]
        ]

    def test_with_an_older_nixpkgs(self) -> None:
        """With nixpkgs <= 25.05 (no audit-rules-nixos to trigger on), an assertion fails."""
        result = _evaluate("audit", "true", "security.kernelModuleAudit.monitor.enable = true;")
        assert ["security.kernelModuleAudit.monitor.enable needs nixpkgs"] == [
            m[:55] for m in result["failedAssertions"]
        ]

    def test_a_relative_directory_is_refused(self) -> None:
        """A relative textfileDirectory fails evaluation (an absolute path outside the store)."""
        config = (
            "{ security.kernelModuleAudit = { enable = true; "
            'monitor = { enable = true; textfileDirectory = "metrics"; }; }; }'
        )
        proc = subprocess.run(
            _eval_module_command(config),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env=_nix_env(),
        )
        assert 1 == proc.returncode
        assert "security.kernelModuleAudit.monitor.textfileDirectory" in proc.stderr
        assert "absolute path" in proc.stderr

    def test_option_types(self) -> None:
        """The monitor's options have the documented types."""
        types = _evaluate("audit-rules-nixos", "true")["monitorOptionTypes"]
        # pathWith's wording differs between nixpkgs versions; its meaning does not.
        directory = types.pop("textfileDirectory")
        assert directory.startswith("null or absolute path"), directory
        assert {"enable": "boolean", "interval": "non-empty string", "verify": "boolean"} == types


class TestSingleSource:
    """The Nix data and patterns come from the Python package."""

    def test_profiles_json_is_fresh(self) -> None:
        """nixos-modules/profiles.json is what tools/gen_profiles_json.py prints."""
        proc = subprocess.run(
            [sys.executable, str(REPO / "tools" / "gen_profiles_json.py")],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert proc.stdout == (REPO / "nixos-modules" / "profiles.json").read_text()

    def test_key_pattern_matches(self) -> None:
        """The module's key type uses the generator's KEY_PATTERN."""
        module = (REPO / "nixos-modules" / "kmod-audit.nix").read_text()
        match = re.search(r'keyPattern = "([^"]*)";', module)
        assert match is not None
        assert KEY_PATTERN == match.group(1)


class TestDocs:
    """The option reference (docs/nixos.md) covers the module."""

    def test_every_option_is_documented(self) -> None:
        """Each option the module declares has a row in the option table of docs/nixos.md."""
        module = (REPO / "nixos-modules" / "kmod-audit.nix").read_text()
        declared = re.findall(
            r"^    (\w+) = lib\.mk(?:Option|EnableOption|PackageOption)\b", module, re.MULTILINE
        )
        readme = (REPO / "docs" / "nixos.md").read_text()
        assert len(declared) >= 10
        assert [] == [name for name in declared if f"| `{name}` |" not in readme]

    def test_every_monitor_option_is_documented(self) -> None:
        """Each monitor option has a row `monitor.NAME` in docs/nixos.md."""
        module = (REPO / "nixos-modules" / "monitor.nix").read_text()
        declared = re.findall(
            r"^    (\w+) = lib\.mk(?:Option|EnableOption)\b", module, re.MULTILINE
        )
        readme = (REPO / "docs" / "nixos.md").read_text()
        assert ["enable", "interval", "verify", "textfileDirectory"] == declared
        assert [] == [name for name in declared if f"| `monitor.{name}` |" not in readme]
