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
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from _support import HostAudit, RunCli, require_or_skip
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


class TestModule:
    """The module under lib.evalModules (tools/nix/eval-module.nix), with a nixpkgs lib."""

    def _evaluate(self, rules_unit: str, audit_enable: str) -> dict[str, Any]:
        config = (
            "{ security.kernelModuleAudit.enable = true; "
            f"security.audit.enable = {audit_enable}; }}"
        )
        out = _nix_clean(
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
        )
        result = json.loads(out)
        assert isinstance(result, dict)
        return result

    def test_lock_with_audit_rules_nixos(self) -> None:
        """With nixpkgs >= 25.11 in lock mode: no failed assertion, the override and the warning."""
        result = self._evaluate("audit-rules-nixos", '"lock"')
        assert [] == result["failedAssertions"]
        assert {"restartIfChanged": False, "serviceConfig": {"ExecStart": EXEC_START}} == result[
            "auditRulesService"
        ]
        warnings = [" ".join(w.split()) for w in result["warnings"]]
        assert any("Leaving lock mode needs a reboot too" in w for w in warnings)
        assert {} == result["activationScripts"]

    def test_lock_with_an_older_nixpkgs_fails(self) -> None:
        """With nixpkgs <= 25.05 (audit.service) in lock mode, an assertion fails."""
        result = self._evaluate("audit", '"lock"')
        failed = result["failedAssertions"]
        assert [LOCK_MESSAGE] == [m[: len(LOCK_MESSAGE)] for m in failed]

    @pytest.mark.parametrize("rules_unit", ["audit-rules-nixos", "audit"])
    def test_unlocked(self, rules_unit: str) -> None:
        """Without lock: no assertion on the unit, no override, the activation check."""
        result = self._evaluate(rules_unit, "true")
        assert [] == result["failedAssertions"]
        assert [] == result["warnings"]
        assert ["kernelModuleAuditLocked"] == list(result["activationScripts"])
        expected = (
            {"serviceConfig": {"ExecStart": EXEC_START}}
            if rules_unit == "audit-rules-nixos"
            else None
        )
        assert expected == result["auditRulesService"]


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
    """The README's option reference covers the module."""

    def test_every_option_is_documented(self) -> None:
        """Each option the module declares has a row in the README's option table."""
        module = (REPO / "nixos-modules" / "kmod-audit.nix").read_text()
        declared = re.findall(
            r"^    (\w+) = lib\.mk(?:Option|EnableOption|PackageOption)\b", module, re.MULTILINE
        )
        readme = (REPO / "README.md").read_text()
        assert len(declared) >= 10
        assert [] == [name for name in declared if f"| `{name}` |" not in readme]
