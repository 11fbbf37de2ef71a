# ruff: noqa: INP001, T201 - a script run by bench/run; it prints its table
"""kmod-audit's benchmark (issue 9): `bench/run` prints one table of timings and ratios.

Every row times kmod-audit ("ours") and, where there is one, a peer side by side in one run:
the runs of the two alternate, and each side shows the min and median of its runs. The
ratio is ours / peer (medians). The target column is the issue's, and PASS/FAIL says whether
this run meets it. Timings never go into tests.

Rows:

- `check --profile all FILE` against `auditctl -R FILE` on realistic files of 10 to 10,000
  rules (and `check` alone on 20,000): the rule shapes of the audit package's sample rules
  (/usr/share/doc/auditd/examples/rules) with distinct keys and watches on paths that exist
  here, then the rules `kmod-audit generate --profile all` prints;
- `check` on the constructed shapes "wmax", "filler", "auid-ranges" and "exe-never" (N rules
  of the shape, then the generated rules), against `auditctl -R` where the file loads;
- `check --format cklb --cklb-template` on a checklist of 20,000 rules (issue 16), against
  the same `check` without a template;
- `check` on the pigeonholes of issue 16 (k+1 keyed STIG rules per ABI, rule i with `!=i`
  on each of k attributes: compliant only together), k = 3 to 9, and k rules (not compliant);
- `verify --target local` with a private auditd whose log holds 1 GB of real records,
  against the same with an empty log, and against `ausearch -if LOG -k module_chng`.

`--against OTHER/.venv/bin/kmod-audit` compares two builds instead (a change must not make a
row slower by more than 10%): each row group runs for this build and the other in turns (A B,
B A, ...), without the peers, and the table shows each build's min / median and their ratio.
Two separate full runs differ by up to 40% on the 100 ms rows; taking turns cancels most of
the machine's drift.

`auditctl -R` changes the host's audit state: each group of rows that touches it takes the
host audit lock (/run/lock/kmod-audit-host-audit.lock, as the tests do), saves the rules and
the status, runs `auditctl -D` between runs, and restores both afterwards, even on an error
or Ctrl-C. Nothing here sets `-e 2` or `-f 2`. Each measurement is capped (`--cap`): a run
that takes longer is killed and shown as `> CAP s (capped)`.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType

import attrs

from hostaudit import (
    HOST_AUDIT_LOCK,
    HostAudit,
    HostAuditError,
    audit_status,
    auditctl,
    held,
    private_auditd,
    unusable,
)

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = Path("/usr/share/doc/auditd/examples/rules")
#: Sample files left out: 10-no-audit suppresses every event (`-a task,never`); the others
#: hold only control lines, which are dropped anyway.
SKIPPED_SAMPLES = frozenset({"10-no-audit.rules"})
#: Fields a kernel without an LSM rejects.
LSM_FIELDS = re.compile(r"-F (subj|obj)_(user|role|type|sen|clr)")
KEY = re.compile(r"(-k |-F key=)(\S+)")
GROUPS = (
    "startup",
    "realistic",
    "load",
    "wmax",
    "filler",
    "auid-ranges",
    "exe-never",
    "template",
    "pigeonhole",
    "verify",
)
#: The attributes of the pigeonhole shape, in the order its rules name them.
PIGEONHOLE_ATTRIBUTES = ("a0", "a1", "a2", "a3", "pers", "sessionid", "gid", "pid", "ppid")
#: Seconds spent waiting for the host audit lock (held by tests), shown with the total.
LOCK_WAITS: list[float] = []
#: In a comparison (`--against`), a row is SLOWER when this build's median is above this
#: times the other's.
SLOWER = 1.10
#: The key of the generated rules: what `ausearch -k` looks for.
STIG_KEY = "module_chng"


class BenchError(Exception):
    """A prerequisite is missing or the host cannot be measured; the message says why."""


# ---------------------------------------------------------------------------------------
# Measuring


@attrs.frozen
class Run:
    """One timed run.

    Attributes:
        seconds: Wall-clock time (the cap when capped).
        code: Exit status (None when capped).
        capped: Killed at the cap.
        err: The end of its stderr, for error notes.
    """

    seconds: float
    code: int | None
    capped: bool
    err: str = ""


@attrs.define
class Side:
    """The runs of one side of a row."""

    runs: list[Run] = attrs.Factory(list)

    @property
    def capped(self) -> bool:
        """Whether some run hit the cap."""
        return any(run.capped for run in self.runs)

    @property
    def median(self) -> float:
        """Median seconds."""
        return statistics.median(run.seconds for run in self.runs)

    def cell(self, cap: float) -> str:
        """`min / median`, or the cap."""
        if not self.runs:
            return "-"
        if self.capped:
            return f"> {cap:g} s (capped)"
        return f"{_fmt(min(run.seconds for run in self.runs))} / {_fmt(self.median)}"


def _fmt(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s"


def timed(command: Sequence[str], cap: float, *, quiet_stdout: bool = True) -> Run:
    """Run `command` once, killed after `cap` seconds; return its time and status."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL if quiet_stdout else subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _, err = proc.communicate(timeout=cap)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return Run(seconds=cap, code=None, capped=True)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    elapsed = time.perf_counter() - start
    return Run(seconds=elapsed, code=proc.returncode, capped=False, err=err.decode()[-500:])


@attrs.frozen
class Row:
    """One line of the table."""

    what: str
    ours: Side
    peer: Side | None
    target: str
    verdict: str
    note: str = ""


@attrs.frozen
class Settings:
    """How long and how often to measure.

    Attributes:
        runs: Runs per side and row (fewer when a row exceeds `row_budget`).
        cap: Seconds after which a run is killed.
        row_budget: Seconds per row after which no further run starts (at least one runs).
        quick: The smaller smoke run.
        kmod_audit: The kmod-audit command measured.
        log_bytes: Size of the big auditd log.
        rows: The row groups to run.
        deadline: `time.monotonic()` after which each row runs once (to stay under 10 min),
            moved back by the time spent waiting for the host audit lock.
        against: Another kmod-audit command to compare with (`--against`), or None.
        rounds: In a comparison, how often each group runs for each build (ABBA order).
        peers: Whether rows time their peers (a comparison times only the two builds).
    """

    runs: int
    cap: float
    row_budget: float
    quick: bool
    kmod_audit: str
    log_bytes: int
    rows: tuple[str, ...]
    deadline: float
    against: str | None = None
    rounds: int = 4
    peers: bool = True


def past_deadline(settings: Settings) -> bool:
    """Whether the run is past its deadline, not counting the waits for the lock."""
    return time.monotonic() - sum(LOCK_WAITS) > settings.deadline


def measure(
    settings: Settings,
    ours: Callable[[], Run],
    peer: Callable[[], Run] | None,
    refused: Sequence[Run] = (),
) -> tuple[Side, Side | None]:
    """Alternate peer and ours; stop early past the row budget or a cap.

    The peer stops once it is capped or once `refused` (which it fills) is not empty.
    """
    mine, theirs = Side(), Side() if peer else None
    start = time.monotonic()
    for _ in range(settings.runs):
        if theirs is not None and peer is not None and not theirs.capped and not refused:
            theirs.runs.append(peer())
        if not mine.capped:
            mine.runs.append(ours())
        now = time.monotonic()
        if mine.capped or now - start > settings.row_budget or past_deadline(settings):
            break
    return mine, theirs


# ---------------------------------------------------------------------------------------
# The host's audit subsystem


def can_drive_host() -> str | None:
    """Why this process cannot use the host's audit subsystem (None when it can)."""
    return unusable()


def load_rules(path: Path) -> None:
    """`auditctl -D` then `auditctl -R path`, untimed (restoring or preparing)."""
    auditctl("-D")
    auditctl("-R", str(path), check=False)


@contextlib.contextmanager
def host_audit() -> Iterator[HostAudit]:
    """Hold the host audit lock (tools/hostaudit.py); the time waited does not count."""

    def waiting() -> None:
        print(f"bench: waiting for {HOST_AUDIT_LOCK} (tests use the host audit)", file=sys.stderr)

    with held(waiting) as host:
        LOCK_WAITS.append(host.waited)
        yield host


# ---------------------------------------------------------------------------------------
# Rule files


def _files(directories: Sequence[str], *, want_dirs: bool = False) -> list[str]:
    """Paths (not symlinks) directly in `directories`: directories or regular files."""
    found = []
    for directory in directories:
        with contextlib.suppress(OSError):
            for entry in sorted(os.scandir(directory), key=lambda e: e.name):
                if entry.is_symlink():
                    continue
                if (entry.is_dir() if want_dirs else entry.is_file()) and " " not in entry.path:
                    found.append(entry.path)
    return found


@attrs.frozen
class Pools:
    """Paths that exist here, for the watches of the realistic files."""

    programs: list[str]
    files: list[str]
    dirs: list[str]

    @classmethod
    def scan(cls) -> Pools:
        """Look at /usr/bin, /usr/sbin and /etc."""
        return cls(
            programs=_files(["/usr/bin", "/usr/sbin"]),
            files=_files(["/etc", "/etc/default", "/etc/security", "/etc/pam.d"]),
            dirs=[f"{d}/" for d in _files(["/etc", "/usr/share"], want_dirs=True)],
        )


def sample_templates() -> list[str]:
    """The `-a`/`-w` lines of the audit package's sample rules (control lines dropped)."""
    lines: list[str] = []
    seen: set[str] = set()
    for path in sorted(SAMPLES.glob("*.rules*")):
        name = path.name.removesuffix(".gz")
        if name in SKIPPED_SAMPLES or not name.endswith(".rules"):
            continue
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        for line in raw.decode().splitlines():
            text = line.strip()
            if not text.startswith(("-a ", "-w ")) or LSM_FIELDS.search(text):
                continue
            if text not in seen:
                seen.add(text)
                lines.append(text)
    if not lines:
        msg = f"no sample rules in {SAMPLES} (apt-get install auditd, as tools/setup does)"
        raise BenchError(msg)
    return lines


#: Rules the kernel ties to an inode mark, and how many of them a realistic file holds.
MARKED = re.compile(r"^-w |-F (path|dir|exe)=")
MARKED_RULES = 300
_PATH = re.compile(r"(-w |-F path=|-F dir=)(\S+)")


def vary(template: str, serial: int, pools: Pools) -> str:
    """The template with a key unique to `serial` and its watched path one that exists."""
    line = template
    match = _PATH.search(line)
    if match:
        kind, path = match.groups()
        if kind == "-F dir=":
            pool = pools.dirs
        elif "perm=x" in line or "-p x" in line:
            pool = pools.programs
        else:
            pool = pools.files
        if serial >= len(pool) or not Path(path).exists():
            path = pool[serial % len(pool)]
        line = line[: match.start()] + kind + path + line[match.end() :]
    if KEY.search(line):
        return KEY.sub(lambda m: f"{m.group(1)}{m.group(2)}-{serial}", line, count=1)
    return f"{line} -k bench-{serial}"


def realistic(size: int, templates: list[str], stig: list[str], pools: Pools) -> str:
    """`size` rules: varied sample shapes, then the generated rules.

    At most `MARKED_RULES` of them are watch-like (`-w`, `path=`, `dir=`, `exe=`): the
    kernel takes about 15 ms to delete each such rule, so the untimed `auditctl -D` after
    each `auditctl -R` of 10,000 rules in the samples' proportion (37 %) would take minutes.
    """
    count = max(size - len(stig), 0)
    plain = [line for line in templates if not MARKED.search(line)]
    lines: list[str] = []
    marked = 0
    for i in range(count):
        template = templates[i % len(templates)]
        if MARKED.search(template):
            if marked >= MARKED_RULES:
                template = plain[i % len(plain)]
            else:
                marked += 1
        lines.append(vary(template, i, pools))
    return "\n".join([*lines, *stig]) + "\n"


def wmax(size: int, stig: list[str]) -> str:
    """Rules with several a0..a3, exit, auid and uid conditions each, then the generated rules."""
    lines = []
    for i in range(size):
        arch = "b64" if i % 2 == 0 else "b32"
        lines.append(
            f"-a always,exit -F arch={arch} -S init_module,finit_module,delete_module "
            f"-F a0!={i} -F a1>={100 + i} -F a2<{200 + i} -F a3!={300 + i} "
            f"-F exit!=-{1 + i % 30} -F auid>={1000 + i} -F uid!={2000 + i} -k wmax-{i}"
        )
    return "\n".join([*lines, *stig]) + "\n"


def filler(size: int, stig: list[str]) -> str:
    """Rules with disjoint value sets on many fields, then the generated rules."""
    lines = [
        f"-a always,exit -F arch=b64 -S init_module,finit_module,delete_module "
        f"-F a0={i} -F a1={i} -F a2={i} -F a3={i} -F uid={5000 + i} -F gid={5000 + i} "
        f"-F pid={5000 + i} -k filler-{i}"
        for i in range(size)
    ]
    return "\n".join([*lines, *stig]) + "\n"


def auid_ranges(size: int, stig: list[str]) -> str:
    """Rules with distinct auid>=/auid< ranges, then the generated rules."""
    lines = [
        f"-a always,exit -F arch=b64 -S init_module,finit_module,delete_module "
        f"-F auid>={1000 + 7 * i} -F auid<{1005 + 7 * i} -k range-{i}"
        for i in range(size)
    ]
    return "\n".join([*lines, *stig]) + "\n"


def exe_never(size: int, stig: list[str]) -> str:
    """`never` rules with distinct `-F exe=` (not kmod), then the generated rules."""
    lines = [
        f"-a never,exit -F arch={'b64' if i % 2 == 0 else 'b32'} -S execve,execveat "
        f"-F exe=/usr/bin/kmod-audit-bench-{i}"
        for i in range(size)
    ]
    return "\n".join([*lines, *stig]) + "\n"


#: Members a rule of the big checklist keeps: those that identify it and hold its review.
#: A whole rule is about 4.5 KB, so 20,000 of them would pass the 64 MiB template limit.
TEMPLATE_MEMBERS = (
    "group_id_src",
    "group_id",
    "rule_id_src",
    "rule_id",
    "severity",
    "status",
    "comments",
    "finding_details",
)


def repeated_template(checklist: str, size: int) -> str:
    """`checklist` with its first STIG's first rule repeated `size` times (issue 16's shape).

    Every copy has the same group and rule ids, is not reviewed yet, and keeps only
    `TEMPLATE_MEMBERS`, so the merge fills in each one.
    """
    data = json.loads(checklist)
    stig = data["stigs"][0]
    rule = {name: stig["rules"][0][name] for name in TEMPLATE_MEMBERS}
    rule.update(status="not_reviewed", comments="", finding_details="")
    stig["rules"] = [rule] * size
    stig["size"] = size
    return json.dumps(data, indent=2)


def pigeonhole(attributes: int, rules: int) -> str:
    """STIG module rules, b64 then b32, rule i with `-F X!=i` on each of the attributes.

    Every event is recorded when there are more rules than attributes (no event holds
    `rules` distinct values on fewer attributes), but no rule records it alone.
    """
    names = PIGEONHOLE_ATTRIBUTES[:attributes]
    return "".join(
        f"-a always,exit -F arch={arch} -S init_module,finit_module,delete_module "
        + " ".join(f"-F {name}!={i}" for name in names)
        + f" -k m{i}\n"
        for arch in ("b64", "b32")
        for i in range(1, rules + 1)
    )


# ---------------------------------------------------------------------------------------
# Rows


class Bench:
    """The state of one benchmark run: settings, scratch directory, host access."""

    def __init__(self, settings: Settings, work: Path, stig: list[str] | None = None) -> None:
        """Prepare; nothing touches the host yet.

        `stig` is the generated rules to append to the constructed files (by default what
        this build's `generate --profile all` prints; a comparison gives both builds the same).
        """
        self.settings = settings
        self.work = work
        self.rows: list[Row] = []
        self.host_problem = can_drive_host()
        if stig is None:
            generated = subprocess.run(
                [settings.kmod_audit, "generate", "--profile", "all"],
                capture_output=True,
                text=True,
                check=True,
            )
            stig = [line for line in generated.stdout.splitlines() if line.startswith("-")]
        self.stig = stig

    def write(self, name: str, text: str) -> Path:
        """A rules file in the scratch directory."""
        path = self.work / name
        path.write_text(text)
        path.chmod(0o600)
        return path

    def check(self, path: Path) -> Run:
        """`kmod-audit check --profile all PATH` once."""
        return timed(
            [self.settings.kmod_audit, "check", "--profile", "all", str(path)], self.settings.cap
        )

    def auditctl_load(self, path: Path) -> Run:
        """`auditctl -R PATH` once, after an untimed `auditctl -D`."""
        auditctl("-D")
        run = timed(["auditctl", "-R", str(path)], self.settings.cap)
        auditctl("-D")
        return run

    def check_row(
        self,
        what: str,
        path: Path,
        *,
        target: str,
        passes: Callable[[Side, Side | None], bool] | None,
        peer: bool = True,
    ) -> None:
        """Time `check` on `path`, against `auditctl -R` when the host allows and it loads."""
        peer_run: Callable[[], Run] | None = None
        note = ""
        refused: list[Run] = []
        peer = peer and self.settings.peers
        if peer and self.host_problem is None:

            def peer_run() -> Run:
                run = self.auditctl_load(path)
                if not run.capped and run.code != 0:
                    refused.append(run)
                return run

        elif peer:
            note = f"no auditctl -R peer: {self.host_problem}"
        ours, theirs = measure(self.settings, lambda: self.check(path), peer_run, refused)
        if refused:
            lines = refused[0].err.strip().splitlines()
            note = f"auditctl -R refuses it ({lines[-1] if lines else 'no message'})"
            theirs = None
        codes = {run.code for run in ours.runs if run.code is not None}
        if codes - {0, 1, 3}:
            note = _join(note, f"check exit {sorted(codes)}: {ours.runs[-1].err.strip()[-200:]}")
        elif 3 in codes:
            note = _join(note, "check undecided (exit 3)")
        verdict = "-"
        if passes is not None:
            ok = not ours.capped and not (codes - {0, 1}) and passes(ours, theirs)
            verdict = "PASS" if ok else "FAIL"
        self.rows.append(Row(what, ours, theirs, target, verdict, note))

    # -- groups --------------------------------------------------------------------------

    def group_realistic(self) -> None:
        """Realistic files against auditctl -R."""
        templates, pools = sample_templates(), Pools.scan()
        sizes = (10, 100) if self.settings.quick else (10, 100, 1000, 10000)
        for size in sizes:
            path = self.write(
                f"realistic-{size}.rules", realistic(size, templates, self.stig, pools)
            )
            if size == 1000:
                self.check_row(
                    f"check realistic {size:,} rules",
                    path,
                    target="<= 10x auditctl -R",
                    passes=lambda o, p: p is not None and o.median <= 10 * p.median,
                )
            elif size == 10000:
                self.check_row(
                    f"check realistic {size:,} rules",
                    path,
                    target="<= 5 s",
                    passes=lambda o, _: o.median <= 5,
                )
            else:
                self.check_row(f"check realistic {size:,} rules", path, target="-", passes=None)

    def group_load(self) -> None:
        """Loading 20,000 rules (1,000 in the quick run)."""
        templates, pools = sample_templates(), Pools.scan()
        size = 1000 if self.settings.quick else 20000
        path = self.write(f"load-{size}.rules", realistic(size, templates, self.stig, pools))
        self.check_row(
            f"check loading {size:,} rules",
            path,
            target="< 1 s",
            passes=lambda o, _: o.median < 1,
            peer=False,
        )

    def group_shape(self, name: str, build: Callable[[int, list[str]], str]) -> None:
        """One constructed shape at 10, 100 and 1,000 rules."""
        sizes = (10,) if self.settings.quick else (10, 100, 1000)
        for size in sizes:
            path = self.write(f"{name}-{size}.rules", build(size, self.stig))
            self.check_row(
                f"check {name} {size:,} (+{len(self.stig)} STIG rules)",
                path,
                target="< 1 s" if size == 1000 else "-",
                passes=(lambda o, _: o.median < 1) if size == 1000 else None,
            )
        if name == "wmax":
            path = self.write("wmax-9-lines.rules", wmax(9 - len(self.stig), self.stig))
            self.check_row(
                "check wmax 9-line file", path, target="< 0.2 s", passes=lambda o, _: o.median < 0.2
            )

    def group_template(self) -> None:
        """`check --cklb-template` on a checklist of 20,000 rules, against no template."""
        rules = self.write("template.rules", "\n".join(self.stig) + "\n")
        check = [self.settings.kmod_audit, "check", "--profile", "all", "--format", "cklb"]
        base = subprocess.run(
            [*check, str(rules)], capture_output=True, text=True, errors="replace", check=False
        )
        if base.returncode != 0:
            msg = (
                f"check --format cklb of the generated rules: exit {base.returncode}: "
                f"{base.stderr.strip()[-200:]}"
            )
            raise BenchError(msg)
        size = 20_000
        template = self.work / f"template-{size}.cklb"
        template.write_text(repeated_template(base.stdout, size))
        merge = [*check, "--cklb-template", str(template), str(rules)]
        cap = self.settings.cap
        ours, theirs = measure(
            self.settings,
            lambda: timed(merge, cap),
            (lambda: timed([*check, str(rules)], cap)) if self.settings.peers else None,
        )
        codes = {run.code for run in ours.runs if run.code is not None}
        note = "" if codes <= {0} else f"check exit {sorted(codes)}: {ours.runs[-1].err}"
        ok = not note and not ours.capped and ours.median < 2
        megabytes = template.stat().st_size / 1e6
        self.rows.append(
            Row(
                f"check --cklb-template, {size:,}-rule template ({megabytes:.1f} MB; "
                "peer: no template)",
                ours,
                theirs,
                "< 2 s",
                "PASS" if ok else "FAIL",
                note.strip()[-300:],
            )
        )

    def group_pigeonhole(self) -> None:
        """The pigeonholes of 3 to 9 attributes (issue 16: 8 took 47 s, 9 took 813 s)."""
        sizes = (3, 8) if self.settings.quick else tuple(range(3, 10))
        for attributes in sizes:
            path = self.write(
                f"pigeonhole-{attributes}.rules", pigeonhole(attributes, attributes + 1)
            )
            target, passes = "-", None
            if attributes == 8:
                target, passes = "< 1 s", (lambda o, _: o.median < 1)
            elif attributes == 9:
                target, passes = "< 5 s", (lambda o, _: o.median < 5)
            self.check_row(
                f"check constructed pigeonhole, {attributes} attributes "
                f"({attributes + 1} rules per ABI)",
                path,
                target=target,
                passes=passes,
            )
        if not self.settings.quick:
            path = self.write("pigeonhole-9-short.rules", pigeonhole(9, 9))
            self.check_row(
                "check constructed pigeonhole, 9 attributes, 9 rules (not covered)",
                path,
                target="< 5 s",
                passes=lambda o, _: o.median < 5,
            )

    def group_startup(self) -> None:
        """`check` on the 2-line generated file against `python -c 'import attrs'`.

        Both with the interpreter of the kmod-audit being timed, its package byte-compiled
        as `pip install` leaves it (see `byte_compile`).
        """
        python = str(Path(self.settings.kmod_audit).with_name("python"))
        if not os.access(python, os.X_OK):
            python = sys.executable
        generated = subprocess.run(
            [self.settings.kmod_audit, "generate"], capture_output=True, text=True, check=True
        )
        path = self.write("generated.rules", generated.stdout)
        settings = attrs.evolve(self.settings, runs=max(self.settings.runs, 15))
        cap = self.settings.cap
        ours, theirs = measure(
            settings,
            lambda: timed([self.settings.kmod_audit, "check", str(path)], cap),
            (lambda: timed([python, "-c", "import attrs"], cap)) if self.settings.peers else None,
        )
        codes = {run.code for run in ours.runs}
        note = "" if codes == {0} else f"check exit {sorted(codes, key=str)}"
        ok = not note and theirs is not None and ours.median <= 3 * theirs.median
        lines = len([line for line in generated.stdout.splitlines() if line.startswith("-")])
        self.rows.append(
            Row(
                f"check start-up, {lines}-line generated file (peer: import attrs)",
                ours,
                theirs,
                "<= 3x import attrs",
                "PASS" if ok else "FAIL",
                note,
            )
        )

    def group_verify(self) -> None:
        """`verify --target local` with a big log, against an empty log and ausearch."""
        if self.host_problem is not None:
            self.rows.append(_skipped("verify --target local", self.host_problem))
            return
        if shutil.which("auditd") is None or shutil.which("ausearch") is None:
            self.rows.append(_skipped("verify --target local", "auditd is not installed"))
            return
        registered = audit_status().get("pid", "0")
        if registered != "0":
            reason = f"another auditd (pid {registered}) is registered with the kernel"
            self.rows.append(_skipped("verify --target local", reason))
            return
        rules = self.write("verify.rules", "\n".join(self.stig) + "\n")
        empty_dir, big_dir = self.work / "auditd-empty", self.work / "auditd-big"
        with host_audit():
            load_rules(rules)
            seed = self._seed(empty_dir, rules)
            big_log = big_dir / "log" / "audit.log"
            size = _write_big_log(big_log, seed, self.settings.log_bytes)
            verify = [self.settings.kmod_audit, "verify", "--target", "local", "--timeout", "60"]
            ausearch = ["ausearch", "-if", str(big_log), "-k", STIG_KEY]
            empty, big, search = Side(), Side(), Side()
            start = time.monotonic()
            for _ in range(self.settings.runs):
                with auditd(empty_dir):
                    empty.runs.append(timed(verify, self.settings.cap))
                with auditd(big_dir):
                    big.runs.append(timed(verify, self.settings.cap))
                    if not search.capped:
                        search.runs.append(timed(ausearch, self.settings.cap))
                # After the first round (ausearch on the big log is the slow part, and it
                # runs once when capped) a round is two auditd starts and two verify runs.
                if time.monotonic() - start > 4 * self.settings.row_budget:
                    break
        label = f"{size / 1e9:.2f} GB" if size >= 1e8 else f"{size / 1e6:.0f} MB"
        codes = {run.code for run in big.runs + empty.runs}
        note = f"verify exit {sorted(codes, key=str)}" if codes - {0} else ""
        ok = not big.capped and not empty.capped and big.median <= 1.2 * empty.median
        self.rows.append(
            Row(
                f"verify --target local, {label} log (peer: empty log)",
                big,
                empty,
                "<= 1.2x empty log",
                "PASS" if ok else "FAIL",
                note,
            )
        )
        self.rows.append(
            Row(
                f"verify, {label} log (peer: ausearch -if LOG -k {STIG_KEY})",
                big,
                search,
                "-",
                "-",
            )
        )

    def _seed(self, directory: Path, rules: Path) -> bytes:
        """Real records: a verify run's and ordinary syscalls', from a fresh auditd's log."""
        noise = self.write(
            "noise.rules",
            f"-a always,exit -F arch=b64 -S openat,execve,close -F ppid={os.getpid()} -k noise\n",
        )
        with auditd(directory) as log:
            auditctl("-R", str(noise))
            for command in (["ls", "-la", "/etc", "/usr/bin"], ["cat", "/etc/services"], ["id"]):
                subprocess.run(command, capture_output=True, check=False)
            load_rules(rules)
            subprocess.run(
                [self.settings.kmod_audit, "verify", "--target", "local"],
                capture_output=True,
                check=False,
            )
            auditctl("-m", "kmod-audit bench seed end")
            deadline = time.monotonic() + 10
            while b"bench seed end" not in log.read_bytes() and time.monotonic() < deadline:
                time.sleep(0.05)
            seed = log.read_bytes()
        log.write_bytes(b"")
        return seed


def _join(first: str, second: str) -> str:
    return f"{first}; {second}" if first else second


def _skipped(what: str, why: str) -> Row:
    return Row(what, Side(), None, "-", "-", f"not run: {why}")


def _write_big_log(log: Path, seed: bytes, size: int) -> int:
    """Fill `log` with copies of the seed's records up to `size` bytes.

    Most of the log is the ordinary records; the events with the generated rules' key come
    once per 64 MB, so `ausearch -k` finds some without printing the whole log.
    """
    keyed_stamps: set[bytes] = set()
    stamp = re.compile(rb"msg=audit\(([0-9.:]+)\)")
    lines = seed.splitlines(keepends=True)
    for line in lines:
        match = stamp.search(line)
        if match and STIG_KEY.encode() in line:
            keyed_stamps.add(match.group(1))
    keyed: list[bytes] = []
    plain: list[bytes] = []
    for line in lines:
        match = stamp.search(line)
        (keyed if match and match.group(1) in keyed_stamps else plain).append(line)
    block = b"".join(plain) or seed
    block = block * max(1, (4 << 20) // max(len(block), 1))
    keyed_block = b"".join(keyed)
    log.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with log.open("wb") as handle:
        while written < size:
            if written % (64 << 20) < len(block):
                handle.write(keyed_block)
                written += len(keyed_block)
            handle.write(block)
            written += len(block)
    return written


@contextlib.contextmanager
def auditd(directory: Path) -> Iterator[Path]:
    """A private auditd writing DIR/log/audit.log, never rotated.

    The big log stays the one auditd writes and `verify` (which finds it through auditd's
    `-c DIR`) reads.
    """
    with private_auditd(directory, rotate=False) as daemon:
        yield daemon.log


# ---------------------------------------------------------------------------------------
# Output


def _aligned(cells: Sequence[Sequence[str]]) -> str:
    """Rows of cells as left-aligned columns, the first row a header underlined with dashes."""
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    out = []
    for index, line in enumerate(cells):
        out.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
        if index == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(part.rstrip() for part in out)


def table(rows: list[Row], cap: float) -> str:
    """The rows as an aligned text table."""
    header = ("what", "ours min / median", "peer min / median", "ratio", "target", "result")
    cells = [header]
    notes = []
    for row in rows:
        ratio = "-"
        if (
            row.peer is not None
            and row.peer.runs
            and row.ours.runs
            and not row.ours.capped
            and not row.peer.capped
            and row.peer.median > 0
        ):
            ratio = f"{row.ours.median / row.peer.median:.2f}x"
        elif row.ours.capped and row.peer is not None and row.peer.runs and not row.peer.capped:
            ratio = f"> {cap / row.peer.median:.0f}x"
        peer = row.peer.cell(cap) if row.peer is not None else "-"
        cells.append((row.what, row.ours.cell(cap), peer, ratio, row.target, row.verdict))
        if row.note:
            notes.append(f"  {row.what}: {row.note}")
    text = _aligned(cells)
    if notes:
        text += "\nnotes:\n" + "\n".join(notes)
    return text


def _interrupted(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001
    raise KeyboardInterrupt


def parse(argv: Sequence[str]) -> Settings:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="bench/run",
        description="Time kmod-audit against auditctl -R, ausearch, and itself (issue 9).",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, 2 runs: a smoke run")
    parser.add_argument(
        "--rows",
        default=",".join(GROUPS),
        help=f"comma-separated row groups (default all): {', '.join(GROUPS)}",
    )
    parser.add_argument("--runs", type=int, help="runs per side (default 5, quick 2)")
    parser.add_argument(
        "--cap", type=float, help="seconds before a run is killed (default 40, quick 20)"
    )
    parser.add_argument(
        "--kmod-audit",
        default=str(ROOT / ".venv" / "bin" / "kmod-audit"),
        help="the kmod-audit command to time (default: this checkout's .venv)",
    )
    parser.add_argument(
        "--log-mb", type=int, help="size of the big auditd log in MB (default 1000, quick 16)"
    )
    parser.add_argument(
        "--against",
        metavar="KMOD_AUDIT",
        help="compare with another build's kmod-audit (for example a checkout of the commit "
        "before a change, after its tools/setup): each row group runs for both builds in turn, "
        "and the table shows this build / the other per row",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="with --against: how often each group runs for each build, in the order "
        "A B, B A, ... (default 4)",
    )
    args = parser.parse_args(argv)
    rows = tuple(row.strip() for row in args.rows.split(",") if row.strip())
    unknown = [row for row in rows if row not in GROUPS]
    if unknown or not rows:
        parser.error(f"--rows: unknown group {unknown or args.rows!r}; choose from {GROUPS}")
    if args.runs is not None and args.runs < 1:
        parser.error("--runs: at least 1")
    if args.cap is not None and args.cap <= 0:
        parser.error("--cap: must be above 0")
    if not os.access(args.kmod_audit, os.X_OK):
        parser.error(f"--kmod-audit: {args.kmod_audit} is not executable (run tools/setup)")
    if args.against is not None and not os.access(args.against, os.X_OK):
        parser.error(
            f"--against: {args.against} is not executable (give the other build's "
            ".venv/bin/kmod-audit, after tools/setup in its checkout)"
        )
    if args.rounds < 1:
        parser.error("--rounds: at least 1")
    quick = args.quick
    comparing = args.against is not None
    return Settings(
        runs=args.runs or (2 if quick else 3 if comparing else 5),
        cap=args.cap or (20.0 if quick else 40.0),
        row_budget=5.0 if quick else 15.0,
        quick=quick,
        kmod_audit=args.kmod_audit,
        log_bytes=(args.log_mb or (16 if quick else 1000)) * 1_000_000,
        rows=rows,
        # A comparison is longer (both builds, several rounds) and must not thin out late rows.
        deadline=time.monotonic() + (120 if quick else 7200 if comparing else 420),
        against=args.against,
        rounds=args.rounds,
        peers=not comparing,
    )


SHAPES: dict[str, Callable[[int, list[str]], str]] = {
    "wmax": wmax,
    "filler": filler,
    "auid-ranges": auid_ranges,
    "exe-never": exe_never,
}


def run_group(bench: Bench, group: str) -> None:
    """Run one row group, holding the host audit lock while it may load rules."""
    if group == "verify":
        bench.group_verify()
        return
    if group == "startup":
        bench.group_startup()
        return
    if group == "template":  # never touches the host's audit
        bench.group_template()
        return
    with contextlib.ExitStack() as stack:
        if bench.host_problem is None:
            stack.enter_context(host_audit())
        if group == "realistic":
            bench.group_realistic()
        elif group == "load":
            bench.group_load()
        elif group == "pigeonhole":
            bench.group_pigeonhole()
        else:
            bench.group_shape(group, SHAPES[group])


def compare(settings: Settings, against: str, work: Path) -> list[tuple[str, Side, Side]]:
    """Each row of the selected groups timed for this build and for the build `against`.

    The builds take turns group by group (A B, then B A, ...), so a change in the machine's
    load during the run falls on both; the runs of each build are pooled per row. Both judge
    the same files: the constructed ones end with this build's generated rules.
    """
    builds = (settings.kmod_audit, against)
    pooled: dict[str, tuple[Side, Side]] = {}
    stig: list[str] | None = None
    for group in GROUPS:
        if group not in settings.rows:
            continue
        for round_ in range(settings.rounds):
            for side in (0, 1) if round_ % 2 == 0 else (1, 0):
                build = builds[side]
                print(f"bench: {group} ({build}) ...", file=sys.stderr, flush=True)
                bench = Bench(attrs.evolve(settings, kmod_audit=build), work, stig)
                stig = bench.stig if stig is None else stig
                try:
                    run_group(bench, group)
                except (BenchError, HostAuditError) as exc:
                    bench.rows.append(_skipped(group, str(exc)))
                seen: list[Side] = []
                for row in bench.rows:
                    if any(row.ours is side for side in seen):
                        continue  # a second row of the same runs against another peer
                    seen.append(row.ours)
                    sides = pooled.setdefault(row.what, (Side(), Side()))
                    sides[side].runs.extend(row.ours.runs)
    return [(what, this, other) for what, (this, other) in pooled.items()]


def comparison_table(rows: list[tuple[str, Side, Side]], cap: float) -> tuple[str, int]:
    """The comparison as a text table, and how many rows are more than 10% slower."""
    header = ("what", "this min / median", "other min / median", "this / other", "result")
    cells = [header]
    slower = 0
    for what, this, other in rows:
        ratio, result = "-", "-"
        if this.runs and other.runs and not this.capped and not other.capped:
            value = this.median / other.median if other.median > 0 else 1.0
            ratio = f"{value:.2f}"
            result = "ok" if value <= SLOWER else "SLOWER"
            slower += result == "SLOWER"
        elif this.capped and not other.capped:
            result = "SLOWER"
            slower += 1
        cells.append((what, this.cell(cap), other.cell(cap), ratio, result))
    return _aligned(cells), slower


def byte_compile(kmod_audit: str) -> None:
    """Byte-compile the kmod_audit package that `kmod_audit` runs, as `pip install` does.

    An editable checkout run with PYTHONDONTWRITEBYTECODE=1 (set on some CI machines) never
    writes bytecode, so every run would compile the whole package again (about 45 ms, a
    third of a start-up) and time the compiler rather than kmod-audit.
    """
    python = Path(kmod_audit).with_name("python")
    if not os.access(python, os.X_OK):
        return
    found = subprocess.run(
        [str(python), "-c", "import kmod_audit, os; print(os.path.dirname(kmod_audit.__file__))"],
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode == 0:
        subprocess.run(
            [str(python), "-m", "compileall", "-q", found.stdout.strip()],
            capture_output=True,
            check=False,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected rows and print the table; 0 when it was printed."""
    settings = parse(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGHUP, _interrupted)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="kmod-audit-bench-"))
    try:
        byte_compile(settings.kmod_audit)
        if settings.against is not None:
            byte_compile(settings.against)
            compared = compare(settings, settings.against, work)
            return _print_comparison(settings, compared, started)
        bench = Bench(settings, work)
        for group in GROUPS:
            if group not in settings.rows:
                continue
            print(f"bench: {group} ...", file=sys.stderr, flush=True)
            try:
                run_group(bench, group)
            except (BenchError, HostAuditError) as exc:
                bench.rows.append(_skipped(group, str(exc)))
    except (BenchError, HostAuditError) as exc:
        print(f"bench/run: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench/run: interrupted; host audit state restored", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)
    kind = "quick run" if settings.quick else "full run"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    shown = _shown(settings.kmod_audit)
    print(
        f"kmod-audit bench, {when} ({kind}: up to {settings.runs} runs per side, alternating; "
        f"cap {settings.cap:g} s; {os.cpu_count()} CPUs; {shown})"
    )
    print("peer: auditctl -R on the same file, unless the row names another")
    print(table(bench.rows, settings.cap))
    waited = f" ({sum(LOCK_WAITS):.0f} s of it waiting for the lock)" if LOCK_WAITS else ""
    print(f"total {time.monotonic() - started:.0f} s{waited}")
    return 0


def _shown(command: str) -> str:
    return str(Path(command).relative_to(ROOT)) if Path(command).is_relative_to(ROOT) else command


def _print_comparison(
    settings: Settings, rows: list[tuple[str, Side, Side]], started: float
) -> int:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(
        f"kmod-audit bench comparison, {when} (this: {_shown(settings.kmod_audit)}; other: "
        f"{settings.against}; {settings.rounds} rounds of up to {settings.runs} runs per build, "
        f"taking turns; cap {settings.cap:g} s; {os.cpu_count()} CPUs)"
    )
    text, slower = comparison_table(rows, settings.cap)
    print(text)
    print(f"rows more than {round((SLOWER - 1) * 100)}% slower: {slower}")
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
