"""rules.d assembled exactly as the real augenrules does (differential tests).

The real script (`/sbin/augenrules`, Debian's audit 3.0.9) runs on a scratch copy whose
paths point into a temporary directory; it is never given `--load`, so it neither reads nor
writes the host's /etc/audit and never talks to the kernel. It runs under mawk (Debian's awk)
and gawk (RHEL's), in the C and a UTF-8 locale, and as the audit 3.1.1 to 4.1.2 version
(`cat DIR/"$rules"` and a trailing CR dropped: RHEL 9 and 10), derived from it by that edit.
"""

from __future__ import annotations

import json
import os
import shutil
import string
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _support import RunCli
from kmod_audit.augenrules import (
    MAX_TIE_ORDERS,
    Augenrules,
    TieOrder,
    assemble_rules_d_all,
    augenrules_dialects,
    filevercmp,
)
from kmod_audit.errors import ParseError
from kmod_audit.sources import discover_on_disk

SCRIPT = next((p for p in ("/sbin/augenrules", "/usr/sbin/augenrules") if os.path.exists(p)), None)
AWKS = {"mawk": shutil.which("mawk"), "gawk": shutil.which("gawk")}

pytestmark = pytest.mark.skipif(
    SCRIPT is None or None in AWKS.values(),
    reason="needs the real augenrules (auditd), mawk and gawk (tools/setup installs them)",
)

DEBIAN_CAT = "cat ${SourceRulesDir}/${rules}"
AWK_START = "} {\n"


DEBIAN_LISTING = (
    'for rules in $(/bin/ls -1v ${SourceRulesDir} | grep "\\.rules$") ; do\n'
    "\tcat ${SourceRulesDir}/${rules}\n"
    "done | awk"
)
# audit >= 4.1.3's listing (init.d/augenrules.in upstream).
GLOB_LISTING = (
    'for rules in "${SourceRulesDir}"/*.rules ; do\n'
    '\t[ -e "${rules}" ] || continue\n'
    "\tprintf '%s\\0' \"${rules}\"\n"
    "done | sort -zV | xargs -0r cat -- | awk"
)


def _script(version: str) -> str:
    """The installed augenrules, or the audit 3.1.1 to 4.1.2 (or 4.1.3) version derived from it."""
    assert SCRIPT is not None
    text = Path(SCRIPT).read_text()
    if version == "4.1.3":
        assert DEBIAN_LISTING in text
        text = text.replace(DEBIAN_LISTING, GLOB_LISTING)
        text = text.replace(AWK_START, AWK_START + '        sub(/\\r$/, "");\n', 1)
    if version == "3.1.1":
        assert DEBIAN_CAT in text
        assert AWK_START in text
        text = text.replace(DEBIAN_CAT, 'cat ${SourceRulesDir}/"${rules}"')
        text = text.replace(AWK_START, AWK_START + '        sub(/\\r$/, "");\n', 1)
    return text


def real_augenrules(
    rules_d: Path,
    scratch: Path,
    *,
    awk: str,
    version: str,
    utf8: bool,
    cwd: Path,
    locale: dict[str, str] | None = None,
) -> bytes:
    """Run the real augenrules on `rules_d` with every path redirected; return audit.rules."""
    text = _script(version)
    for old, new in (
        ("DestinationFile=/etc/audit/audit.rules", f"DestinationFile={scratch}/audit.rules"),
        ("SourceRulesDir=/etc/audit/rules.d", f"SourceRulesDir={rules_d}"),
        ("TmpRules=$(mktemp /tmp/", f"TmpRules=$(mktemp {scratch}/"),
    ):
        assert old in text
        text = text.replace(old, new)
    bindir = scratch / "bin"
    bindir.mkdir()
    awk_path = AWKS[awk]
    assert awk_path is not None
    (bindir / "awk").symlink_to(awk_path)
    script = scratch / "augenrules"
    script.write_text(text)
    env = {
        "PATH": f"{bindir}:/usr/bin:/bin",
        "LC_ALL": "C.UTF-8" if utf8 else "C",
        **(locale or {}),
    }
    # No --load: the script only writes its output file.
    subprocess.run(
        ["/bin/sh", str(script)], cwd=cwd, env=env, capture_output=True, check=True, timeout=60
    )
    return (scratch / "audit.rules").read_bytes()


def dialect(*, awk: str, version: str, utf8: bool) -> Augenrules:
    """The model of that augenrules."""
    return Augenrules(
        listing="ls",
        quoted_cat=version == "3.1.1",
        strip_cr=version == "3.1.1",
        awk_space=awk == "gawk",
        utf8=utf8,
    )


NAME_CHARS = string.digits + "abcvxz-._~ \t\n²é*?[]!"
names = st.text(alphabet=NAME_CHARS, min_size=0, max_size=12).map(
    lambda stem: stem + ".rules"
) | st.text(alphabet=NAME_CHARS, min_size=1, max_size=12)
LINES = [
    "-a always,exit -F arch=b64 -S init_module -k {n}",
    "-w /usr/bin/kmod -p x -k {n}",
    "-e 2",
    "  -e 2",
    "\t-e 1",
    "s-e 1",
    "\u2003-e 2",
    "-D",
    "-D ",
    "  -D",
    "-D -k x",
    "-b 8192",
    " -b 320",
    "-f 1",
    "\t-f 2",
    "# comment {n}",
    "   # indented comment",
    "s# mawk reads \\s as s",
    "",
    " ",
    "\r",
    "-a never,exit -S all -k {n}\r",
    "\u00a0-e 2",
    "x\xff{n}",
]
contents = st.tuples(
    st.lists(st.sampled_from(LINES), max_size=6),
    st.booleans(),
    st.integers(0, 99),
).map(lambda t: "\n".join(line.format(n=t[2]) for line in t[0]) + ("\n" if t[1] else ""))
trees = st.dictionaries(names, contents, min_size=1, max_size=6)


def _write(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir()
    for name, text in files.items():
        if name in {".", ".."} or len(name.encode()) > 255:
            continue
        # Content with \xff is written as that raw byte (invalid UTF-8).
        (directory / name).write_bytes(text.encode("utf-8").replace(b"\xc3\xbf", b"\xff"))


class TestDifferential:
    """The model gives byte for byte what the real augenrules writes."""

    @pytest.mark.parametrize("version", ["3.0.9", "3.1.1"], ids=["debian-3.0.9", "audit-3.1.1"])
    @pytest.mark.parametrize("awk", ["mawk", "gawk"])
    @pytest.mark.parametrize("utf8", [False, True], ids=["C", "UTF-8"])
    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(files=trees, cwd_files=st.dictionaries(names, st.just("-e 2\n"), max_size=3))
    def test_generated_rules_d(
        self,
        tmp_path_factory: pytest.TempPathFactory,
        files: dict[str, str],
        cwd_files: dict[str, str],
        version: str,
        awk: str,
        utf8: bool,
    ) -> None:
        """Any names and contents assemble as the real augenrules does."""
        base = tmp_path_factory.mktemp("augen")
        rules_d = base / "rules.d"
        _write(rules_d, files)
        cwd = base / "cwd"
        _write(cwd, cwd_files)
        scratch = base / "scratch"
        scratch.mkdir()
        real = real_augenrules(rules_d, scratch, awk=awk, version=version, utf8=utf8, cwd=cwd)
        if not any(name.endswith(".rules") for name in os.listdir(rules_d)):
            with pytest.raises(ParseError, match=r"holds no \*\.rules file"):
                assemble_rules_d_all(str(rules_d))
        # An empty rules.d assembles too (what the next start of audit loads from it).
        (ours,) = assemble_rules_d_all(
            str(rules_d),
            (dialect(awk=awk, version=version, utf8=utf8),),
            cwd=str(cwd),
            empty_ok=True,
        )
        assert real == ours.file_text

    @pytest.mark.parametrize(
        ("files", "why"),
        [
            ({"30-local.rules": "-a 1\n", "30-local-stig.rules": "-a 2\n"}, "ls -v order"),
            ({"10 never.rules": "-a 1\n", "20-stig.rules": "-a 2\n"}, "split name"),
            ({".10-never.rules": "-a 1\n", "zz-stig.rules": "-a 2\n"}, "dotfile"),
            ({"10-lock.rules": "  -e 2\n", "20-stig.rules": "-a 2\n"}, "indented -e"),
            ({"1²2.rules": "-a 1\n", "12.rules": "-a 2\n"}, "unicode digit"),
            ({"a*.rules": "-a 1\n", "ab.rules": "-a 2\n"}, "glob name"),
            ({"a\nb.rules": "-a 1\n", "b.rules": "-a 2\n"}, "newline name"),
            ({"a.rules": "-a 1", "b.rules": "-a 2\n"}, "no final newline"),
        ],
        ids=lambda value: value if isinstance(value, str) else "",
    )
    @pytest.mark.parametrize("awk", ["mawk", "gawk"])
    def test_known_differences(
        self, tmp_path: Path, files: dict[str, str], why: str, awk: str
    ) -> None:
        """Each difference issue 7 names assembles as the real (Debian) augenrules does."""
        rules_d = tmp_path / "rules.d"
        _write(rules_d, files)
        scratch = tmp_path / "scratch"
        scratch.mkdir()
        real = real_augenrules(
            rules_d, scratch, awk=awk, version="3.0.9", utf8=False, cwd=Path("/")
        )
        (ours,) = assemble_rules_d_all(
            str(rules_d), (dialect(awk=awk, version="3.0.9", utf8=False),)
        )
        assert real == ours.file_text, why


class TestOrder:
    """filevercmp sorts as `ls -1v` does."""

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.text(alphabet=NAME_CHARS.replace("\n", ""), min_size=1),
            min_size=2,
            max_size=8,
            unique=True,
        )
    )
    def test_as_ls_v(self, tmp_path_factory: pytest.TempPathFactory, names: list[str]) -> None:
        """Any names (no newline, not hidden) come out of ls -1v in filevercmp order."""
        import functools  # noqa: PLC0415

        directory = tmp_path_factory.mktemp("order")
        kept = [n for n in names if not n.startswith(".") and len(n.encode()) <= 255]
        for name in kept:
            (directory / name).touch()
        listed = subprocess.run(
            ["/bin/ls", "-1v", str(directory)], capture_output=True, check=True, env={"LC_ALL": "C"}
        ).stdout.split(b"\n")[:-1]

        def order(a: bytes, b: bytes) -> int:
            return filevercmp(a, b) or (a > b) - (a < b)

        ours = sorted((n.encode() for n in kept), key=functools.cmp_to_key(order))
        assert listed == ours

    def test_local_before_local_stig(self) -> None:
        """`30-local.rules` sorts before `30-local-stig.rules` (the suffix is cut first)."""
        assert filevercmp(b"30-local.rules", b"30-local-stig.rules") < 0


class TestDialect:
    """The live dialect comes from the installed script and the awk on systemd's PATH."""

    def test_debian_script(self, tmp_path: Path) -> None:
        r"""Debian's augenrules with mawk is audit <= 3.1, unquoted cat, no \s."""
        bindir = tmp_path / "bin"
        bindir.mkdir()
        assert AWKS["mawk"] is not None
        (bindir / "awk").symlink_to(AWKS["mawk"])
        dialects, how = augenrules_dialects(scripts=(str(SCRIPT),), path=str(bindir))
        assert {(d.listing, d.quoted_cat, d.strip_cr, d.awk_space) for d in dialects} == {
            ("ls", False, False, False)
        }
        assert str(SCRIPT) in how

    def test_rhel_script(self, tmp_path: Path) -> None:
        """The audit 3.1.1 to 4.1.2 script (RHEL 9, 10) with gawk: quoted cat, CR dropped."""
        script = tmp_path / "augenrules"
        script.write_text(_script("3.1.1"))
        bindir = tmp_path / "bin"
        bindir.mkdir()
        assert AWKS["gawk"] is not None
        (bindir / "awk").symlink_to(AWKS["gawk"])
        dialects, _ = augenrules_dialects(scripts=(str(script),), path=str(bindir))
        assert {(d.listing, d.quoted_cat, d.strip_cr, d.awk_space) for d in dialects} == {
            ("ls", True, True, True)
        }

    def test_unknown_awk_gives_both(self, tmp_path: Path) -> None:
        """An awk that is neither mawk nor gawk (busybox) is modelled both ways."""
        bindir = tmp_path / "bin"
        bindir.mkdir()
        (bindir / "awk").symlink_to("/bin/true")
        dialects, _ = augenrules_dialects(scripts=(str(SCRIPT),), path=str(bindir))
        assert {True, False} == {d.awk_space for d in dialects}

    def test_no_script_gives_every_version(self, tmp_path: Path) -> None:
        """Without an augenrules script every modelled version is judged."""
        dialects, how = augenrules_dialects(scripts=(str(tmp_path / "none"),))
        assert {"ls", "glob"} == {d.listing for d in dialects}
        assert "no augenrules script" in how


STIG = (
    "-a always,exit -F arch=b64 -S init_module,finit_module,delete_module"
    " -F auid>=1000 -F auid!=unset -k modules\n"
    "-a always,exit -F arch=b32 -S init_module,finit_module,delete_module"
    " -F auid>=1000 -F auid!=unset -k modules\n"
)
NEVER = "-a never,exit -S all\n"
GLOB = Augenrules(listing="glob", quoted_cat=True, strip_cr=True, awk_space=False, utf8=True)


@pytest.fixture(scope="module")
def en_us(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of an en_US.UTF-8 locale generated into a scratch LOCPATH."""
    localedef = shutil.which("localedef")
    if localedef is None or not os.path.exists("/usr/share/i18n/locales/en_US"):
        pytest.skip("needs localedef and the en_US locale source (tools/setup installs locales)")
    locpath = tmp_path_factory.mktemp("locales")
    subprocess.run(
        [localedef, "-i", "en_US", "-f", "UTF-8", str(locpath / "en_US.UTF-8")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return {"LOCPATH": str(locpath), "LC_ALL": "en_US.UTF-8"}


def _tied_rules_d(path: Path) -> Path:
    """x0.rules holds the STIG rules and x00.rules a `never` rule: sort -V ties the names."""
    rules_d = path / "rules.d"
    rules_d.mkdir()
    (rules_d / "x0.rules").write_text(STIG)
    (rules_d / "x00.rules").write_text(NEVER)
    return rules_d


class TestSortVTies:
    """Names that filevercmp ties (x0, x00) are ordered by the locale under `sort -zV`."""

    def test_real_sort_breaks_ties_by_locale(self, en_us: dict[str, str]) -> None:
        """The real `sort -zV` puts x00.rules first under en_US.UTF-8 and last under C."""
        orders = [
            subprocess.run(
                ["sort", "-zV"],
                input=b"x0.rules\0x00.rules\0",
                env={"PATH": "/usr/bin:/bin", **env},
                capture_output=True,
                check=True,
                timeout=60,
            ).stdout
            for env in ({"LC_ALL": "C"}, en_us)
        ]
        assert [b"x0.rules\0x00.rules\0", b"x00.rules\0x0.rules\0"] == orders

    @pytest.mark.parametrize("locale", ["C", "en_US.UTF-8"])
    def test_known_locale_as_the_real_script(
        self, tmp_path: Path, en_us: dict[str, str], locale: str
    ) -> None:
        """With the locale known, the one assembly is what the real 4.1.3 script writes."""
        rules_d = _tied_rules_d(tmp_path)
        scratch = tmp_path / "scratch"
        scratch.mkdir()
        env = en_us if locale != "C" else {"LC_ALL": "C"}
        real = real_augenrules(
            rules_d, scratch, awk="mawk", version="4.1.3", utf8=True, cwd=Path("/"), locale=env
        )
        ties = TieOrder(env=tuple(env.items()), how=f"the locale {locale}")
        (ours,) = assemble_rules_d_all(str(rules_d), (GLOB,), ties=ties)
        assert real == ours.file_text

    def test_unknown_locale_gives_every_order(self, tmp_path: Path, en_us: dict[str, str]) -> None:
        """With the locale unknown, the assemblies are those of the real script in C and en_US."""
        rules_d = _tied_rules_d(tmp_path)
        real = set()
        for env in ({"LC_ALL": "C"}, en_us):
            scratch = tmp_path / f"scratch-{env['LC_ALL']}"
            scratch.mkdir()
            real.add(
                real_augenrules(
                    rules_d,
                    scratch,
                    awk="mawk",
                    version="4.1.3",
                    utf8=True,
                    cwd=Path("/"),
                    locale=env,
                )
            )
        ours = {a.file_text for a in assemble_rules_d_all(str(rules_d), (GLOB,))}
        assert real == ours

    def test_offline_check_judges_the_worst_order(self, tmp_path: Path, run_cli: RunCli) -> None:
        """`check --offline DIR` is NOT COMPLIANT: in en_US the `never` rule loads first."""
        rules_d = _tied_rules_d(tmp_path)
        result = run_cli("check", "--offline", str(rules_d))
        assert (1, True) == (result.code, "x00.rules:1 `-a never,exit -S all`" in result.out)

    def test_each_requirement_is_its_worst_order(self, tmp_path: Path, run_cli: RunCli) -> None:
        """Each requirement is judged by the order that fails it, not by one order for all.

        Here the C order fails the module syscalls and passes the kmod executions, the
        en_US order the reverse: the JSON (and the checklists made from it) fail both.
        """
        rules_d = tmp_path / "rules.d"
        rules_d.mkdir()
        (rules_d / "x0.rules").write_text(
            "-a never,exit -F arch=b64 -S init_module\n"
            "-a always,exit -F path=/usr/bin/kmod -F perm=x -F auid>=1000 -F auid!=unset -k m\n"
        )
        (rules_d / "x00.rules").write_text(
            "-a never,exit -F path=/usr/bin/kmod -F perm=x\n" + STIG.replace("-k modules", "-k m")
        )
        result = run_cli("check", "--offline", str(rules_d), "--profile", "al2023-stig")
        statuses = {
            req["id"]: req["status"]
            for profile in json.loads(
                run_cli(
                    "check", "--offline", str(rules_d), "--profile", "al2023-stig",
                    "--format", "json",
                ).out
            )["sources"][0]["profiles"]
            for req in profile["requirements"]
        }  # fmt: skip
        assert (1, "fail", "fail") == (result.code, statuses["V-274091"], statuses["V-274093"])

    def test_too_many_orders_is_undecided(self, tmp_path: Path, run_cli: RunCli) -> None:
        """Beyond MAX_TIE_ORDERS orders that all pass, the verdict is CANNOT DECIDE (exit 3)."""
        rules_d = tmp_path / "rules.d"
        rules_d.mkdir()
        for zeros in range(6):  # 6 tied names with distinct content: 720 orders
            name = "x" + "0" * zeros + "1.rules"
            (rules_d / name).write_text(STIG.replace("-k modules", f"-k k{zeros}"))
        assert MAX_TIE_ORDERS < 720
        result = run_cli("check", "--offline", str(rules_d))
        assert (3, True) == (result.code, "sort -V ties some rules file names" in result.out)

    def test_locale_of_the_unit_orders_ties(self, tmp_path: Path, en_us: dict[str, str]) -> None:
        """Discovery orders tied names in the locale the unit gives augenrules, as the script."""
        rules_d = _tied_rules_d(tmp_path)
        root = tmp_path / "root"
        (root / "etc/audit").mkdir(parents=True)
        rules_d.rename(root / "etc/audit/rules.d")
        (root / "sbin").mkdir()
        (root / "sbin/augenrules").write_text(_script("4.1.3"))
        unit = root / "etc/systemd/system/auditd.service"
        unit.parent.mkdir(parents=True)
        environment = " ".join(f"{k}={v}" for k, v in en_us.items())
        unit.write_text(
            f"[Service]\nEnvironment={environment}\nExecStartPost=-/sbin/augenrules --load\n"
        )
        (root / "run/systemd/system").mkdir(parents=True)
        scratch = tmp_path / "scratch"
        scratch.mkdir()
        real = real_augenrules(
            root / "etc/audit/rules.d",
            scratch,
            awk="mawk",
            version="4.1.3",
            utf8=True,
            cwd=Path("/"),
            locale=en_us,
        )
        on_disk = discover_on_disk(str(root))
        assert on_disk is not None
        assert {real.split(b"\n", 1)[1]} == {
            a.file_text.split(b"\n", 1)[1] for a in on_disk.assemblies
        }

    def test_comment_only_files_do_not_multiply_orders(
        self, tmp_path: Path, run_cli: RunCli
    ) -> None:
        """Tied files that give awk no line can go anywhere: one order, judged COMPLIANT."""
        rules_d = tmp_path / "rules.d"
        rules_d.mkdir()
        (rules_d / "x1.rules").write_text(STIG)
        for zeros in range(1, 6):
            (rules_d / ("x" + "0" * zeros + "1.rules")).write_text(f"# note {zeros}\n\n")
        result = run_cli("check", "--offline", str(rules_d))
        assert 0 == result.code, result.out
