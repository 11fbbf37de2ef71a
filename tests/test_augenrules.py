"""rules.d assembled exactly as the real augenrules does (differential tests).

The real script (`/sbin/augenrules`, Debian's audit 3.0.9) runs on a scratch copy whose
paths point into a temporary directory; it is never given `--load`, so it neither reads nor
writes the host's /etc/audit and never talks to the kernel. It runs under mawk (Debian's awk)
and gawk (RHEL's), in the C and a UTF-8 locale, and as the audit 3.1.1 to 4.1.2 version
(`cat DIR/"$rules"` and a trailing CR dropped: RHEL 9 and 10), derived from it by that edit.
"""

from __future__ import annotations

import os
import shutil
import string
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmod_audit.errors import ParseError
from kmod_audit.system import (
    Augenrules,
    assemble_rules_d_all,
    augenrules_dialects,
    filevercmp,
)

SCRIPT = next((p for p in ("/sbin/augenrules", "/usr/sbin/augenrules") if os.path.exists(p)), None)
AWKS = {"mawk": shutil.which("mawk"), "gawk": shutil.which("gawk")}

pytestmark = pytest.mark.skipif(
    SCRIPT is None or None in AWKS.values(),
    reason="needs the real augenrules (auditd), mawk and gawk (tools/setup installs them)",
)

DEBIAN_CAT = "cat ${SourceRulesDir}/${rules}"
AWK_START = "} {\n"


def _script(version: str) -> str:
    """The installed augenrules, or the audit 3.1.1 to 4.1.2 version derived from it."""
    assert SCRIPT is not None
    text = Path(SCRIPT).read_text()
    if version == "3.1.1":
        assert DEBIAN_CAT in text
        assert AWK_START in text
        text = text.replace(DEBIAN_CAT, 'cat ${SourceRulesDir}/"${rules}"')
        text = text.replace(AWK_START, AWK_START + '        sub(/\\r$/, "");\n', 1)
    return text


def real_augenrules(
    rules_d: Path, scratch: Path, *, awk: str, version: str, utf8: bool, cwd: Path
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
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "LC_ALL": "C.UTF-8" if utf8 else "C"}
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
            return
        (ours,) = assemble_rules_d_all(
            str(rules_d), (dialect(awk=awk, version=version, utf8=utf8),), cwd=str(cwd)
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
