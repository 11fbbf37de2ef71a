"""`generate` prints the minimal canonical rules, and `check` agrees they are compliant."""

from __future__ import annotations

import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from _support import HostAudit, RunCli, auditctl, require_or_skip
from kmod_audit.generate import (
    DEFAULT_KEY,
    KEY_PATTERN,
    generate_lines,
    loading_problem,
    validate_key,
    validate_kmod_path,
)
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
        """aarch64 has no create_module/query_module; the kmod rules name the given path.

        perm=x misses a 32-bit execveat there (lib/compat_audit.c classes only execve as an
        exec), so an explicit b32 execveat rule follows the perm=x rule. Then per ABI the
        exits of an exec that fails before it opens the file on Linux 5.9 to 6.7 (EFAULT,
        E2BIG), which path= misses.
        """
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
            "-a always,exit -F arch=b32 -S execveat -F path=/nix/store/abc-kmod-31/bin/kmod "
            "-F auid>=500 -F auid!=unset -k modules\n"
            "-a always,exit -F arch=b64 -S execve,execveat -F exit=-14 "
            "-F auid>=500 -F auid!=unset -k modules\n"
            "-a always,exit -F arch=b64 -S execve,execveat -F exit=-7 "
            "-F auid>=500 -F auid!=unset -k modules\n"
            "-a always,exit -F arch=b32 -S execve,execveat -F exit=-14 "
            "-F auid>=500 -F auid!=unset -k modules\n"
            "-a always,exit -F arch=b32 -S execve,execveat -F exit=-7 "
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
            *(
                f"-a always,exit -F arch={bits} -S execve,execveat -F exit=-{code} "
                "-F auid>=1000 -F auid!=unset -k module_chng"
                for bits in ("b64", "b32")
                for code in (14, 7)
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


#: What `--kmod-path` values auditctl or the kernel refuse (or read as another path), and
#: issue 8 item 5's repros among them.
BAD_KMOD_PATHS = {
    "trailing-slash": "/usr/bin/kmod/",
    "root": "/",
    "trailing-backslash": "/usr/bin/kmod\\",
    "longer-than-path-max": "/usr/" + "a" * 4100,
    "path-max": ("/" + "a" * 255) * 15 + "/" + "b" * 255,
    "component-256": "/usr/bin/" + "k" * 256,
    "dot": "/usr/bin/.",
    "dotdot": "/usr/bin/..",
    "space": "/usr/local bin/kmod",
    "tab": "/usr/bin/km\tod",
    "newline": "/usr/bin/kmod\n-e 2",
    "escaped-backslash": "/usr/b\\\\in/kmod",
    "not-equal": "/usr/b!=in/kmod",
    "greater-equal": "/usr/b>=in/kmod",
    "control": "/usr/bin/km\x01od",
    "not-utf8": "/usr/bin/km\udcffod",
    "empty": "",
    "relative": "bin/kmod",
}


class TestKmodPathValidation:
    """--kmod-path is checked as auditctl and the kernel would check the rule naming it."""

    @pytest.mark.parametrize("path", BAD_KMOD_PATHS.values(), ids=BAD_KMOD_PATHS.keys())
    def test_refused_with_exit_2(self, run_cli: RunCli, path: str) -> None:
        """Issue 8.5: a path the real `auditctl -R` would refuse is a usage error naming it."""
        result = run_cli("generate", "--profile", "cis", "--kmod-path", path)
        assert (2, "", True, False) == (
            result.code,
            result.out,
            "--kmod-path" in result.err,
            "internal error" in result.err,
        ), result.err

    @pytest.mark.parametrize(
        "path",
        [
            "/usr/bin/kmod",
            "/nix/store/00000000000000000000000000000000-kmod-31/bin/kmod",
            "/opt/km\u00f6d/bin/kmod",
            "/usr/../usr/bin/kmod",
            ("/" + "a" * 255) * 15 + "/" + "b" * 254,
        ],
        ids=["usr-bin", "nix-store", "utf-8", "dotdot-inside", "4095-bytes"],
    )
    def test_accepted(self, path: str) -> None:
        """A path the kernel can resolve is printed as given."""
        assert validate_kmod_path(path) is None
        lines = generate_lines(select_profiles(["cis"]), machine=MACHINES["x86_64"], kmod_path=path)
        assert f"-F path={path} -F perm=x" in lines[1]
        assert (
            loading_problem(lines, machine=MACHINES["x86_64"], key=DEFAULT_KEY, kmod_path=path)
            is None
        )


def _auditctl_load(text: str, path: Path) -> subprocess.CompletedProcess[str]:
    """`auditctl -D`, then `auditctl -R` on `text` written as UTF-8 whatever the locale."""
    auditctl("-D")
    path.write_bytes(text.encode())
    path.chmod(0o600)  # auditctl refuses a rules file that others may write
    return auditctl("-R", str(path), check=False)


# A root for the kmod paths the property test draws: its parent directories are made
# there (the kernel needs the parent of a watched file to exist); at most two `..`
# segments, below four levels, can never leave it.
GENERATE_ROOT = Path("/tmp/kmod-audit-generate-test")
KMOD_BASE = GENERATE_ROOT / "r" / "o" / "o" / "t"
_SEGMENTS = st.sampled_from(
    [
        "kmod",
        "bin",
        "",
        ".",
        "..",
        "a b",
        "a\\",
        "\\",
        "\\\\",
        "x!=y",
        "k>=1",
        "a&=b",
        "#",
        "-k",
        "k=v",
        "\u00e9",
        "\t",
        "\n",
        "\r",
        "\x01",
        "x" * 255,
        "x" * 256,
        "y" * 2000,
        "$HOME",
        "*",
        ",",
    ]
)
_PLAIN_SEGMENTS = st.sampled_from(["kmod", "bin", "sbin", "\u00e9", "k=v", "x" * 255, "-k", "#"])
_KMOD_PATHS = st.one_of(
    st.none(),
    st.lists(_SEGMENTS, max_size=6)
    .filter(lambda segments: segments.count("..") <= 2)
    .map(lambda segments: "/".join([str(KMOD_BASE), *segments])),
    st.lists(st.one_of(_PLAIN_SEGMENTS, _SEGMENTS), min_size=1, max_size=4)
    .filter(lambda segments: segments.count("..") <= 2)
    .map(lambda segments: "/".join([str(KMOD_BASE), *segments])),
    st.text(alphabet="/ab.\\ -\t", max_size=12),
)
_KEYS = st.one_of(
    st.none(),
    st.from_regex(KEY_PATTERN, fullmatch=True),
    st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
    st.text(alphabet="ab-_ =\\\x01\u00e9\"'#", max_size=300),
)
_UID_MINS = st.one_of(
    st.none(),
    st.integers(0, 2**32 - 2).map(str),
    st.integers(-2, 2**32 + 2).map(str),
    st.sampled_from(["", "abc", "1e3", " 10", "0x10", "4294967294", "4294967295"]),
)
_ARCHES = st.sampled_from([None, "x86_64", "aarch64", "amd64", "arm64", "riscv64"])
_PROFILE_LISTS = st.one_of(
    st.lists(st.sampled_from([*PROFILES, "all"]), max_size=3),
    st.lists(st.sampled_from([*PROFILES, "all", "bogus"]), max_size=3),
)


@pytest.mark.root
class TestGeneratedRulesLoad:
    """Whatever generate prints loads in the real kernel; whatever it refuses is exit 2."""

    @settings(
        max_examples=250,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        profiles=_PROFILE_LISTS,
        arch=_ARCHES,
        key=_KEYS,
        uid_min=_UID_MINS,
        kmod_path=_KMOD_PATHS,
    )
    def test_every_output_loads_with_auditctl(
        self,
        host_audit: HostAudit,
        run_cli: RunCli,
        profiles: list[str],
        arch: str | None,
        key: str | None,
        uid_min: str | None,
        kmod_path: str | None,
    ) -> None:
        """Issue 8.5: exit 0 means `auditctl -R` loads every line; otherwise exit 2 and why."""
        argv = ["generate"]
        argv += [f"--profile={p}" for p in profiles]
        for option, value in (
            ("--arch", arch),
            ("--key", key),
            ("--uid-min", uid_min),
            ("--kmod-path", kmod_path),
        ):
            if value is not None:
                argv.append(f"{option}={value}")
        result = run_cli(*argv)
        event(f"exit {result.code}, kmod path {'drawn' if kmod_path else 'default'}")
        if result.code != 0:
            assert (2, "", True, False) == (
                result.code,
                result.out,
                any(
                    f"--{o}" in result.err
                    for o in ("kmod-path", "key", "uid-min", "profile", "arch")
                ),
                "internal error" in result.err or "Traceback" in result.err,
            ), result.err
            return
        if kmod_path is not None and kmod_path.startswith(str(GENERATE_ROOT)):
            # The machine that loads the rules has the kmod binary's directory.
            os.makedirs(os.path.dirname(kmod_path), exist_ok=True)
        loaded = _auditctl_load(result.out, GENERATE_ROOT / "generated.rules")
        listed = host_audit.listing().splitlines()
        assert (0, len(result.out.splitlines())) == (loaded.returncode, len(listed)), (
            f"{argv!r} printed:\n{result.out}auditctl -R said: {loaded.stderr}"
        )

    @pytest.fixture(autouse=True)
    def _generate_root(self) -> Iterator[None]:
        KMOD_BASE.mkdir(parents=True, exist_ok=True)
        try:
            yield
        finally:
            shutil.rmtree(GENERATE_ROOT)


class TestKmodPathDefault:
    """`check` and `generate` assume the same kmod path when `--kmod-path` is not given."""

    @pytest.mark.parametrize("offline", [False, True], ids=["foreign-arch", "offline"])
    def test_check_accepts_generates_own_output_for_another_machine(
        self, tmp_path: Path, offline: bool
    ) -> None:
        """On a host whose kmod is elsewhere (NixOS), `generate` for another machine passes.

        The host's kmod (resolved from PATH) says nothing about another machine: both
        commands assume /usr/bin/kmod there. Before they shared one resolver, `check`
        took this host's path and failed `generate`'s own rules.
        """
        real = tmp_path / "store" / "kmod"
        real.parent.mkdir()
        real.write_text("#!/bin/sh\n")
        real.chmod(0o755)
        bindir = tmp_path / "bin"
        bindir.mkdir()
        (bindir / "kmod").symlink_to(real)
        env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
        foreign = "aarch64" if platform.machine() == "x86_64" else "x86_64"
        arch = platform.machine() if offline else foreign
        kmod_audit = [sys.executable, "-m", "kmod_audit"]
        profile = ["--profile", "al2023-stig", "--arch", arch]
        generated = subprocess.run(
            [*kmod_audit, "generate", *profile],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert 0 == generated.returncode, generated.stderr
        rules = tmp_path / "generated.rules"
        rules.write_text(generated.stdout)
        if offline:
            # generate for this machine names its real kmod; judged offline, check assumes
            # /usr/bin/kmod: the same rules, spelled for the path a foreign machine has.
            rules.write_text(generated.stdout.replace(str(real), "/usr/bin/kmod"))
        checked = subprocess.run(
            [*kmod_audit, "check", *profile, *(["--offline"] if offline else []), str(rules)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert 0 == checked.returncode, checked.stdout + checked.stderr
        assert "kmod /usr/bin/kmod" in checked.stdout
