"""Differential test: our model of `auditctl -R` against the real auditctl and kernel.

Each case is loaded twice: into the host kernel with the real `auditctl -R` (after
`auditctl -D`; the `host_audit` fixture restores the host's rules and status afterwards),
and into our model with `parse_rules` + `load`. The two must agree on

- which lines fail (auditctl's "There was an error in line N" messages, which number the
  physical lines of the file exactly as our `Origin.line` does), and for one-line cases
  also on auditctl's exit status;
- what the kernel holds afterwards: `auditctl -l` parsed with `syntax="listing"` against
  the rules our loader holds, list by list and in kernel order;
- the enabled flag (`auditctl -s`); every case starts from `-e 0`, so `-e 1` shows.

`auditctl -R` writes its messages to syslog until the first rule reaches the kernel and
to stderr after that; we run it in a private mount namespace with our own /dev/log to
read both (see `_auditctl_load`).

Rules are compared by `Rule.identity()` (what the kernel compares to detect a duplicate:
list, action, fields *in order*, syscall mask, key) after one normalisation: `auditctl -l`
prints the `arch` fields first, before `-S`, wherever the rule had them, and keeps every
other field in kernel order (keys are a separate attribute of `Rule`). So we move the arch
fields of both sides to the front and compare the rest in order. That is stricter than the
order-insensitive `Rule.signature()`: it also catches a model that reorders fields, which
would break its duplicate detection (`Rule exists`).

The corpus is written for an x86_64 host (b32 is i386) and names paths of this kind of
machine (`/usr/bin/kmod`, `/etc`); it never loads `-e 2` or `-f 2`, nor
`--loginuid-immutable` (which cannot be undone without a reboot).

Cases where our model disagrees with the real auditctl are kept and marked
`xfail(strict=True)` with the precise reason: they are model bugs to fix, not noise.
"model bug" marks `parse_rules` + `load` on the rules file; "listing reader" marks cases
the loader gets right but whose `auditctl -l` output `parse_rules(syntax="listing")`
misreads (that is how `check --running` sees the kernel's rules).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import attrs
import pytest

from _support import (
    CliResult,
    HostAudit,
    RunCli,
    audit_status,
    auditctl,
    host_kmod_layout,
    require_or_skip,
)
from kmod_audit import netlink
from kmod_audit.loader import RuleSet, load, without
from kmod_audit.rules import NOT_READ, THIS_MACHINE, Rule, explain_syntax, parse_rules
from kmod_audit.syscalls import MACHINES

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        platform.machine() != "x86_64",
        reason="the corpus is written for an x86_64 host (b32 is i386)",
    ),
]

X86_64: Final = MACHINES["x86_64"]
KMOD: Final = "/usr/bin/kmod"
#: A directory that does not exist: a watch below it has no parent for the kernel.
MISSING_DIR: Final = "/nonexistent-kmod-audit-oracle"
#: A file that does not exist in a directory that does: the kernel accepts a watch on it.
MISSING_FILE: Final = "/tmp/kmod-audit-oracle-missing"
STIG: Final = "-F auid>=1000 -F auid!=unset -k module_chng"
B64_INIT: Final = "-a always,exit -F arch=b64 -S init_module"
B64_FINIT: Final = "-a always,exit -F arch=b64 -S finit_module"
#: auditctl reads a rules file with fgets() into a 6144-byte buffer.
AUDITCTL_LINE_SIZE: Final = 6144
#: The enabled flag every case starts from (0: nothing is recorded while we load rules).
ENABLED_BEFORE: Final = "0"
_ERROR_LINE: Final = re.compile(r"There was an error in line (\d+) of ")


def _model_bug(reason: str) -> pytest.MarkDecorator:
    """Mark a case where `parse_rules` + `load` disagree with auditctl and the kernel."""
    return pytest.mark.xfail(strict=True, reason=f"model bug: {reason}")


def _listing_bug(reason: str) -> pytest.MarkDecorator:
    """Mark a case our loader gets right but whose `auditctl -l` output we misread.

    `parse_rules(..., syntax="listing")` reads captured `auditctl -l` text. These are
    limits of that text: `check --running` reads the kernel over netlink instead, and
    TestNetlink checks that those same cases agree exactly.
    """
    return pytest.mark.xfail(strict=True, reason=f"listing reader: {reason}")


_FOREIGN_ARCH: Final = (
    "auditctl -l prints every 64-bit arch as `b64` (every 32-bit one as `b32`) and the "
    "syscall names in that arch's table, so `parse_rules(syntax='listing')` reads a "
    "foreign-arch rule back as a native one: `-F arch={arch} -S {name}` (number {number}) "
    "comes back as x86_64/i386 `{name}` ({native}); the text cannot say which arch it was"
)


@attrs.frozen
class Outcome:
    """What one side says a rules file does.

    Attributes:
        failed: The line numbers that fail to load.
        lists: Per filter list (exit, task, exclude, user, filesystem), the normalised
            identities of the rules it holds, in kernel order.
        enabled: The kernel's enabled flag afterwards.
    """

    failed: tuple[int, ...]
    lists: tuple[tuple[str, tuple[tuple[object, ...], ...]], ...]
    enabled: str


def _listed_identity(rule: Rule) -> tuple[object, ...]:
    """`Rule.identity()` with the arch fields first, the order `auditctl -l` prints them."""
    arch = [f for f in rule.fields if f.name == "arch" and not f.compare]
    rest = [f for f in rule.fields if f.name != "arch" or f.compare]
    return attrs.evolve(rule, fields=(*arch, *rest)).identity()


def _lists(ruleset: RuleSet) -> tuple[tuple[str, tuple[tuple[object, ...], ...]], ...]:
    return tuple(
        (name, tuple(_listed_identity(rule) for rule in getattr(ruleset, name)))
        for name in ("exit", "task", "exclude", "user", "filesystem")
    )


def _model(text: str) -> Outcome:
    """Our prediction for `auditctl -D; auditctl -R FILE` with `text` as FILE."""
    source = parse_rules(
        text, path="oracle.rules", machine=X86_64, syntax="rules", files=THIS_MACHINE
    )
    return _outcome(load(source, files=THIS_MACHINE))


def _outcome(ruleset: RuleSet) -> Outcome:
    """What the model says a loaded rule set is."""
    enabled = ENABLED_BEFORE if ruleset.enabled is None else str(ruleset.enabled)
    return Outcome(
        failed=tuple(sorted({issue.origin.line for issue in ruleset.issues})),
        lists=_lists(ruleset),
        enabled=enabled,
    )


def _auditctl_load(text: str, workdir: Path) -> tuple[int, str]:
    """`auditctl -D`, then `auditctl -R FILE`; return the exit status and every message.

    `auditctl -R` sends its messages to syslog until the first rule reaches the kernel and
    to stderr after that (handle_request switches the message mode back to stderr). This
    machine has no syslog daemon, so we run auditctl in a private mount namespace whose
    /dev holds our own /dev/log socket, and collect both streams.
    """
    if "-e 2" in text or "-f 2" in text:
        msg = "refusing to load -e 2 / -f 2 on the host"
        raise AssertionError(msg)
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is needed to capture auditctl's syslog messages")
    auditctl("-D")
    # A known enabled flag makes `-e` lines observable (the fixture restores the host's).
    auditctl("-e", ENABLED_BEFORE)
    rules = workdir / "oracle.rules"
    rules.write_bytes(text.encode())
    rules.chmod(0o600)  # auditctl refuses a rules file that others may write
    dev = workdir / "dev"
    dev.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as syslog:
        syslog.bind(str(dev / "log"))
        proc = subprocess.run(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                'mount --bind "$1" /dev && exec auditctl -R "$2"',
                "sh",
                str(dev),
                str(rules),
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        syslog.settimeout(0.0)  # non-blocking: read what was queued
        messages = [proc.stderr.decode(errors="replace")]
        while True:
            try:
                messages.append(syslog.recv(65536).decode(errors="replace") + "\n")
            except BlockingIOError:
                break
    return proc.returncode, "".join(messages)


def _real(host_audit: HostAudit, text: str, workdir: Path) -> tuple[Outcome, int, str]:
    """Load `text` with the real auditctl; return the outcome, exit status and messages."""
    status, messages = _auditctl_load(text, workdir)
    listing = host_audit.listing()
    listed = parse_rules(listing, path="auditctl -l", machine=X86_64, syntax="listing")
    assert () == listed.rejections, f"auditctl -l output we cannot parse:\n{listing}"
    failed = tuple(sorted({int(n) for n in _ERROR_LINE.findall(messages)}))
    outcome = Outcome(
        failed=failed,
        lists=_lists(load(listed, files=THIS_MACHINE)),
        enabled=audit_status().get("enabled", "?"),
    )
    return outcome, status, messages


# --------------------------------------------------------------------------------------
# One line per case.

_LONG_LINE: Final = f"{B64_INIT} -S " + ",".join(["finit_module"] * 520) + " -k long"
assert len(_LONG_LINE) >= AUDITCTL_LINE_SIZE

# --------------------------------------------------------------------------------------
# Kernel semantics the model lacked (issue 16 item 8): what auditctl -R and the kernel
# accept.

B64_EXECVE: Final = "-a always,exit -F arch=b64 -S execve"
STIG_B64: Final = f"{B64_INIT},finit_module,delete_module {STIG}"
STIG_B32: Final = f"-a always,exit -F arch=b32 -S init_module,finit_module,delete_module {STIG}"
_EXE_LISTED: Final = (
    "auditctl -l prints an exe!= field as `exe=` (print_rule ignores its operator): the "
    "listing cannot say which the kernel holds; check reads both ways (the field is "
    "ambiguous and judged as unknown), and netlink has the operator"
)
_NEVER_WATCH: Final = (
    "auditctl -l prints a rule of only path=/dir=/perm= fields with every syscall as a "
    "watch (`-w PATH -p PERMS` or ` -p PERMS`), which has no action: a never rule reads "
    "back as an always one"
)

#: Each field given twice in one rule: the kernel (audit_data_to_entry) refuses a second
#: exe=, path=, dir=, inode= or key field (EINVAL) and takes every other field again.
_TWICE: Final = (
    ("exe", f"exe={KMOD}", "exe=/usr/sbin/modprobe"),
    ("exe-same", f"exe={KMOD}", f"exe={KMOD}"),
    ("exe-eq-ne", f"exe={KMOD}", "exe!=/usr/bin/true"),
    ("exe-ne-ne", f"exe!={KMOD}", "exe!=/usr/bin/true"),
    ("exe-missing-parent-first", f"exe={MISSING_DIR}/kmod", f"exe={KMOD}"),
    ("dir", "dir=/usr/bin", "dir=/usr/sbin"),
    ("path-dir", f"path={KMOD}", "dir=/usr/sbin"),
    ("inode", "inode=5", "inode=6"),
    ("inode-eq-ne", "inode=5", "inode!=6"),
    ("inode-ne-ne", "inode!=5", "inode!=6"),
    ("inode-ne-path", "inode!=5", f"path={KMOD}"),
    ("path-inode", f"path={KMOD}", "inode=5"),
    ("filetype", "filetype=file", "filetype=dir"),
    ("subj-user", "subj_user=a", "subj_user=b"),
    ("subj-sen", "subj_sen=s0", "subj_sen=s1"),
    ("obj-type", "obj_type=a", "obj_type=b"),
    ("success", "success=1", "success=0"),
    ("sessionid", "sessionid=1", "sessionid=2"),
    ("a0", "a0=1", "a0=2"),
    ("exit", "exit=1", "exit=2"),
    ("devmajor", "devmajor=1", "devmajor=2"),
    ("auid", "auid=1", "auid=unset"),
    ("uid", "uid=1", "uid=2"),
    ("gid", "gid=1", "gid=2"),
    ("pid", "pid=1", "pid=2"),
    ("ppid", "ppid=1", "ppid=2"),
    ("pers", "pers=1", "pers=2"),
    ("saddr-fam", "saddr_fam=1", "saddr_fam=2"),
    ("obj-uid", "obj_uid=1", "obj_uid=2"),
    ("field-compare", "field_compare=1", "field_compare=1"),
    ("exe-path", f"exe={KMOD}", f"path={KMOD}"),
)

_LOADING_LINES: Final = [
    # -- (a) fields the kernel takes once per rule --------------------------------------
    *(
        pytest.param(f"{B64_EXECVE} -F {first} -F {second} -k m", id=f"twice-{name}")
        for name, first, second in _TWICE
    ),
    pytest.param(f"{B64_EXECVE} -C uid!=auid -C uid!=auid -k m", id="twice-compare"),
    pytest.param(f"-a always,exclude -F exe={KMOD} -F exe=/usr/bin/true", id="twice-exe-exclude"),
    pytest.param(f"-a always,task -F exe={KMOD} -F exe=/usr/bin/true", id="twice-exe-task"),
    pytest.param(f"-a always,task -F exe={KMOD}", id="task-exe"),
    # -- (b) a CR (CRLF line ending) on each kind of line --------------------------------
    pytest.param("-D\r", id="cr-delete-all"),
    pytest.param("-D -k m\r", id="cr-delete-all-key"),
    pytest.param("-Dx", id="delete-all-glued-letter"),
    pytest.param("-c\r", id="cr-continue"),
    pytest.param("-ci", id="continue-ignore-glued"),
    pytest.param("-s\r", id="cr-status"),
    pytest.param("-l\r", id="cr-list"),
    pytest.param("-v\r", id="cr-version"),
    pytest.param("-e 1\r", id="cr-enable"),
    pytest.param("-f 1\r", id="cr-failure"),
    pytest.param("-b 8192\r", id="cr-backlog"),
    pytest.param("-r 0\r", id="cr-rate"),
    pytest.param("--backlog_wait_time 60000\r", id="cr-backlog-wait-time"),
    pytest.param("--backlog_wait_time=60000\r", id="cr-backlog-wait-time-equals"),
    pytest.param(f"{B64_INIT}\r", id="cr-after-syscall"),
    pytest.param("-a always,exit\r", id="cr-after-list"),
    pytest.param("-a always,exit -F arch=b64\r", id="cr-after-arch"),
    pytest.param(f"-w {KMOD}\r", id="cr-after-watch"),
    pytest.param(f"-w {KMOD} -p x -k m\r", id="cr-after-watch-key"),
    pytest.param(f"-a always,exit -S all -k m -F exe={KMOD}\r", id="cr-after-exe"),
    pytest.param(f"-a always,exit -F perm=x -F path={KMOD}\r", id="cr-after-path"),
    pytest.param(f"-a always,exit -F path={KMOD} -F perm=x\r", id="cr-after-perm-field"),
    pytest.param(f"{B64_INIT} -F key=m\r", id="cr-after-key-field"),
    # -- (c) perm= without -S, a watch, path= or dir=: auditctl adds -S all ---------------
    pytest.param("-a always,exit -F perm=x -k x", id="perm-only-key"),
    pytest.param("-a always,exit -F perm=x", id="perm-only-no-key"),
    pytest.param("-a always,exit -F perm=wa -F key=x", id="perm-only-key-field"),
    pytest.param("-a always,exit -F perm=x -F auid>=1000 -k x", id="perm-then-auid-key"),
    pytest.param("-a always,exit -F auid>=1000 -F perm=x -k x", id="auid-then-perm-key"),
    pytest.param("-a always,exit -F arch=b32 -F perm=x -k x", id="perm-only-b32"),
    pytest.param("-a always,exit -F auid>=1000 -k x", id="no-perm-key"),
    pytest.param("-a always,task -F perm=x -k x", id="perm-only-task"),
    pytest.param("-d always,exit -F perm=x -k x", id="perm-only-delete-missing"),
    pytest.param("-a never,exit -F perm=x", id="perm-only-never", marks=_listing_bug(_NEVER_WATCH)),
    pytest.param(
        f"-a never,exit -F path={KMOD} -F perm=x -k m",
        id="never-path-rule",
        marks=_listing_bug(_NEVER_WATCH),
    ),
    # -- (d) exe!= (auditctl -l prints it as exe=) ---------------------------------------
    pytest.param(
        f"{B64_EXECVE} -F exe!={KMOD} -k m", id="exe-not-equal", marks=_listing_bug(_EXE_LISTED)
    ),
    pytest.param(f"{B64_EXECVE} -F exe={KMOD} -k m", id="exe-equal-execve"),
]

SINGLE_LINES: Final = [
    # -- module syscall rules as the standards write them -----------------------------
    pytest.param(f"{B64_INIT},finit_module,delete_module {STIG}", id="stig-b64"),
    pytest.param(
        "-a always,exit -F arch=b32 -S init_module,finit_module,delete_module -F auid>=1000 "
        "-F auid!=-1 -k module_chng",
        id="stig-b32-auid-minus-1",
    ),
    pytest.param(
        "-a always,exit -F arch=b64 -S create_module,init_module,delete_module,query_module,"
        "finit_module -F auid>=1000 -F auid!=4294967295 -k kernel_modules",
        id="cis-b64-auid-4294967295",
    ),
    pytest.param(
        "-a always,exit -F arch=b64 -S create_module -F auid>=1000 -F auid!=unset -k module-change",
        id="al2023-create-module",
    ),
    pytest.param("-a always,exit -F arch=b32 -S create_module,query_module -k m", id="b32-create"),
    # -- -S spellings -----------------------------------------------------------------
    pytest.param("-a always,exit -S init_module,delete_module -k m", id="S-native-no-arch"),
    pytest.param("-a always,exit -S 175 -k m", id="S-number-no-arch"),
    pytest.param(f"{B64_INIT} -S 0xb0 -k m", id="S-hex-number"),
    pytest.param("-a always,exit -F arch=b64 -S 0257 -k m", id="S-octal-number"),
    pytest.param(
        "-a always,exit -F arch=b64 -S 2047 -k m",
        id="S-2047-syscall-class",
        marks=_model_bug(
            "the kernel reads the top 16 bits of the syscall mask (numbers 2032-2047, "
            "AUDIT_SYSCALL_CLASSES) as syscall classes: `-S 2047` is class 0, every "
            "directory-writing syscall (rename, mkdir, rmdir, creat, link, unlink, ...), "
            "`-S 2032` an empty mask; the model drops those bits without listing the class "
            "members (no class holds a module syscall or execve, so coverage is unaffected)"
        ),
    ),
    pytest.param("-a always,exit -F arch=b64 -S 2031 -k m", id="S-2031"),
    pytest.param("-a always,exit -F arch=b64 -S 2048 -k m", id="S-2048-too-big"),
    pytest.param("-a always,exit -F arch=b64 -S -1 -k m", id="S-negative"),
    pytest.param("-a always,exit -F arch=b64 -S all -k m", id="S-all-b64"),
    pytest.param("-a always,exit -S all -F auid>=1000 -k m", id="S-all-no-arch"),
    pytest.param(f"{B64_INIT} -S all -k m", id="S-name-then-all"),
    pytest.param("-a always,exit -F arch=b64 -S all -S init_module -k m", id="S-all-then-name"),
    pytest.param(f"{B64_INIT} -S finit_module -k m", id="S-twice"),
    pytest.param(f"{B64_INIT},,finit_module -k m", id="S-empty-entry"),
    pytest.param(f"{B64_INIT}, -k m", id="S-trailing-comma"),
    pytest.param(
        "-a always,exit -F arch=b64 -S , -F auid>=1000 -k m",
        id="S-comma-only",
    ),
    pytest.param("-a always,exit -F arch=b64 -S no_such_call -k m", id="S-unknown-name"),
    pytest.param("-S init_module -a always,exit -k m", id="S-before-a"),
    pytest.param("-a always,exit -F arch=b64 -k m", id="no-S-key"),
    pytest.param("-a always,exit -F arch=b64", id="no-S-no-key"),
    # -- -F arch ----------------------------------------------------------------------
    pytest.param("-a always,exit -S init_module -F arch=b64 -k m", id="arch-after-S"),
    pytest.param("-a always,exit -F auid>=1000 -F arch=b64 -S init_module -k m", id="arch-2nd"),
    pytest.param("-a always,exit -F arch=b64 -F arch=b32 -S init_module -k m", id="arch-twice"),
    pytest.param("-a always,exit -F arch=i386 -S init_module -k m", id="arch-i386"),
    pytest.param("-a always,exit -F arch=i686 -S init_module -k m", id="arch-i686"),
    pytest.param("-a always,exit -F arch=x86_64 -S init_module -k m", id="arch-x86_64"),
    pytest.param(
        "-a always,exit -F arch=aarch64 -S init_module -k m",
        id="arch-aarch64",
        marks=_listing_bug(
            _FOREIGN_ARCH.format(arch="aarch64", name="init_module", number=105, native=175)
        ),
    ),
    pytest.param("-a always,exit -F arch=aarch64 -S create_module -k m", id="arch-aarch64-create"),
    pytest.param(
        "-a always,exit -F arch=armv7l -S finit_module -k m",
        id="arch-armv7l",
        marks=_listing_bug(
            _FOREIGN_ARCH.format(arch="armv7l", name="finit_module", number=379, native=350)
        ),
    ),
    pytest.param(
        "-a always,exit -F arch=ppc64le -S init_module -k m",
        id="arch-ppc64le",
        marks=_listing_bug(
            "auditctl -l prints the ppc64le rule as `-F arch=b64 -S init_module`, which "
            "`parse_rules(syntax='listing')` reads as the x86_64 rule (arch c000003e, "
            "syscall 175): the kernel holds arch c0000015 and syscall 128"
        ),
    ),
    pytest.param("-a always,exit -F arch=0xc000003e -S init_module -k m", id="arch-hex"),
    pytest.param("-a always,exit -F arch=3221225534 -S init_module -k m", id="arch-decimal"),
    pytest.param("-a always,exit -F arch=B64 -S init_module -k m", id="arch-uppercase-B64"),
    pytest.param("-a always,exit -F arch=b16 -S init_module -k m", id="arch-unknown"),
    pytest.param("-a always,exit -F arch!=b32 -S init_module -k m", id="arch-not-equal"),
    pytest.param("-a always,exit -F arch>=b64 -S init_module -k m", id="arch-ge"),
    # -- uid fields -------------------------------------------------------------------
    pytest.param(f"{B64_INIT} -F auid=unset -k m", id="auid-eq-unset"),
    pytest.param(f"{B64_INIT} -F auid>=-1 -k m", id="auid-ge-minus-1"),
    pytest.param(f"{B64_INIT} -F auid<unset -k m", id="auid-lt-unset"),
    pytest.param(f"{B64_INIT} -F auid>=01750 -k m", id="auid-octal"),
    pytest.param(f"{B64_INIT} -F auid>=0x3e8 -k m", id="auid-hex"),
    pytest.param(f"{B64_INIT} -F auid>=1000abc -k m", id="auid-trailing-junk"),
    pytest.param(f"{B64_INIT} -F auid=root -k m", id="auid-username"),
    pytest.param(f"{B64_INIT} -F auid=nosuchuser-kmod -k m", id="auid-unknown-user"),
    pytest.param(f"{B64_INIT} -F auid=>1000 -k m", id="auid-eq-gt"),
    pytest.param(f"{B64_INIT} -F loginuid>=1000 -k m", id="loginuid-alias"),
    pytest.param(f"{B64_INIT} -F uid=-1 -k m", id="uid-minus-1"),
    pytest.param(f"{B64_INIT} -F uid=4294967295 -k m", id="uid-4294967295"),
    pytest.param(f"{B64_INIT} -F uid=root -k m", id="uid-username"),
    pytest.param(f"{B64_INIT} -F euid=0 -F suid!=0 -F fsuid<1000 -k m", id="euid-suid-fsuid"),
    pytest.param(f"{B64_INIT} -F obj_uid=0 -k m", id="obj-uid"),
    pytest.param(f"{B64_INIT} -F uid&1 -k m", id="uid-bitmask"),
    pytest.param(f"{B64_INIT} -F auid&=1000 -k m", id="auid-bittest"),
    # -- gid fields -------------------------------------------------------------------
    pytest.param(f"{B64_INIT} -F gid=root -k m", id="gid-groupname"),
    pytest.param(f"{B64_INIT} -F egid=0 -F sgid>0 -F fsgid<=10 -k m", id="egid-sgid-fsgid"),
    pytest.param(f"{B64_INIT} -F sgid=-1 -k m", id="gid-minus-1"),
    pytest.param(f"{B64_INIT} -F gid=4294967295 -k m", id="gid-4294967295"),
    pytest.param(f"{B64_INIT} -F fsgid=nosuchgroup-kmod -k m", id="gid-unknown-group"),
    pytest.param(f"{B64_INIT} -F obj_gid=0 -k m", id="obj-gid"),
    # -- other numeric fields ---------------------------------------------------------
    pytest.param(f"{B64_INIT} -F pid=1 -F ppid>1 -k m", id="pid-ppid"),
    pytest.param(f"{B64_INIT} -F pid=-5 -k m", id="pid-negative"),
    pytest.param(
        f"{B64_INIT} -F pid=9223372036854775808 -k m",
        id="pid-2-pow-63",
    ),
    pytest.param(
        f"{B64_INIT} -F pid=4294967295 -k m",
        id="pid-4294967295",
    ),
    pytest.param(f"{B64_INIT} -F pid&1 -k m", id="pid-bitmask"),
    pytest.param(f"{B64_INIT} -F pers=0 -F pers!=0x0008 -k m", id="pers"),
    pytest.param(f"{B64_INIT} -F sessionid=1 -k m", id="sessionid"),
    pytest.param(f"{B64_INIT} -F sessionid!=unset -k m", id="sessionid-unset"),
    pytest.param(f"{B64_INIT} -F exit=-EPERM -k m", id="exit-errno-name"),
    pytest.param(f"{B64_INIT} -F exit=-1 -k m", id="exit-minus-1"),
    pytest.param(f"{B64_INIT} -F exit=0 -k m", id="exit-zero"),
    pytest.param(f"{B64_INIT} -F exit=EPERM -k m", id="exit-positive-name"),
    pytest.param(f"{B64_INIT} -F exit=-EBOGUS -k m", id="exit-unknown-errno"),
    pytest.param(f"{B64_INIT} -F exit&1 -k m", id="exit-bitmask"),
    pytest.param(f"{B64_INIT} -F success=1 -k m", id="success-1"),
    pytest.param(f"{B64_INIT} -F success=0 -k m", id="success-0"),
    pytest.param(f"{B64_INIT} -F success=2 -k m", id="success-2"),
    pytest.param(f"{B64_INIT} -F success=yes -k m", id="success-word"),
    pytest.param(f"{B64_INIT} -F devmajor=8 -F devminor!=0 -k m", id="devmajor-devminor"),
    pytest.param(f"{B64_INIT} -F pers&1 -F pers&=8 -k m", id="pers-bit-operators"),
    pytest.param(f"{B64_INIT} -F devminor&1 -k m", id="devminor-bitmask"),
    pytest.param(f"{B64_INIT} -F devmajor&1 -k m", id="devmajor-bitmask"),
    pytest.param(f"{B64_INIT} -F subj_user<x -k m", id="lsm-name-ordered"),
    pytest.param(f"{B64_INIT} -F obj_type&x -k m", id="lsm-name-bitmask"),
    pytest.param(f"{B64_INIT} -F subj_sen<s0 -k m", id="lsm-level-ordered"),
    pytest.param(f"{B64_INIT} -F filetype<file -k m", id="filetype-ordered"),
    pytest.param(f"{B64_INIT} -F field_compare&1 -k m", id="field-compare-bitmask"),
    pytest.param(f"{B64_INIT} -F key!=m", id="key-not-equal-is-the-key"),
    pytest.param(f"{B64_INIT} -F key<m", id="key-ordered"),
    pytest.param(f"{B64_INIT} -F key&m", id="key-bitmask"),
    pytest.param(f"{B64_INIT} -F key!=m -k n", id="key-field-and-k"),
    pytest.param(f"{B64_INIT} -F key!=m -F key!=n", id="two-key-fields"),
    pytest.param(f"{B64_INIT} -F key=a -F key!=m", id="key-equal-and-key-field"),
    pytest.param("-a always,exit -F arch=b64 -F key!=m -S init_module", id="key-field-first"),
    pytest.param("-a always,exclude -F msgtype=1300 -F key!=m", id="key-field-on-exclude"),
    pytest.param(f"{B64_INIT} -F inode=1234 -k m", id="inode"),
    pytest.param(f"{B64_INIT} -F inode<5 -k m", id="inode-lt"),
    pytest.param(f"{B64_INIT} -F a0=0x1 -F a1&4 -F a2&=0x10 -F a3=-1 -k m", id="args-ops"),
    pytest.param(f"{B64_INIT} -F a0<10 -F a1>0 -F a2<=3 -F a3>=1 -k m", id="args-compare"),
    pytest.param(f"{B64_INIT} -F a0=abc -k m", id="arg-word"),
    pytest.param(f"{B64_INIT} -F saddr_fam=2 -k m", id="saddr-fam"),
    pytest.param(f"{B64_INIT} -F saddr_fam=99 -k m", id="saddr-fam-too-big"),
    pytest.param(
        f"{B64_INIT} -F filetype=file -k m",
        id="filetype",
    ),
    pytest.param(f"{B64_INIT} -F filetype=bogus -k m", id="filetype-unknown"),
    pytest.param(f"{B64_INIT} -F perm=x -k m", id="perm-without-path"),
    pytest.param(f"{B64_INIT} -F perm=z -k m", id="perm-bad-letter"),
    pytest.param(f"{B64_INIT} -F perm=rwxax -k m", id="perm-too-long"),
    pytest.param(f"{B64_INIT} -F perm!=x -k m", id="perm-not-equal"),
    pytest.param(f"{B64_INIT} -F msgtype=SYSCALL -k m", id="msgtype-on-exit"),
    pytest.param(f"{B64_INIT} -F fstype=debugfs -k m", id="fstype-on-exit"),
    pytest.param(f"{B64_INIT} -F subj_user=root -k m", id="subj-user-no-lsm"),
    pytest.param(f"{B64_INIT} -F obj_type=bin_t -k m", id="obj-type-no-lsm"),
    pytest.param(f"{B64_INIT} -F bogus=1 -k m", id="field-unknown"),
    pytest.param(f"{B64_INIT} -F auid -k m", id="field-no-operator"),
    pytest.param(f"{B64_INIT} -F auid= -k m", id="field-no-value"),
    pytest.param(f"{B64_INIT} -F =1 -k m", id="field-no-name"),
    pytest.param(f"{B64_INIT} -F loginuid_set=1 -k m", id="field-loginuid-set"),
    pytest.param(
        f"{B64_INIT} -F field_compare=1 -k m",
        id="field-field-compare",
    ),
    # -- execution rules (path=, dir=, exe=) ------------------------------------------
    pytest.param(f"-a always,exit -F path={KMOD} -F perm=x {STIG}", id="path-generate-form"),
    pytest.param("-a always,exit -F path=usr/bin/kmod -F perm=x -k m", id="path-relative"),
    pytest.param("-a always,exit -F path=/usr/bin/ -F perm=x -k m", id="path-trailing-slash"),
    pytest.param(f"-a always,exit -F path={MISSING_DIR}/kmod -F perm=x -k m", id="path-no-parent"),
    pytest.param(f"-a always,exit -F path!={KMOD} -F perm=x -k m", id="path-not-equal"),
    pytest.param(f"-a always,exit -F path={KMOD} -F path=/usr/bin/true -k m", id="path-twice"),
    pytest.param(
        "-a always,exit -F path=/usr/bin -F perm=x -k m",
        id="path-on-directory",
        marks=_listing_bug(
            "auditctl -l prints both path= and dir= watch rules as `-w PATH`; the listing "
            "reader reads this path=/usr/bin rule (a watch on the directory inode itself) "
            "as dir=/usr/bin marked ambiguous, so the evaluator does not count it for "
            "/usr/bin/kmod, but the identity differs from the file's path="
        ),
    ),
    pytest.param(f"-a always,exit -F arch=b64 -S execve -F path={KMOD} -k m", id="path-with-S"),
    pytest.param("-a always,exit -F dir=/usr/bin -F perm=x -k m", id="dir"),
    pytest.param(f"-a always,exit -F dir={MISSING_DIR} -F perm=x -k m", id="dir-missing"),
    pytest.param(
        f"-a always,exit -F dir={KMOD} -F perm=x -k m",
        id="dir-on-file",
        marks=_listing_bug(
            "auditctl -l prints this dir= tree watch on a file as `-w FILE`, which the "
            "listing reader takes as path= (marked ambiguous: both readings cover that file "
            "alike); the identities differ"
        ),
    ),
    pytest.param(f"-a always,exit -F exe={KMOD} -k m", id="exe"),
    pytest.param(f"-a always,exit -F exe>{KMOD} -k m", id="exe-gt"),
    pytest.param(
        f"-a always,exit -F exe={MISSING_DIR}/kmod -k m",
        id="exe-no-parent",
    ),
    pytest.param(
        "-a always,exit -F exe=kmod -k m",
        id="exe-relative",
    ),
    # -- keys -------------------------------------------------------------------------
    pytest.param(f"{B64_INIT} -F key=m", id="key-as-field"),
    pytest.param(f"{B64_INIT} -k a -k b", id="keys-two-k"),
    pytest.param(f"{B64_INIT} -k a -F key=b", id="keys-k-and-field"),
    pytest.param(
        "-a always,exit -F arch=b64 -F key=m -S init_module",
        id="key-field-before-S",
    ),
    pytest.param("-a always,exit -F arch=b64 -k m -S init_module", id="key-k-before-S"),
    pytest.param(f"{B64_INIT} -k {'k' * 256}", id="key-256-bytes"),
    pytest.param(f"{B64_INIT} -k {'k' * 257}", id="key-257-bytes"),
    pytest.param(f"{B64_INIT} -k {'a' * 127} -k {'b' * 128}", id="keys-joined-256"),
    pytest.param(f"{B64_INIT} -k {'a' * 128} -k {'b' * 128}", id="keys-joined-257"),
    pytest.param(f"{B64_INIT} -F key=", id="key-field-empty"),
    pytest.param(f"{B64_INIT} -F key=a=b", id="key-with-equals"),
    pytest.param(f"{B64_INIT} -kmodules", id="key-glued"),
    pytest.param(f"{B64_INIT} -k a\x01b", id="key-with-separator"),
    pytest.param("-k m", id="key-alone"),
    # -- watches ----------------------------------------------------------------------
    pytest.param(f"-w {KMOD} -p x -k modules", id="watch-kmod"),
    pytest.param(f"-w {KMOD} -k modules", id="watch-default-perms"),
    pytest.param(f"-w {KMOD} -p x", id="watch-no-key"),
    pytest.param(f"-w {KMOD} -k m -p x", id="watch-key-before-perm"),
    pytest.param(f"-w {KMOD} -p r -p x -k m", id="watch-perm-twice"),
    pytest.param(f"-w {KMOD} -p X -k m", id="watch-perm-uppercase"),
    pytest.param(f"-w {KMOD} -p y -k m", id="watch-perm-bad"),
    pytest.param(f"-w {KMOD} -p rwxax -k m", id="watch-perm-too-long"),
    pytest.param(f"-w {KMOD} -p x -S execve -k m", id="watch-with-S"),
    pytest.param("-w /etc -p wa -k m", id="watch-directory"),
    pytest.param(
        "-w /etc/ -p wa -k m",
        id="watch-directory-trailing-slash",
    ),
    pytest.param(
        f"-w {MISSING_FILE}-dir/ -p x -k m",
        id="watch-missing-dir-trailing-slash",
    ),
    pytest.param("-w /sbin/insmod -p x -k m", id="watch-symlink"),
    pytest.param(f"-w {MISSING_FILE} -p x -k m", id="watch-missing-file"),
    pytest.param(f"-w {MISSING_DIR}/kmod -p x -k m", id="watch-missing-parent"),
    pytest.param("-w usr/bin/kmod -p x", id="watch-relative"),
    pytest.param("-w /usr/bin/../bin/kmod -p x -k m", id="watch-dotdot"),
    pytest.param("-w /usr/bin/km* -p x -k m", id="watch-wildcard"),
    pytest.param(f"-w /tmp/{'n' * 256} -p x", id="watch-name-too-long"),
    pytest.param("-w /tmp/kmod\\\\audit -p x -k m", id="watch-escaped-backslash"),
    pytest.param(f"-a always,exit -w {KMOD} -p x", id="watch-after-a"),
    pytest.param("-p x", id="perm-without-watch"),
    pytest.param(f"-W {KMOD} -p x -k m", id="unwatch-missing"),
    # -- lists and actions ------------------------------------------------------------
    pytest.param("-a exit,always -F arch=b64 -S init_module -k m", id="exit-always-reversed"),
    pytest.param(f"{B64_INIT.replace('always', 'never')}", id="never-exit"),
    pytest.param(f"{B64_INIT.replace('-a', '-A')} -k m", id="prepend"),
    pytest.param("-a always,task -F uid=0", id="task"),
    pytest.param("-a never,task -F auid=unset", id="task-never-unset"),
    pytest.param("-a always,task -S init_module", id="task-with-S"),
    pytest.param("-S init_module -a always,task", id="task-after-S"),
    pytest.param("-a always,task -F exit=0", id="task-exit-field"),
    pytest.param(
        "-a always,task -C uid!=euid",
        id="task-compare",
    ),
    pytest.param("-a always,user -F uid=0", id="user"),
    pytest.param("-a never,user -F msgtype=USER_LOGIN", id="user-msgtype"),
    pytest.param("-a always,user -S init_module", id="user-with-S"),
    pytest.param("-a always,exclude -F msgtype=CWD", id="exclude-msgtype"),
    pytest.param("-a never,exclude -F msgtype>=1300 -F msgtype<=1399", id="exclude-range"),
    pytest.param("-a always,exclude -F msgtype=NO_SUCH_TYPE", id="exclude-unknown-type"),
    pytest.param("-a always,exclude -F arch=b64", id="exclude-arch"),
    pytest.param("-a always,exclude -S init_module", id="exclude-with-S"),
    pytest.param(f"-a always,exclude -F exe={KMOD}", id="exclude-exe"),
    pytest.param("-a never,filesystem -F fstype=debugfs", id="filesystem"),
    pytest.param("-a always,filesystem -F fstype=tracefs -k m", id="filesystem-key"),
    pytest.param("-a never,filesystem -F fstype=ext4", id="filesystem-unknown-fstype"),
    pytest.param(
        "-a never,filesystem -F fstype=debugfs -F uid=0",
        id="filesystem-uid",
    ),
    pytest.param("-a always,entry -S init_module", id="entry-list"),
    pytest.param("-a always,bogus", id="list-unknown"),
    pytest.param("-a sometimes,exit", id="action-unknown"),
    pytest.param("-a always", id="list-missing"),
    pytest.param("-a always,exit,task", id="list-three-words"),
    pytest.param(
        "-a possible,exit -S init_module",
        id="action-possible-first",
    ),
    pytest.param("-a exit,possible -S init_module", id="action-possible-second"),
    pytest.param("-a always,exit -a always,exit", id="a-twice"),
    pytest.param(f"{B64_INIT.replace('-a', '-d')} -k m", id="delete-missing-rule"),
    # -- -C comparisons ---------------------------------------------------------------
    pytest.param(
        f"{B64_INIT} -C auid!=uid -k m",
        id="compare-auid-uid",
    ),
    pytest.param(f"{B64_INIT} -C uid=euid -k m", id="compare-uid-euid"),
    pytest.param(f"{B64_INIT} -C auid!=obj_uid -k m", id="compare-auid-obj-uid"),
    pytest.param(f"{B64_INIT} -C gid!=egid -k m", id="compare-gid-egid"),
    pytest.param(f"{B64_INIT} -C uid>euid -k m", id="compare-gt"),
    pytest.param(f"{B64_INIT} -C uid=pid -k m", id="compare-not-comparable"),
    # -- control lines ----------------------------------------------------------------
    pytest.param("-e 1", id="enable-1"),
    pytest.param("-e 0", id="enable-0"),
    pytest.param("-e 3", id="enable-3"),
    pytest.param("-f 1", id="failure-1"),
    pytest.param("-f 9", id="failure-9"),
    pytest.param("-b 8192", id="backlog"),
    pytest.param("-b lots", id="backlog-word"),
    pytest.param("-r 0", id="rate"),
    pytest.param("--backlog_wait_time 60000", id="backlog-wait-time"),
    pytest.param("--backlog_wait_time=60000", id="backlog-wait-time-equals"),
    pytest.param("-D", id="delete-all"),
    pytest.param("-D -k m", id="delete-all-key"),
    pytest.param("-D now", id="delete-all-stray-word"),
    pytest.param("-c", id="continue"),
    pytest.param("-i", id="ignore"),
    pytest.param("-s", id="status"),
    pytest.param("-l", id="list"),
    pytest.param("-v", id="version"),
    pytest.param("-h", id="help"),
    pytest.param("-R /etc/audit/audit.rules", id="nested-R"),
    pytest.param("-x", id="option-unknown"),
    pytest.param("--bogus", id="long-option-unknown"),
    pytest.param(
        "-c -e 1",
        id="continue-then-enable",
    ),
    pytest.param(
        "-e 1 -b 8192",
        id="enable-then-backlog",
    ),
    pytest.param(
        f"-c -w {KMOD} -p x -k m",
        id="continue-then-watch",
    ),
    # -- layout and characters --------------------------------------------------------
    pytest.param(f"{B64_INIT} -k m extra", id="stray-word"),
    pytest.param(f"{B64_INIT} -k m # load", id="end-of-line-comment"),
    pytest.param(f"# {B64_INIT} -k m", id="comment"),
    pytest.param(f"   #{B64_INIT} -k m", id="comment-indented"),
    pytest.param(f"   -w {KMOD} -p x -k m", id="leading-spaces"),
    pytest.param(f"\t-w {KMOD} -p x -k m", id="leading-tab"),
    pytest.param(f"-w\t{KMOD} -p x -k m", id="tab-separated"),
    pytest.param(f"-w {KMOD} -p x -k m\t", id="trailing-tab-in-key"),
    pytest.param(f"{B64_INIT} -k m\r", id="cr-in-key"),
    pytest.param(f"-w {KMOD} -p x\r", id="cr-in-perm"),
    pytest.param(f"{B64_INIT} -F auid>=1000\r", id="cr-after-number"),
    pytest.param("\r", id="cr-only"),
    pytest.param("-a always,exit -Farch=b64 -Sinit_module -kmodules", id="glued-options"),
    pytest.param(f"{B64_INIT} -- -k m", id="double-dash"),
    pytest.param(
        f"{B64_INIT}\x00 -k m",
        id="nul-in-line",
    ),
    pytest.param(
        _LONG_LINE,
        id="line-longer-than-6143-bytes",
    ),
    *_LOADING_LINES,
]

# --------------------------------------------------------------------------------------
# Every auditctl and kernel limit, at N-1, N and N+1 (issue 7 item 8).
#
# auditctl 3.0.9 (libaudit audit_rule_fieldpair_data, audit_rule_interfield_comp_data,
# audit_update_watch_perms) refuses to add a field to a rule that has 63
# (AUDIT_MAX_FIELDS - 1), and the joined `-k`/`-F key=` keys are one field added last;
# `-F arch`, each `-F`/`-C`, a watch's path and its permissions count, `-S` does not.
# Keys (joined with 0x01) hold at most AUDIT_MAX_KEY_LEN (256) bytes. `-w` paths must be
# shorter than PATH_MAX (4096) with a base name of at most NAME_MAX (255) bytes;
# `-F path=`/`dir=`/`exe=` values may hold PATH_MAX bytes in libaudit, but the kernel
# resolves them with getname_kernel/kern_path, which need the NUL to fit too (at most
# 4095 bytes). A line is read with fgets() into 6144 bytes, and split into at most
# strlen(line) / 3 + 1 words (fileopt's `nf`): later words are dropped without a word.

#: A directory tree made by the `deep_tree` fixture, so that paths of every length up to
#: PATH_MAX - 1 can have a parent (and a directory) that exists. One per test process (two
#: runs at once must not remove each other's tree), of a fixed length (the cases' path
#: lengths are computed from it): pids have at most 7 digits (pid_max <= 4194304).
DEEP_ROOT: Final = f"/tmp/kmod-audit-oracle-deep-{os.getpid():07d}"
PATH_MAX: Final = 4096
NAME_MAX: Final = 255
#: Two bytes in UTF-8 (auditctl counts bytes).
E_ACUTE: Final = "\u00e9"


def _deep_parent() -> str:
    """A directory path (made by `deep_tree`) of 3880 bytes.

    Paths of PATH_MAX - 2 to PATH_MAX + 1 bytes are then reached below it with a last
    component shorter than NAME_MAX.
    """
    length = 3880
    path = DEEP_ROOT
    while len(path) + 1 + NAME_MAX <= length:
        path += "/" + "d" * NAME_MAX
    return path + "/" + "d" * (length - len(path) - 1)


DEEP_PARENT: Final = _deep_parent()


def _deep_path(total: int, letter: str = "n") -> str:
    """A path of exactly `total` bytes under DEEP_PARENT (its last component < NAME_MAX).

    Directories (DEEP_DIRS) are named with `e`, other paths with `n`: none of those exist.
    """
    name = letter * (total - len(DEEP_PARENT) - 1)
    assert 0 < len(name) <= NAME_MAX
    return f"{DEEP_PARENT}/{name}"


#: Directories of these lengths exist (for `-F dir=`, which the kernel resolves whole).
DEEP_DIRS: Final = (PATH_MAX - 2, PATH_MAX - 1)


def _rule_with_fields(
    total: int, *, key: str = " -k k", first: str = B64_INIT, held: int = 1
) -> str:
    """`first` (which holds `held` fields) plus filler fields to make `total` fields.

    The key given in `key` (if any) counts as one field, as libaudit counts it.
    """
    key_fields = 1 if key else 0
    fillers = total - held - key_fields
    return first + " -F auid!=unset" * fillers + key


def _words_cut(keys: int) -> str:
    """A rule with `keys` one-letter `-k` options: long lines of short words get cut."""
    return "-a always,exit -F arch=b64 -S init_module" + " -k a" * keys


def _words_dropped(line: str) -> int:
    """How many words fileopt() drops from `line` (it keeps strlen / 3 + 1)."""
    return max(0, len(line.split()) - (len(line.encode()) // 3 + 1))


#: The numbers of one-letter keys at which 0, 1 and 2 words of `_words_cut` are dropped.
_CUTS: Final = {
    dropped: next(n for n in range(1, 200) if _words_dropped(_words_cut(n)) == dropped)
    for dropped in (0, 1, 2)
}
_CUTS[0] = _CUTS[1] - 1

_PADDED_KEY: Final = "-a always,exit -F arch=b64 -S init_module"


def _padded(total: int) -> str:
    """A valid rule of exactly `total` bytes: spaces pad it before its final `-k m`."""
    return _PADDED_KEY + " " * (total - len(_PADDED_KEY) - len(" -k m")) + " -k m"


LIMITS: Final = [
    # -- fields: 63 per rule, the key included -----------------------------------------
    *(pytest.param(_rule_with_fields(n, key=""), id=f"fields-{n}-no-key") for n in (62, 63, 64)),
    *(pytest.param(_rule_with_fields(n), id=f"fields-{n}-with-k") for n in (62, 63, 64)),
    *(
        pytest.param(_rule_with_fields(n, key=" -F key=k"), id=f"fields-{n}-with-key-field")
        for n in (62, 63, 64)
    ),
    *(
        pytest.param(_rule_with_fields(n, key=" -k a -F key=b -k c"), id=f"fields-{n}-3-keys")
        for n in (62, 63, 64)
    ),
    *(
        pytest.param(
            _rule_with_fields(n, first=f"{B64_INIT} -S finit_module"),
            id=f"fields-{n}-two-S",
        )
        for n in (63, 64)
    ),
    *(
        pytest.param(
            _rule_with_fields(n, first=f"-w {KMOD} -p x", held=2),
            id=f"fields-{n}-watch",
        )
        for n in (62, 63, 64)
    ),
    *(
        pytest.param(
            _rule_with_fields(n - 2, key="") + " -C auid!=uid -k k",
            id=f"fields-{n}-compare-and-key",
        )
        for n in (62, 63, 64)
    ),
    *(
        pytest.param(
            _rule_with_fields(n - 1, key="", first=f"-a always,exit -F path={KMOD}") + " -p x",
            id=f"fields-{n}-perm-added-by-p",
        )
        for n in (62, 63, 64)
    ),
    pytest.param(
        _rule_with_fields(63, key="", first=f"-a always,exit -F path={KMOD} -F perm=r") + " -p x",
        id="fields-63-p-updates-perm",
    ),
    # -- keys: 256 bytes, joined with 0x01 -------------------------------------------
    *(pytest.param(f"{B64_INIT} -k {'k' * n}", id=f"key-{n}") for n in (255,)),
    *(pytest.param(f"{B64_INIT} -F key={'k' * n}", id=f"key-field-{n}") for n in (255, 256, 257)),
    *(
        pytest.param(f"{B64_INIT} -k {'a' * 127} -k {'b' * n}", id=f"keys-joined-{128 + n}")
        for n in (127,)
    ),
    *(
        pytest.param(f"{B64_INIT} -k " + E_ACUTE * n, id=f"key-utf8-{2 * n}-bytes")
        for n in (127, 128, 129)
    ),
    pytest.param(f"{B64_INIT} -F key= -k b", id="key-empty-field-first"),
    pytest.param("-a always,task -F uid=0 -F key=", id="key-empty-field-on-task"),
    pytest.param("-a always,task -F uid=0 -F key=k", id="key-field-on-task"),
    pytest.param(
        f"{B64_INIT} -k a -F key= -F key=",
        id="key-empty-fields-after",
        marks=_listing_bug(
            "the kernel holds the key 'a\\x01\\x01' (netlink agrees with the model), but "
            "auditctl -l skips empty keys and prints only `-F key=a`"
        ),
    ),
    # -- paths: -w below PATH_MAX, path=/exe= resolvable (< PATH_MAX), dir= existing ------
    *(
        pytest.param(f"-w {_deep_path(n)} -p x -k m", id=f"watch-path-{n}")
        for n in (PATH_MAX - 2, PATH_MAX - 1, PATH_MAX)
    ),
    *(
        pytest.param(f"-a always,exit -F path={_deep_path(n)} -F perm=x -k m", id=f"path-field-{n}")
        for n in (PATH_MAX - 1, PATH_MAX, PATH_MAX + 1)
    ),
    *(
        pytest.param(f"-a always,exit -F exe={_deep_path(n)} -S all -k m", id=f"exe-field-{n}")
        for n in (PATH_MAX - 1, PATH_MAX, PATH_MAX + 1)
    ),
    *(
        pytest.param(
            f"-a always,exit -F dir={_deep_path(n, 'e')} -F perm=w -k m", id=f"dir-field-{n}"
        )
        for n in DEEP_DIRS
    ),
    pytest.param(
        f"-a always,exit -F dir={_deep_path(PATH_MAX - 1, 'e')}/ -F perm=w -k m",
        id="dir-field-4096",
    ),
    *(
        pytest.param(
            f"-a always,exit -F path=/tmp/{'n' * n} -F perm=x -k m", id=f"path-component-{n}"
        )
        for n in (NAME_MAX - 1, NAME_MAX, NAME_MAX + 1)
    ),
    *(
        pytest.param(f"-w /tmp/{'n' * n} -p x -k m", id=f"watch-component-{n}")
        for n in (NAME_MAX - 1, NAME_MAX)
    ),
    # -- a path the kernel resolves must end in a name (kern_path_locked: LAST_NORM) ------
    pytest.param(f"-a always,exit -F path={KMOD}/.. -F perm=x -k m", id="path-ends-dotdot"),
    pytest.param("-a always,exit -F path=/usr/bin/. -F perm=x -k m", id="path-ends-dot"),
    pytest.param("-a always,exit -F exe=/usr/bin/.. -S all -k m", id="exe-ends-dotdot"),
    pytest.param(f"-w {MISSING_FILE}/.. -p x -k m", id="watch-missing-ends-dotdot"),
    pytest.param("-w /usr/bin/. -p x -k m", id="watch-dir-ends-dot"),
    pytest.param("-a always,exit -F path=/usr/../usr/bin/kmod -F perm=x -k m", id="path-dotdot-in"),
    # -- lines: 6143 bytes per fgets(), strlen / 3 + 1 words ---------------------------
    *(
        pytest.param(_padded(n), id=f"line-{n}-bytes")
        for n in (AUDITCTL_LINE_SIZE - 2, AUDITCTL_LINE_SIZE - 1, AUDITCTL_LINE_SIZE)
    ),
    *(
        pytest.param(_words_cut(_CUTS[dropped]), id=f"words-{dropped}-dropped")
        for dropped in (0, 1, 2)
    ),
]


# --------------------------------------------------------------------------------------
# Small files: what happens across lines.

_RULE: Final = f"{B64_INIT} -k m"
_PREPEND_DUPLICATE: Final = (
    "the kernel never finds an `-A` rule to be a duplicate: audit_compare_rule also "
    "compares the rule flags, the new rule carries AUDIT_FILTER_PREPEND and stored rules "
    "no longer do (audit_add_rule clears it), so the kernel holds the rule twice; the model "
    "refuses the `-A` line as 'Rule exists' and stops loading there"
)
_LONG_COMMENT: Final = "# " + "x" * AUDITCTL_LINE_SIZE
_BAD: Final = f"{B64_INIT} -F bogus=1 -k m"

_LOADING_FILES: Final = [
    pytest.param(
        [f"{B64_EXECVE} -F exe={KMOD} -F exe=/usr/sbin/modprobe -k m", STIG_B64, STIG_B32],
        id="exe-twice-then-stig",
    ),
    pytest.param(["-D\r", STIG_B64, STIG_B32], id="crlf-delete-all-then-stig"),
    pytest.param([_RULE, "-D\r", f"{B64_FINIT} -k m"], id="crlf-delete-all-in-middle"),
    pytest.param([STIG_B64 + "\r", STIG_B32 + "\r"], id="crlf-stig"),
    # -i makes auditctl -R exit 0 though the line fails: files, whose status is not compared.
    pytest.param(["-i\r"], id="cr-ignore"),
    pytest.param(["-ic"], id="ignore-continue-glued"),
    pytest.param(["-c\r", _BAD, _RULE], id="crlf-continue-bad-good"),
    pytest.param(["-i\r", _BAD, _RULE], id="crlf-ignore-bad-good"),
    pytest.param(
        [
            "-a always,exit -F perm=x -k x",
            STIG_B64,
            STIG_B32,
            "-A never,exit -F arch=b64 -S init_module",
        ],
        id="perm-only-then-stig-then-never",
    ),
]

FILES: Final = [
    pytest.param([_RULE, _RULE], id="duplicate"),
    pytest.param(
        [
            f"{B64_INIT},finit_module -k m",
            "-a always,exit -F arch=b64 -S finit_module,init_module -k m",
        ],
        id="duplicate-syscalls-reordered",
    ),
    pytest.param([f"{B64_INIT} -k a -k b", f"{B64_INIT} -F key=a -F key=b"], id="duplicate-keys"),
    pytest.param([f"{B64_INIT} -k a", f"{B64_INIT} -k b"], id="same-rule-other-key"),
    pytest.param(
        [
            f"{B64_INIT} -F auid>=1000 -F auid!=unset -k m",
            f"{B64_INIT} -F auid!=-1 -F auid>=1000 -k m",
        ],
        id="same-fields-other-order",
    ),
    pytest.param(
        [
            "-a always,exit -F auid>=1000 -F arch=b64 -S init_module -k m",
            "-a always,exit -F arch=b64 -F auid>=1000 -S init_module -k m",
        ],
        id="arch-position-differs",
    ),
    pytest.param(
        [f"-w {KMOD} -p x -k m", f"-a always,exit -F path={KMOD} -F perm=x -k m"],
        id="duplicate-watch-as-path-rule",
    ),
    pytest.param(
        [_RULE, _RULE.replace("-a", "-A")],
        id="duplicate-prepended",
    ),
    pytest.param(
        [_RULE.replace("-a", "-A"), _RULE.replace("-a", "-A")],
        id="prepended-twice",
    ),
    pytest.param([_RULE.replace("-a", "-A"), _RULE], id="prepended-then-appended"),
    pytest.param(
        [_RULE.replace("-a", "-A"), _RULE.replace("-a", "-d")], id="prepended-then-deleted"
    ),
    pytest.param(
        [f"{B64_INIT} -C uid!=auid -k m", f"{B64_INIT} -C auid!=uid -k m"],
        id="duplicate-compare-swapped",
    ),
    pytest.param([_RULE, _RULE.replace("-a", "-d")], id="add-then-delete"),
    pytest.param([_RULE.replace("-a", "-d"), _RULE], id="delete-missing-then-add"),
    pytest.param([f"-w {KMOD} -p x -k m", f"-W {KMOD} -p x -k m"], id="watch-then-unwatch"),
    pytest.param([f"-w {KMOD} -p x -k m", f"-W {KMOD} -k m"], id="unwatch-other-perms"),
    pytest.param([f"{B64_INIT} -k a", f"{B64_FINIT} -k b", "-D -k a"], id="delete-by-key"),
    pytest.param(
        [f"{B64_INIT} -k modules", f"{B64_FINIT} -k module_chng", "-w /etc -k other", "-D -k mod"],
        id="delete-by-key-substring",
    ),
    pytest.param([f"{B64_INIT} -k a -k b", "-D -k b"], id="delete-by-second-key"),
    pytest.param([f"{B64_INIT} -k a", "-D -k a", f"{B64_INIT} -k a"], id="readd-after-delete"),
    pytest.param([_RULE, "-D", f"{B64_FINIT} -k m"], id="delete-all-in-middle"),
    pytest.param(["-c", _BAD, _RULE], id="continue-bad-good"),
    pytest.param([_BAD, _RULE], id="bad-good"),
    pytest.param(["-i", _BAD, _RULE], id="ignore-bad-good"),
    pytest.param([_RULE, _BAD, f"{B64_FINIT} -k m"], id="good-bad-good"),
    pytest.param(
        ["# a comment", "", "   ", "\t# not a comment", _RULE],
        id="comments-and-blank-lines",
    ),
    pytest.param(["", "# c", "   # c", _BAD, _RULE], id="line-numbers-after-comments"),
    pytest.param(
        [f"{B64_INIT} -k a", f"{B64_FINIT.replace('-a', '-A')} -k b", "-a always,exit -S all -k c"],
        id="prepend-order",
    ),
    pytest.param(
        [
            "-a always,exclude -F msgtype=CWD",
            "-a always,user -F uid=0",
            "-a never,task -F uid=0",
            _RULE,
            "-a never,filesystem -F fstype=debugfs",
        ],
        id="every-list",
    ),
    pytest.param(["-e 0", _RULE], id="disable-then-rule"),
    pytest.param(
        ["-c", _BAD, "-e 1"],
        id="continue-bad-enable",
    ),
    pytest.param(
        [_LONG_COMMENT, _RULE],
        id="long-comment-then-rule",
        marks=pytest.mark.xfail(
            strict=True,
            reason=(
                "numbering, on purpose: auditctl reads 6143-byte pieces and counts the rest "
                "of this comment as line 2 (the model does fail it, loading stops there); "
                "the model names the physical line 1, the line an editor shows"
            ),
        ),
    ),
    pytest.param(
        [_LONG_LINE, _RULE],
        id="long-line-then-rule",
    ),
    *_LOADING_FILES,
]


class TestSingleLines:
    """One rules line at a time: the model accepts, refuses and stores what auditctl does."""

    @pytest.mark.parametrize("line", SINGLE_LINES)
    def test_model_agrees_with_auditctl(
        self, host_audit: HostAudit, tmp_path: Path, line: str
    ) -> None:
        """The real `auditctl -R` fails iff the model reports an issue, and holds the same rules."""
        text = line + "\n"
        real, status, messages = _real(host_audit, text, tmp_path)
        assert (status == 0) == (real.failed == ()), f"exit status {status}; said: {messages}"
        assert real == _model(text), f"auditctl said: {messages}"


@pytest.fixture
def deep_tree() -> Iterator[None]:
    """DEEP_PARENT and the directories DEEP_DIRS name, removed afterwards."""
    os.makedirs(DEEP_PARENT, exist_ok=True)
    for length in DEEP_DIRS:
        os.makedirs(_deep_path(length, "e"), exist_ok=True)
    try:
        yield
    finally:
        shutil.rmtree(DEEP_ROOT)


class TestLimits:
    """Each auditctl and kernel limit, one below, at and one above: the model agrees."""

    @pytest.mark.usefixtures("deep_tree")
    @pytest.mark.parametrize("line", LIMITS)
    def test_model_agrees_with_auditctl(
        self, host_audit: HostAudit, tmp_path: Path, line: str
    ) -> None:
        """The real `auditctl -R` fails iff the model reports an issue, and holds the same rules."""
        text = line + "\n"
        real, status, messages = _real(host_audit, text, tmp_path)
        assert (status == 0) == (real.failed == ()), f"exit status {status}; said: {messages}"
        assert real == _model(text), f"auditctl said: {messages}"


def _without_listing_marks(params: list[Any]) -> list[Any]:
    """The same cases, minus the xfails that only concern reading `auditctl -l` text."""
    out = []
    for param in params:
        marks = [
            m for m in param.marks if not str(m.kwargs.get("reason", "")).startswith("listing")
        ]
        out.append(pytest.param(*param.values, id=param.id, marks=marks))
    return out


def _netlink_lists() -> tuple[tuple[str, tuple[tuple[object, ...], ...]], ...]:
    rules = netlink.list_rules(X86_64)
    return tuple(
        (name, tuple(_listed_identity(r) for r in rules if r.list == name))
        for name in ("exit", "task", "exclude", "user", "filesystem")
    )


class TestNetlink:
    """What the kernel holds, read over netlink (as `check --running` does), is the model's."""

    @pytest.mark.parametrize("line", _without_listing_marks(SINGLE_LINES))
    def test_kernel_holds_the_model_rules(
        self, host_audit: HostAudit, tmp_path: Path, line: str
    ) -> None:
        """After `auditctl -R`, AUDIT_LIST_RULES returns exactly the model's rule lists."""
        text = line + "\n"
        _, _, messages = _real(host_audit, text, tmp_path)
        assert _model(text).lists == _netlink_lists(), f"auditctl said: {messages}"


def _marked(listing: str) -> bool:
    """Whether `auditctl -l` output carries a mark only a listing has (see explain_syntax).

    One deliberate exception: an exit rule with an empty syscall mask (only `-S ,` makes
    one) is printed without `-S`, which in a rules file means every syscall; such text is
    taken as a rules file (the issue's rule: when unsure, a rules file).
    """
    lines = listing.split("\n")
    if any(line.startswith("-a ") and ",exit" in line and " -S " not in line for line in lines):
        return False
    return listing.strip() == "No rules" or any(
        line.startswith("-a ") and (" -F key=" in line or " -S all" in line) for line in lines
    )


def _unmarked(params: list[Any]) -> list[Any]:
    """The same cases without their marks: detection does not depend on the model's bugs."""
    return [pytest.param(*p.values, id=p.id) for p in params]


class TestListingDetection:
    """What the real `auditctl -l` prints is detected as a listing (issue 7 item 3).

    Detection needs positive evidence: every line in the exact form auditctl -l prints
    (auditctl-listing.c), and a mark of a listing. So the real output of each case must be
    taken as a listing whenever it has the mark, and never called a rules file because our
    idea of the print format is wrong.
    """

    @pytest.mark.parametrize("line", _unmarked(SINGLE_LINES + LIMITS))
    @pytest.mark.usefixtures("deep_tree")
    def test_real_listing_is_a_listing(
        self, host_audit: HostAudit, tmp_path: Path, line: str
    ) -> None:
        """The listing is detected as one exactly when it carries a listing's mark."""
        _auditctl_load(line + "\n", tmp_path)
        listing = host_audit.listing()
        syntax, reason = explain_syntax(listing.split("\n"), X86_64)  # as parse_rules splits
        expected = "listing" if _marked(listing) else "rules"
        assert expected == syntax, f"{reason}\nauditctl -l printed:\n{listing}"


class TestFiles:
    """Small files: duplicates, deletions, -D -k, -c/-i and where loading stops."""

    @pytest.mark.parametrize("lines", FILES)
    def test_model_agrees_with_auditctl(
        self, host_audit: HostAudit, tmp_path: Path, lines: list[str]
    ) -> None:
        """The same lines fail and the kernel ends with the same rules, in the same order."""
        text = "".join(line + "\n" for line in lines)
        real, _, messages = _real(host_audit, text, tmp_path)
        assert real == _model(text), f"auditctl said: {messages}"


#: Files whose lines need a directory `{d}` that the model does not know (the target's files
#: are not read): the kernel judges the world where it exists and the world where it does not.
UNREAD: Final = [
    pytest.param("-w {d}/conf -p wa -k app\n" + STIG_B64 + "\n", id="watch-then-stig"),
    pytest.param(
        STIG_B64 + "\n-a always,exit -F arch=b64 -S execve -F dir={d} -k d\n"
        "-a always,exit -F arch=b64 -S init_module -F exe={d}/tool -k e\n",
        id="stig-then-tree-and-exe",
    ),
    pytest.param(
        "-c\n-w {d}/conf -p x -k a\n-a always,exit -F arch=b64 -S execve -F dir={d} -k d\n"
        + STIG_B64
        + "\n",
        id="continue-on-error",
    ),
]


@pytest.mark.root
class TestUnreadFiles:
    """A line that needs a directory of the target, judged without its files: both ways."""

    @pytest.mark.parametrize("template", UNREAD)
    def test_each_world_is_what_the_kernel_makes(
        self, host_audit: HostAudit, tmp_path: Path, template: str
    ) -> None:
        """With the directory there, every line loads; without it, `without` is the kernel's."""
        directory = tmp_path / "target" / "app"
        text = template.format(d=directory)
        source = parse_rules(
            text, path="oracle.rules", machine=X86_64, syntax="rules", files=NOT_READ
        )
        ruleset = load(source, files=NOT_READ)
        assert ruleset.unread, "the model should not know the directory"
        refused = without(ruleset, ruleset.unread[0])
        assert _outcome(ruleset) != _outcome(refused), "the two worlds should differ"
        directory.mkdir(parents=True)
        (tmp_path / "with").mkdir()
        real, _, messages = _real(host_audit, text, tmp_path / "with")
        assert real == _outcome(ruleset), f"auditctl said: {messages}"
        directory.rmdir()
        (tmp_path / "without").mkdir()
        real, _, messages = _real(host_audit, text, tmp_path / "without")
        assert real == _outcome(refused), f"auditctl said: {messages}"


@pytest.mark.root
def test_corpus_paths_are_as_assumed() -> None:
    """The missing paths the corpus names are missing and the present ones present."""
    if not host_kmod_layout():
        require_or_skip("the oracle corpus names /usr/bin/kmod (apt-get install kmod)")
    assert (False, False, True) == (
        os.path.exists(MISSING_DIR),
        os.path.exists(MISSING_FILE),
        os.path.isfile(KMOD),
    )


# --------------------------------------------------------------------------------------
# Verdicts (issue 16 item 8): `check FILE` judges what `auditctl -R FILE` really loads.

_VERDICT_FILES: Final = [
    pytest.param(
        [f"{B64_EXECVE} -F exe={KMOD} -F exe=/usr/sbin/modprobe -k m", STIG_B64, STIG_B32],
        id="exe-twice-then-stig",
    ),
    pytest.param(["-D\r", STIG_B64, STIG_B32], id="crlf-delete-all-then-stig"),
    pytest.param(["-a always,exit -F perm=x -k x", STIG_B64, STIG_B32], id="perm-only-then-stig"),
    pytest.param(
        [
            "-a always,exit -F perm=x -k x",
            STIG_B64,
            STIG_B32,
            "-A never,exit -F arch=b64 -S init_module",
        ],
        id="perm-only-then-stig-then-never",
    ),
]


def _verdict(result: CliResult) -> tuple[int, int]:
    """The exit code and the number of rules the one judged source holds."""
    report = json.loads(result.out)
    return result.code, report["sources"][0]["rule_count"]


class TestVerdicts:
    """`check FILE` says what `check --running` says after the real `auditctl -R FILE`.

    `check --running` reads the rules the kernel holds over netlink, so the two agree
    exactly when the model loads the file as auditctl and the kernel do.
    """

    @pytest.mark.usefixtures("host_audit")
    @pytest.mark.parametrize("lines", _VERDICT_FILES)
    def test_file_verdict_is_the_loaded_verdict(
        self, run_cli: RunCli, tmp_path: Path, lines: list[str]
    ) -> None:
        """The same exit code and rule count for the file and for what the kernel loaded."""
        text = "".join(line + "\n" for line in lines)
        rules = tmp_path / "audit.rules"
        rules.write_bytes(text.encode())
        on_file = run_cli("check", str(rules), "--profile", "nixos-stig", "--format", "json")
        _auditctl_load(text, tmp_path)
        auditctl("-e", "1")  # the fixture restores the host's flag
        running = run_cli("check", "--running", "--profile", "nixos-stig", "--format", "json")
        assert _verdict(running) == _verdict(on_file), running.out


class TestListedExe:
    """auditctl -l prints exe!= as exe=: a listing's exe= is judged both ways, with a warning."""

    def test_listed_exe_never_passes_what_the_kernel_fails(
        self, host_audit: HostAudit, run_cli: RunCli, tmp_path: Path
    ) -> None:
        """The kernel holds exe!=kmod: its listing does not pass V-274093 and says why."""
        text = "".join(
            f"-a always,exit -F arch={bits} -S execve,execveat -F exe!={KMOD} -k m\n"
            for bits in ("b64", "b32")
        )
        _auditctl_load(text, tmp_path)
        auditctl("-e", "1")  # the fixture restores the host's flag
        listing = tmp_path / "listing.txt"
        listing.write_text(host_audit.listing())
        args = ("--profile", "al2023-stig", "--format", "json")
        running = json.loads(run_cli("check", "--running", *args).out)
        listed = json.loads(run_cli("check", str(listing), *args).out)

        def status(report: dict[str, Any]) -> str:
            (profile,) = report["profiles"]
            return str(next(r["status"] for r in profile["requirements"] if r["id"] == "V-274093"))

        warned = [f for f in listed["sources"][0]["findings"] if "exe!=" in f["message"]]
        assert ("fail", "fail", "listing", 2) == (
            status(running),
            status(listed),
            listed["sources"][0]["syntax"],
            len(warned),
        )


class TestListedWatch:
    """auditctl -l prints a `never` rule of path= and perm= as the watch of an `always` one."""

    @pytest.mark.parametrize(
        ("field", "listed"),
        [
            (f"path={KMOD} -F perm=x", ("undecided", 3)),
            # Printed ` -p x-w /usr/bin/kmod -k modules` (perm= first).
            (f"perm=x -F path={KMOD}", ("undecided", 3)),
            # `-w /usr/bin` may also be path=/usr/bin (the directory's own inode), which no
            # exec of kmod touches: the listing fails it as read, so the action changes nothing.
            (f"dir={os.path.dirname(KMOD)} -F perm=x", ("fail", 1)),
        ],
        ids=["path", "perm-first", "dir"],
    )
    def test_listed_watch_is_undecided_where_the_action_decides(
        self,
        host_audit: HostAudit,
        run_cli: RunCli,
        tmp_path: Path,
        field: str,
        listed: tuple[str, int],
    ) -> None:
        """The kernel lists both actions alike: the listing is not a pass, netlink is exact."""
        if not host_kmod_layout():
            require_or_skip("the case watches /usr/bin/kmod (apt-get install kmod)")
        args = ("--profile", "tenable", "--format", "json")

        def status(report: dict[str, Any]) -> str:
            (profile,) = report["profiles"]
            return str(
                next(
                    r["status"]
                    for r in profile["requirements"]
                    if r["id"] == "tenable-kernel-module-tools"
                )
            )

        listings: list[str] = []
        statuses: list[tuple[str, str, int]] = []
        for action in ("always", "never"):
            text = f"{STIG_B64}\n{STIG_B32}\n-a {action},exit -F {field} -k modules\n"
            (tmp_path / action).mkdir()
            _auditctl_load(text, tmp_path / action)
            auditctl("-e", "1")  # the fixture restores the host's flag
            listings.append(host_audit.listing())
            listing = tmp_path / f"{action}.txt"
            listing.write_text(listings[-1])
            running = json.loads(run_cli("check", "--running", *args).out)
            result = run_cli("check", str(listing), *args)
            statuses.append((status(running), status(json.loads(result.out)), result.code))
        assert (listings[0], [("pass", *listed), ("fail", *listed)]) == (listings[1], statuses)

    @pytest.mark.parametrize("first", ["always", "never"])
    def test_watch_listed_twice_is_a_listing_and_undecided(
        self, host_audit: HostAudit, run_cli: RunCli, tmp_path: Path, first: str
    ) -> None:
        """An `always` and a `never` rule print the same watch line twice: still a listing."""
        if not host_kmod_layout():
            require_or_skip("the case watches /usr/bin/kmod (apt-get install kmod)")
        second = {"always": "never", "never": "always"}[first]
        watch = f"-F path={KMOD} -F perm=x -k modules"
        text = f"{STIG_B64}\n{STIG_B32}\n-a {first},exit {watch}\n-a {second},exit {watch}\n"
        _auditctl_load(text, tmp_path)
        auditctl("-e", "1")  # the fixture restores the host's flag
        listing = tmp_path / "listing.txt"
        listing.write_text(host_audit.listing())
        args = ("--profile", "tenable", "--format", "json")
        running = run_cli("check", "--running", *args)
        listed = run_cli("check", str(listing), *args)
        lines = listing.read_text().splitlines()
        expected = (2, {"always": 0, "never": 1}[first], "listing", 3)
        assert expected == (
            lines.count(f"-w {KMOD} -p x -k modules"),
            running.code,
            json.loads(listed.out)["sources"][0]["syntax"],
            listed.code,
        )
