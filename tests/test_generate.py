"""`generate` prints the minimal canonical rules, and `check` agrees they are compliant."""

from __future__ import annotations

import itertools
import json
import platform
from pathlib import Path

import pytest

from _support import RunCli, require_or_skip
from kmod_audit.generate import DEFAULT_KEY, generate_lines, validate_key
from kmod_audit.profiles import PROFILES, select_profiles
from kmod_audit.syscalls import MACHINES
from kmod_audit.system import default_kmod_path


def host_arch() -> str:
    """This machine, as --arch names it."""
    return platform.machine()


PROFILE_IDS = [*PROFILES, "all"]
ARCHES = list(MACHINES)


class TestCanonicalFormat:
    """The exact lines (the NixOS renderer must produce the same bytes)."""

    def test_nixos_stig_on_x86_64(self, run_cli: RunCli) -> None:
        """The default profile gives one b64 and one b32 rule in syscall-number order."""
        result = run_cli("generate", "--arch", "x86_64", "--kmod-path", "/usr/bin/kmod")
        assert 0 == result.code
        assert (
            "-a always,exit -F arch=b64 -S init_module,delete_module,finit_module "
            "-F auid>=1000 -F auid!=unset -k module_chng\n"
            "-a always,exit -F arch=b32 -S init_module,delete_module,finit_module "
            "-F auid>=1000 -F auid!=unset -k module_chng\n"
        ) == result.out

    def test_all_profiles_on_aarch64(self, run_cli: RunCli) -> None:
        """aarch64 has no create_module/query_module; the kmod rule names the given path."""
        result = run_cli(
            "generate",
            "--profile",
            "all",
            "--arch",
            "aarch64",
            "--key",
            "modules",
            "--uid-min",
            "500",
            "--kmod-path",
            "/nix/store/abc-kmod-31/bin/kmod",
        )
        assert (
            "-a always,exit -F arch=b64 -S init_module,delete_module,finit_module "
            "-F auid>=500 -F auid!=unset -k modules\n"
            "-a always,exit -F arch=b32 -S init_module,delete_module,finit_module "
            "-F auid>=500 -F auid!=unset -k modules\n"
            "-a always,exit -F path=/nix/store/abc-kmod-31/bin/kmod -F perm=x "
            "-F auid>=500 -F auid!=unset -k modules\n"
        ) == result.out

    def test_cis_on_x86_64_lists_every_module_syscall(self) -> None:
        """CIS on x86_64 asks for all five syscalls on b64 and nothing on b32."""
        lines = generate_lines(
            select_profiles(["cis"]), machine=MACHINES["x86_64"], kmod_path="/usr/bin/kmod"
        )
        assert [
            (
                "-a always,exit -F arch=b64 -S create_module,init_module,delete_module,"
                "query_module,finit_module -F auid>=1000 -F auid!=unset -k module_chng"
            ),
            (
                "-a always,exit -F path=/usr/bin/kmod -F perm=x -F auid>=1000 -F auid!=unset "
                "-k module_chng"
            ),
        ] == lines

    def test_profile_order_does_not_matter(self) -> None:
        """The output depends on the set of profiles, not on their order."""
        machine = MACHINES["x86_64"]
        one = generate_lines(select_profiles(["cis", "nixos-stig"]), machine=machine)
        two = generate_lines(select_profiles(["nixos-stig", "cis"]), machine=machine)
        assert one == two


class TestRoundTrip:
    """Whatever generate prints, check (same options) judges compliant."""

    @pytest.mark.parametrize(
        ("profile", "arch"),
        list(itertools.product(PROFILE_IDS, ARCHES)),
        ids=[f"{p}-{a}" for p, a in itertools.product(PROFILE_IDS, ARCHES)],
    )
    @pytest.mark.parametrize("strict", [False, True], ids=["semantic", "strict"])
    @pytest.mark.parametrize("kmod", ["default", "given"], ids=["default-kmod", "given-kmod"])
    def test_generated_rules_pass_check(
        self,
        run_cli: RunCli,
        tmp_path: Path,
        profile: str,
        arch: str,
        strict: bool,
        kmod: str,
    ) -> None:
        """`check` exits 0 on `generate` output for every profile and arch.

        `default-kmod` resolves kmod on this machine (as a user would); `given-kmod` passes
        a kmod path of its own and judges offline (for a machine whose kmod that is: this
        machine's insmod/modprobe say nothing about it), so it holds on any machine.
        """
        options = ["--profile", profile, "--arch", arch, "--uid-min", "1000"]
        if kmod == "given":
            program = tmp_path / "bin" / "kmod"
            program.parent.mkdir()
            program.write_text("#!/bin/sh\n")
            options += ["--kmod-path", str(program)]
            check_extra = ["--offline"]
        else:
            check_extra = []
            if not Path(default_kmod_path()).is_file() and arch == host_arch():
                require_or_skip("no kmod binary on this machine (apt-get install kmod)")
        generated = run_cli("generate", *options, "--key", "kmod_k")
        assert 0 == generated.code, generated.err
        rules = tmp_path / "generated.rules"
        rules.write_text(generated.out)
        extra = ["--strict"] if strict else []
        checked = run_cli(
            "check",
            *options,
            "--key",
            "kmod_k",
            *extra,
            *check_extra,
            "--format",
            "json",
            str(rules),
        )
        assert 0 == checked.code, checked.out
        assert json.loads(checked.out)["compliant"] is True

    @pytest.mark.parametrize("profile", PROFILE_IDS, ids=str)
    def test_generated_rules_fail_for_another_pinned_key(
        self, run_cli: RunCli, tmp_path: object, profile: str
    ) -> None:
        """Pinning a different key than the generated one makes check fail (the key matters)."""
        generated = run_cli("generate", "--profile", profile, "--key", "one")
        rules = tmp_path / "generated.rules"  # type: ignore[operator]
        rules.write_text(generated.out)
        assert 1 == run_cli("check", "--profile", profile, "--key", "two", str(rules)).code


class TestKeyValidation:
    """Keys must survive auditctl's tokenizer and print unencoded in records."""

    @pytest.mark.parametrize("key", [DEFAULT_KEY, "module-change", "modules", "a" * 256, "k.1:2"])
    def test_accepts(self, key: str) -> None:
        """Printable keys up to 256 bytes are accepted."""
        assert validate_key(key) is None

    @pytest.mark.parametrize(
        "key",
        ["", "a" * 257, "has space", 'quote"', "tab\t", "-leading", "caf\u00e9", "x\x01y"],
        ids=["empty", "too-long", "space", "quote", "tab", "leading-dash", "non-ascii", "sep"],
    )
    def test_rejects(self, run_cli: RunCli, key: str) -> None:
        """A bad key is a usage error (exit 2) naming --key."""
        assert validate_key(key) is not None
        result = run_cli("generate", f"--key={key}")
        assert 2 == result.code
        assert "--key" in result.err

    def test_bad_kmod_path_is_a_usage_error(self, run_cli: RunCli) -> None:
        """A relative kmod path is refused with exit 2."""
        result = run_cli("generate", "--profile", "cis", "--kmod-path", "bin/kmod")
        assert 2 == result.code
        assert "--kmod-path" in result.err
