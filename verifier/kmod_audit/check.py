"""`kmod-audit check`: judge loaded rules against the profiles and build a report."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Final

import attrs

from ._verbose import logger, nested
from .augenrules import MAX_TIE_ORDERS, Assembly
from .errors import TransportError
from .evaluate import (
    AT_FORK_NOTE,
    LAYOUT_TEXT,
    LAYOUTS,
    Context,
    Coverage,
    ExecFile,
    ExecOrder,
    Layout,
    RequiredEvent,
    at_fork,
    evaluate,
    exec_order,
)
from .generate import DEFAULT_KEY, generate_lines, validate_key
from .loader import Drift, RuleSet, compare, load, without
from .profiles import Profile, Requirement
from .report import (
    CheckResult,
    Finding,
    ProfileResult,
    Report,
    RequirementResult,
    SourceReport,
)
from .rules import (
    THIS_MACHINE,
    UID_UNSET,
    Command,
    Rule,
    RulesSource,
    TargetFiles,
    ThisMachine,
    parse_rules,
)
from .sources import OnDiskRules, discover_on_disk, rules_d_assemblies
from .syscalls import Machine
from .system import auditctl_list, auditctl_status, read_rules_text

__all__ = [
    "CheckRun",
    "Options",
    "drift_findings",
    "judge",
    "judge_source",
    "run_check",
    "tool_programs",
]

_TOOL_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin", "/run/current-system/sw/bin")
#: The seconds one `kmod-audit check` may spend judging, all sources and targets together
#: (each target also stops at `evaluate.TIME_LIMIT`): what is left is undecided (exit 3),
#: so that any rules file is answered within 5 s.
JUDGING_TIME: Final = 3.5


@attrs.frozen(kw_only=True)
class Options:
    """What a judgement depends on besides the rules.

    Attributes:
        machine: The machine whose kernel loads the rules.
        profiles: The profiles to judge.
        uid_min: First uid of real users.
        key: The key records must carry; None accepts any non-empty key.
        kmod_path: The real path of the kmod binary.
        strict: Also demand the literal `auid>=N` / `auid!=unset` filters.
        files: What is known of the target's files (watch parents, `-w` on a directory):
            this machine's (live), a copy of the target's (`--root`), or none.
        deadline: A `time.monotonic()` time after which judging stops (undecided); None:
            only each target's own time limit.
        kernel: The kernel release the rules are judged for (`uname -r` when live,
            `--kernel-version`); None: not known, every kernel is judged and the worst
            counts.
        layout: How the target links /bin and /sbin into /usr, when not `live` (read
            from `--root`); None: not known, every `Layout` is judged.
    """

    machine: Machine
    profiles: tuple[Profile, ...]
    uid_min: int = 1000
    key: str | None = None
    kmod_path: str = "/usr/bin/kmod"
    strict: bool = False
    files: TargetFiles = THIS_MACHINE
    deadline: float | None = None
    kernel: str | None = None
    layout: Layout | None = None

    @property
    def live(self) -> bool:
        """Whether the rules are judged on the machine that loads them (its files)."""
        return isinstance(self.files, ThisMachine)

    @property
    def exec_order(self) -> ExecOrder | None:
        """How the kernel judged for orders an exec; None when it is not known."""
        return exec_order(self.kernel)

    def context(self, order: ExecOrder | None = None, layout: Layout = "split") -> Context:
        """The evaluator's context (for the exec order `order`, by default the kernel's)."""
        return Context(
            uid_min=self.uid_min,
            key=self.key,
            live=self.live,
            deadline=self.deadline,
            exec_order=order or self.exec_order or "open-first",
            layout=layout,
            files=None if self.live else self.files,
        )

    def as_pairs(self) -> tuple[tuple[str, object], ...]:
        """The options for the report."""
        return (
            ("arch", self.machine.name),
            ("profiles", [p.id for p in self.profiles]),
            ("uid_min", self.uid_min),
            ("key", self.key),
            ("kmod_path", self.kmod_path),
            ("strict", self.strict),
            ("live", self.live),
            ("kernel", self.kernel),
            ("layout", self.layout),
        )


#: The exec orders a kernel may have (`evaluate.ExecOrder`), the common one first.
_ORDERS: Final[tuple[ExecOrder, ExecOrder]] = ("open-first", "argv-first")
#: The part of a reason that says the target's directory links decide.
UNKNOWN_FILES_NOTE: Final = (
    "the target's files are not read (judge the rules on that machine, or name the kmod "
    "path as it is spelled there with --kmod-path), so every layout of /bin, /sbin and /lib* "
    "is judged"
)
#: The part of a reason that says a file of the target decides whether a line loads.
UNREAD_NOTE: Final = (
    "the target's files are not read (judge the rules on that machine, or pass --root DIR, a "
    "copy of its root filesystem)"
)
#: At most this many lines whose loading depends on a file of the target that is not read
#: are judged refused, one world each (`judge_source`); past them, what passes is undecided.
MAX_UNREAD_WORLDS: Final = 16
#: The part of a reason that says the kernel's version decides.
UNKNOWN_KERNEL_NOTE: Final = (
    "the kernel the rules are for is not known (pass --kernel-version V, or judge them on "
    "the machine itself), so every kernel is judged"
)


def tool_programs(tools: Sequence[str], options: Options) -> list[ExecFile]:
    """The distinct real programs behind `tools` (usually all the kmod binary).

    `kmod` is `--kmod-path`. Other tools (insmod, modprobe...) are looked up on this
    machine when live; on every current distribution they are symlinks to kmod, and we
    assume so when not live.
    """
    kmod = ExecFile.at(options.kmod_path, files=options.files)
    programs = [kmod]
    if not options.live:
        return programs
    for tool in tools:
        if tool == "kmod":
            continue
        found = shutil.which(tool) or next(
            (os.path.join(d, tool) for d in _TOOL_DIRS if os.path.exists(os.path.join(d, tool))),
            None,
        )
        if found is None:
            continue
        program = ExecFile.at(found, files=THIS_MACHINE)
        if all(p.identity != program.identity or p.identity is None for p in programs):
            programs.append(program)
    return programs


def _targets(req: Requirement, options: Options) -> list[tuple[str, RequiredEvent | None]]:
    """(label, target) per check of `req`; target None when the syscall does not exist.

    An execution of the tools is one check per program they resolve to.
    """
    calls = req.calls(options.machine)
    out: list[tuple[str, RequiredEvent | None]] = [
        (
            call.label(),
            RequiredEvent(call.abi, call.syscall, call.number) if call.number is not None else None,
        )
        for call in calls
        if not call.execution
    ]
    executions = [
        (call, number) for call in calls if call.execution and (number := call.number) is not None
    ]
    if executions:
        for program in tool_programs(req.tools, options):
            out.extend(
                (call.label(program.path), RequiredEvent(call.abi, call.syscall, number, program))
                for call, number in executions
            )
    return out


def _describe(rule: Rule) -> str:
    return f"{rule.origin}: {rule.origin.text.strip()}"


def _strict_problem(rule: Rule, uid_min: int) -> str | None:
    has_min = any(
        f.name == "auid" and f.op == ">=" and f.value == uid_min and not f.compare
        for f in rule.fields
    )
    has_set = any(
        f.name == "auid" and f.op == "!=" and f.value == UID_UNSET and not f.compare
        for f in rule.fields
    )
    missing = [
        text
        for text, present in ((f"-F auid>={uid_min}", has_min), ("-F auid!=unset", has_set))
        if not present
    ]
    if missing:
        return f"--strict: {rule.origin} lacks the literal filter(s) {' and '.join(missing)}"
    return None


@attrs.frozen
class _Judge:
    ruleset: RuleSet
    options: Options
    disabled: str | None
    hypothetical: RuleSet | None
    #: The listing read with every listed watch as `never` (None when it has none).
    never_reading: RuleSet | None = None
    #: Coverage by target: profiles share targets (b64 init_module is in all four).
    judged: dict[RequiredEvent, Coverage] = attrs.field(factory=dict)

    def coverage(self, target: RequiredEvent) -> Coverage:
        """The coverage of `target` in every world it may meet (`_evaluate`), once per rule set."""
        found = self.judged.get(target)
        if found is None:
            found = self.judged[target] = self._evaluate(target)
        return found

    def _evaluate(self, target: RequiredEvent, ruleset: RuleSet | None = None) -> Coverage:
        """Judge `target` in `ruleset` (default: the rules) in every world it may meet.

        An exec on a kernel that copies argv first (or one not known) is judged both ways:
        there an EFAULT or E2BIG exec usually ends before the open, but may end after it
        (a stack that cannot grow), with the file named, as open-first judges it. Without
        the target's files, an exec is judged for every `Layout` of its directory links.
        The worse counts: a failure in the first world (the rules as spelled, the kernel's
        order) first, then one in another (its reason names that world), then undecided.
        Covered in every world, the rules that record it are those of every world (the
        `exit=` lines only argv-first kernels need).
        """
        ruleset = ruleset or self.ruleset
        known = self.options.exec_order
        if target.program is None:
            return evaluate(ruleset, target, self.options.context())
        # An argv-first kernel fails some execs before the open (no file named) and may
        # fail others with the same exit after it (file named: as open-first judges them).
        orders: tuple[ExecOrder, ...] = ("open-first",) if known == "open-first" else _ORDERS
        layouts: tuple[Layout, ...] = (
            ("split",)
            if self.options.live
            else (self.options.layout,)
            if self.options.layout is not None
            else LAYOUTS
        )
        worlds = [
            (order, layout, evaluate(ruleset, target, self.options.context(order, layout)))
            for layout in layouts
            for order in orders
        ]
        failed = [w for w in worlds if not w[2].covered and w[2].undecided is None]
        if failed:
            order, layout, found = failed[0]
            said = []
            # Name the world only where another one decides otherwise.
            if len({w[2].covered for w in worlds if w[0] == order}) > 1:
                said.append(f"{UNKNOWN_FILES_NOTE}; this is on {LAYOUT_TEXT[layout]}")
            if known is None and len({w[2].covered for w in worlds if w[1] == layout}) > 1:
                said.append(UNKNOWN_KERNEL_NOTE)
            if found.note:
                said.append(found.note)
            return attrs.evolve(found, note=": ".join(said) or None)
        undecided = [w[2] for w in worlds if w[2].undecided is not None]
        if undecided:
            return undecided[0]
        place = {id(rule): i for i, rule in enumerate((*ruleset.task, *ruleset.exit))}
        rules = {id(rule): rule for w in worlds for rule in w[2].rules}
        ordered = tuple(rules[i] for i in sorted(rules, key=lambda i: place.get(i, len(place))))
        return attrs.evolve(worlds[0][2], rules=ordered)

    def requirement(self, req: Requirement) -> RequirementResult:
        checks: list[CheckResult] = []
        rules: dict[str, None] = {}
        for label, target in _targets(req, self.options):
            if target is None:
                checks.append(
                    CheckResult(
                        target=label,
                        status="n/a",
                        reason=f"{label}: not applicable, the syscall does not exist on "
                        f"{self.options.machine.name} ({label.split()[0]})",
                    )
                )
                continue
            if self.disabled is not None:
                checks.append(
                    CheckResult(target=label, status="fail", reason=f"{label}: {self.disabled}")
                )
                continue
            coverage = self.coverage(target)
            checks.append(self._check(label, target, coverage, req))
            for rule in coverage.rules:
                rules.setdefault(_describe(rule))
        applicable = any(c.status != "n/a" for c in checks)
        failed = [c for c in checks if c.status == "fail"]
        undecided = [c for c in checks if c.status == "undecided"]
        if failed:
            reasons = tuple(c.reason for c in failed)
        elif undecided:
            reasons = tuple(c.reason for c in undecided)
        elif applicable:
            reasons = tuple(c.reason for c in checks if c.status == "pass")
        else:
            reasons = tuple(c.reason for c in checks)
        fix = (
            tuple(
                generate_lines(
                    [req],
                    machine=self.options.machine,
                    key=self.options.key or self.fix_key(),
                    uid_min=self.options.uid_min,
                    kmod_path=self.options.kmod_path,
                )
            )
            if failed
            else ()
        )
        return RequirementResult(
            id=req.id,
            title=req.title,
            status="fail" if failed else "undecided" if undecided else "pass",
            reasons=reasons,
            rules=tuple(rules),
            checks=tuple(checks),
            references=req.references,
            fix=fix,
            applicable=applicable,
        )

    def fix_key(self) -> str:
        """The key for suggested fix lines: the one the source uses most, if usable."""
        counts: dict[str, int] = {}
        for item in self.ruleset.source.items:
            rule = getattr(item, "rule", None)
            if isinstance(rule, Rule) and rule.list == "exit":
                for key in rule.keys:
                    counts[key] = counts.get(key, 0) + 1
        usable = [k for k in sorted(counts, key=lambda k: -counts[k]) if validate_key(k) is None]
        return usable[0] if usable else DEFAULT_KEY

    def _check(
        self, label: str, target: RequiredEvent, coverage: Coverage, req: Requirement
    ) -> CheckResult:
        described = tuple(_describe(rule) for rule in coverage.rules)
        if coverage.undecided is not None:
            return CheckResult(target=label, status="undecided", reason=coverage.reason())
        if coverage.covered:
            if self.options.strict and req.strict_filters:
                problems = [
                    p
                    for p in (_strict_problem(r, self.options.uid_min) for r in coverage.rules)
                    if p is not None
                ]
                if problems:
                    return CheckResult(
                        target=label,
                        status="fail",
                        reason=f"{label}: " + "; ".join(problems),
                        rules=described,
                    )
            if self.never_reading is not None:
                worst = self._evaluate(target, self.never_reading)
                unsure = _listed_never(self.never_reading, target, coverage, worst)
                if unsure is not None:
                    return CheckResult(target=label, status="undecided", reason=unsure)
            return CheckResult(
                target=label, status="pass", reason=coverage.reason(), rules=described
            )
        reason = coverage.reason()
        outcome = coverage.outcome
        if outcome is not None and outcome.verdict == "never":
            reason += "; remove or narrow that rule, or put the fix lines before it (-A)"
        if target.program is not None and outcome is not None and outcome.verdict == "unmatched":
            hints = _watch_hints(self.ruleset, target.program, target.number)
            reason += "".join(f"; {hint}" for hint in hints)
        forked = [
            rule
            for rule in self.ruleset.task
            if rule.action == "always" and rule.keys and any(at_fork(f) for f in rule.fields)
        ]
        if forked:
            rules = ", ".join(f"{rule.origin} `{rule.origin.text.strip()}`" for rule in forked)
            reason += (
                f"; {rules} records a task's syscalls only if it matched {AT_FORK_NOTE}: a "
                "task rule compares the ids, login uid and session the task had at fork, "
                "which may differ at its module syscall (a setuid program, a login "
                "session's own process), so kmod-audit does not count on it"
            )
        stopped = self.ruleset.stopped_at
        unless = next(
            (i.unless for i in self.ruleset.issues if i.origin == stopped and i.unless), None
        )
        if unless is not None:
            reason += f"; this is on a target that has no {unless}, which may be: {UNREAD_NOTE}"
        if self.hypothetical is not None and stopped is not None:
            would = evaluate(self.hypothetical, target, self.options.context())
            unloaded = set(self.ruleset.not_loaded)
            helpers = [r for r in would.rules if r.origin in unloaded]
            if would.covered and helpers:
                lines = ", ".join(str(r.origin) for r in helpers)
                reason += (
                    f"; {lines} would record it but never loads: `auditctl -R` stops at {stopped}"
                )
            else:
                reason += f"; note that `auditctl -R` stops at {stopped} (see the findings)"
        return CheckResult(target=label, status="fail", reason=reason, rules=described)


def _never_reading(ruleset: RuleSet) -> RuleSet | None:
    """The rule set with every watch line of a listing read as a `never` rule, or None.

    `auditctl -l` prints `-a never,exit -F path=P -F perm=x -k k` as `-w P -p x -k k`,
    exactly as the `always` rule (audit-userspace print_rule prints no action for a rule
    it takes for a watch), so a listed watch may be either. Reading one as `never` only
    turns records into no records, never the reverse (its matches do not change): this
    reading is the worst, the `always` one the best, and a target both cover is covered
    whatever the kernel holds.
    """
    if not any(rule.listed_watch and rule.action == "always" for rule in ruleset.exit):
        return None
    return attrs.evolve(
        ruleset,
        exit=tuple(
            attrs.evolve(rule, action="never") if rule.listed_watch else rule
            for rule in ruleset.exit
        ),
    )


def _listed_never(
    never_reading: RuleSet, target: RequiredEvent, covered: Coverage, worst: Coverage
) -> str | None:
    """Why a target covered by the listing as read is undecided, or None when it is covered.

    None when the target is covered also with every listed watch as `never` (`worst`, its
    judgement in `never_reading`); otherwise the listed watch(es) whose action decides it,
    and what to judge instead.
    """
    if worst.undecided is not None:
        return worst.reason()
    if worst.covered:
        return None
    deciding = worst.outcome.rule if worst.outcome is not None else None
    if deciding is not None and deciding.listed_watch:
        watches: list[Rule] = [deciding]
    else:
        watches = [rule for rule in covered.rules if rule.listed_watch]
    if not watches:  # pragma: no cover - only a listed watch differs between the readings
        watches = [rule for rule in never_reading.exit if rule.listed_watch]
    said = "; ".join(
        f"{rule.origin} `{rule.origin.text.strip()}` records it only as an `always` rule, "
        f"and auditctl -l prints `{_as_never(rule)}` as this watch too"
        for rule in watches
    )
    return (
        f"{target}: {said}; a listing cannot tell them apart: judge the rules file, or the "
        "running rules with --running (read over netlink, exact)"
    )


def _as_never(rule: Rule) -> str:
    """The `-a never,exit` rule that `auditctl -l` prints as the watch `rule`."""
    words = ["-a never,exit", *(field.render() for field in rule.fields)]
    words += [f"-k {key}" for key in rule.keys]
    return " ".join(words)


def _watch_hints(ruleset: RuleSet, program: ExecFile, number: int) -> list[str]:
    """Explain execution rules that name the program but cannot fire for it."""
    hints: list[str] = []
    for rule in ruleset.exit:
        for field in rule.fields:
            if field.compare or field.name not in {"path", "exe"}:
                continue
            path = str(field.value)
            if os.path.normpath(path) == program.path:
                perm = rule.field("perm")
                if field.name == "path" and perm is not None and not int(perm.value) & 1:
                    hints.append(
                        f"{rule.origin} watches {path} with -p {perm.text}, which lacks x "
                        "(execution)"
                    )
                relevant = rule.syscalls is None or number in rule.syscalls
                if field.name == "exe" and field.op == "=" and relevant:
                    hints.append(
                        f"{rule.origin} filters on exe={path}, which matches only the "
                        "executions that succeed: after a failed exec the process still runs "
                        f"the caller's program; watch the file (-F path={program.path} "
                        "-F perm=x) to record every execution"
                    )
            elif os.path.realpath(path) == program.path and os.path.islink(path):
                hints.append(
                    f"{rule.origin} names {path}, a symlink to {program.path}: the kernel "
                    "watches the link itself, which is never executed; name "
                    f"{program.path} instead"
                )
    return hints


def _findings(ruleset: RuleSet) -> list[Finding]:
    findings: list[Finding] = []
    for issue in ruleset.issues:
        message = issue.message
        if issue.stops and ruleset.not_loaded:
            first, last = ruleset.not_loaded[0].line, ruleset.not_loaded[-1].line
            span = (
                f"line {first} never loads" if first == last else f"lines {first}-{last} never load"
            )
            message += f" (auditctl -R stops here: {span})"
        elif issue.stops:
            message += " (auditctl -R stops here)"
        hint = issue.hint
        if issue.unless is not None:
            # One possible target, judged because it is the worst: say so, as a warning.
            message = f"if {issue.unless} does not exist on the target: {message}"
            hint = f"{UNREAD_NOTE}; where it does not: {hint}"
        findings.append(
            Finding(
                path=issue.origin.path,
                line=issue.origin.line,
                text=issue.origin.text,
                message=message,
                hint=hint,
                severity="error" if issue.unless is None else "warning",
            )
        )
    warned = (
        "auditctl accepts the line but warns; see the requirement results"
        if ruleset.source.syntax == "rules"
        else "the requirement results count the worse reading of the line"
    )
    findings.extend(
        Finding(
            path=origin.path,
            line=origin.line,
            text=origin.text,
            message=warning,
            hint=warned,
            severity="warning",
        )
        for origin, warning in ruleset.warnings
    )
    if ruleset.enabled == 0 and ruleset.enabled_origin is not None:
        origin = ruleset.enabled_origin
        findings.append(
            Finding(
                path=origin.path,
                line=origin.line,
                text=origin.text,
                message="`-e 0` disables auditing: no records are produced",
                hint="end the rules with `-e 1` (or `-e 2` to lock them)",
            )
        )
    return findings


def judge(
    ruleset: RuleSet,
    options: Options,
    *,
    label: str,
    enabled: int | None = None,
) -> SourceReport:
    """Judge a loaded rule set against `options.profiles`.

    Args:
        ruleset: The loaded rules.
        options: Machine, profiles, uid-min, key...
        label: How the report names the source.
        enabled: The kernel's enabled flag when judging running rules (`auditctl -s`).

    Returns:
        The source's report.
    """
    disabled: str | None = None
    findings = _findings(ruleset)
    if enabled == 0:
        disabled = "audit is disabled in the kernel (auditctl -s: enabled 0)"
        findings.append(
            Finding(
                path=ruleset.source.path,
                line=0,
                text="",
                message=disabled,
                hint="enable it (`auditctl -e 1`, boot with audit=1; NixOS: "
                "security.audit.enable = true)",
            )
        )
    elif ruleset.enabled == 0 and ruleset.enabled_origin is not None:
        disabled = f"audit is disabled by `-e 0` at {ruleset.enabled_origin}"
    hypothetical = (
        load(ruleset.source, files=options.files, keep_going=True, refuse=ruleset.refused)
        if ruleset.stopped_at is not None
        else None
    )
    judge_ = _Judge(ruleset, options, disabled, hypothetical, _never_reading(ruleset))
    profiles = [
        ProfileResult.of(profile, [judge_.requirement(req) for req in profile.requirements])
        for profile in options.profiles
    ]
    return SourceReport(
        label=label,
        path=ruleset.source.path,
        syntax=ruleset.source.syntax,
        profiles=tuple(profiles),
        findings=tuple(findings),
        rule_count=len(ruleset.rules),
    )


def judge_source(
    source: RulesSource, options: Options, *, label: str, enabled: int | None = None
) -> tuple[RuleSet, SourceReport]:
    """Load and judge a parsed source.

    A line that loads only where a file of the target is there (a watch's parent
    directory), when the target's files are not read: the rules are judged with every such
    file there, and with each such line refused in turn (`loader.without`); the worst
    counts. Past `MAX_UNREAD_WORLDS` such lines, what passes is undecided.
    """
    ruleset = load(source, files=options.files)
    report = judge(ruleset, options, label=label, enabled=enabled)
    if not ruleset.unread:
        return ruleset, report
    judged = [(ruleset, report)]
    for unread in ruleset.unread[:MAX_UNREAD_WORLDS]:
        world = without(ruleset, unread)
        judged.append((world, judge(world, options, label=label, enabled=enabled)))
    worst_ruleset, worst = _worst(judged)
    unjudged = ruleset.unread[MAX_UNREAD_WORLDS:]
    if unjudged:
        reason = (
            f"kmod-audit cannot decide: {len(ruleset.unread)} lines load only where a "
            f"directory they need exists on the target, {UNREAD_NOTE}; the rules pass with "
            f"each of the first {MAX_UNREAD_WORLDS} refused, the rest were not judged (from "
            f"{unjudged[0].origin}: {unjudged[0].path})"
        )
        worst = _undecided(worst, "files of the target", reason)
    return worst_ruleset, worst


# --------------------------------------------------------------------------------------
# The check pipeline: where the rules come from, judged, and the drift between them


def _judge_rules_d(
    path: str, assemblies: Sequence[Assembly], how: str, options: Options, label: str
) -> tuple[RuleSet, SourceReport]:
    """Judge rules.d as augenrules assembles it; when the dialects differ, the worst one."""
    judged: list[tuple[RuleSet, SourceReport]] = []
    for assembly in assemblies:
        source = parse_rules(
            assembly.text,
            path=path,
            machine=options.machine,
            files=options.files,
            origins=assembly.origins,
            syntax="rules",
        )
        with nested(f"judging {label}"):
            ruleset, report = judge_source(source, options, label=label)
        notes = [
            Finding(
                path=path,
                line=0,
                text="",
                message=f"augenrules: {note}",
                hint="augenrules reads only names ending in .rules: put the rules into "
                "rules.d as NAME.rules"
                if "holds no *.rules file" in note
                else "name rules files with no blanks or glob characters, and end each "
                "file with a newline",
                severity="warning",
            )
            for note in assembly.notes
        ]
        if len(assemblies) > 1:
            # In the label, not a finding: it is about the machine, not a line of a file.
            report = attrs.evolve(
                report,
                label=f"{label}; how augenrules assembles it depends on its version, awk "
                f"and locale ({how}), and the {len(assemblies)} possible results differ: "
                f"judged as the worst, {assembly.describe()}",
            )
        judged.append((ruleset, attrs.evolve(report, findings=(*report.findings, *notes))))
    ruleset, report = _worst(judged)
    unjudged = max(assembly.unjudged_orders for assembly in assemblies)
    if unjudged:
        # Only passes change: an order not judged may fail them (failures stay failures).
        report = _undecided_orders(report, unjudged)
    return ruleset, report


_RANK: Final = {"fail": 0, "undecided": 1, "pass": 2}


def _worst(judged: Sequence[tuple[RuleSet, SourceReport]]) -> tuple[RuleSet, SourceReport]:
    """The worst of several possible rule sets, requirement by requirement.

    The rule set and findings are those of the first that fails, else the first that is
    not compliant (undecided), else the first. Each requirement is the worst any of them
    gives it (fail, then undecided, then pass), with that one's reasons and checks: a
    requirement that fails in one possibility and passes in the chosen one is no pass.
    """
    ruleset, report = next(
        (pair for pair in judged if pair[1].failed),
        next((pair for pair in judged if not pair[1].compliant), judged[0]),
    )
    worst: dict[tuple[str, str], RequirementResult] = {}
    for _, other in judged:
        for profile in other.profiles:
            for req in profile.requirements:
                known = worst.get((profile.id, req.id))
                if known is None or _RANK[req.status] < _RANK[known.status]:
                    worst[profile.id, req.id] = req
    profiles = []
    for profile in report.profiles:
        requirements = tuple(worst[profile.id, req.id] for req in profile.requirements)
        profiles.append(
            attrs.evolve(
                profile,
                requirements=requirements,
                compliant=all(req.status == "pass" for req in requirements),
            )
        )
    return ruleset, attrs.evolve(report, profiles=tuple(profiles))


def _undecided_orders(report: SourceReport, unjudged: int) -> SourceReport:
    """What passes in every judged order of tied names, but not every order was judged."""
    reason = (
        f"kmod-audit cannot decide: sort -V ties some rules file names, the locale that "
        f"breaks the ties is not known, and {MAX_TIE_ORDERS + unjudged} orders are possible; "
        f"the {MAX_TIE_ORDERS} judged all pass, {unjudged} were not. Rename the files so that no "
        "two names differ only in leading zeros (x0.rules, x00.rules), or check on the "
        "machine itself"
    )
    return _undecided(report, "order of files", reason)


def _undecided(report: SourceReport, what: str, reason: str) -> SourceReport:
    """`report` with every applicable requirement that passes undecided, for `reason`."""
    profiles = tuple(
        attrs.evolve(
            profile,
            compliant=False,
            requirements=tuple(
                attrs.evolve(
                    req,
                    status="undecided",
                    reasons=(reason,),
                    checks=(
                        CheckResult(target=what, status="undecided", reason=reason),
                        *req.checks,
                    ),
                )
                if req.status == "pass" and req.applicable
                else req
                for req in profile.requirements
            ),
        )
        for profile in report.profiles
    )
    return attrs.evolve(report, profiles=profiles)


def _judge_on_disk(on_disk: OnDiskRules, options: Options) -> tuple[RuleSet, SourceReport]:
    """Judge what the next start of audit loads; when that is not known, the worst case."""
    if on_disk.alternatives:
        judged = [_judge_on_disk(one, options) for one in on_disk.alternatives]
        ruleset, report = _worst(judged)
        label = (
            f"{report.label}; what the next start of audit loads is not known, so "
            f"{len(judged)} possibilities were judged and this, the worst, is reported: "
            + ", ".join(one.path for one in on_disk.alternatives)
        )
        return ruleset, attrs.evolve(report, label=label)
    if on_disk.assemblies:
        return _judge_rules_d(on_disk.path, on_disk.assemblies, on_disk.how, options, on_disk.label)
    source = parse_rules(
        on_disk.text,
        path=on_disk.path,
        machine=options.machine,
        files=options.files,
        origins=on_disk.origins,
        syntax="rules",
    )
    return judge_source(source, options, label=on_disk.label)


def _load_file(path: str, options: Options) -> tuple[RuleSet, SourceReport]:
    if path != "-" and os.path.isdir(path):
        assemblies, how = rules_d_assemblies(path, live=options.live)
        label = f"rules directory {path} (as augenrules assembles it)"
        return _judge_rules_d(path, assemblies, how, options, label)
    text = read_rules_text(path)
    source = parse_rules(
        text,
        path=path if path != "-" else "<stdin>",
        machine=options.machine,
        files=options.files,
    )
    kind = "captured auditctl -l output" if source.syntax == "listing" else "rules file"
    label = f"{kind} {path if path != '-' else '<stdin>'}"
    if source.syntax_reason:
        # Say why: a rules file is judged with auditctl -R's stop at the first bad line.
        label += f" ({source.syntax_reason})"
    with nested(f"judging {label}"):
        return judge_source(source, options, label=label)


def _load_running(options: Options) -> tuple[RuleSet, SourceReport, dict[str, int]]:
    """The kernel's rules, and its status: `enabled` and `lost` (for the metrics).

    Read over the audit netlink socket (the request `auditctl -l` makes, but exact: the
    listing's text prints path= and dir= watches alike and foreign arches as b64/b32);
    `auditctl -l` and `auditctl -s` are the fallback when netlink is not usable. The status
    is read once, here: the one reading of the kernel's state a report and its metrics give.
    """
    from . import netlink  # noqa: PLC0415 - only when reading the running rules

    label = "running rules (auditctl -l)"
    with nested("reading the running rules (netlink AUDIT_LIST_RULES, AUDIT_GET)"):
        try:
            rules = netlink.list_rules(options.machine)
            found = netlink.status()
        except TransportError as exc:
            logger.info("netlink failed (%s); falling back to auditctl -l", exc)
            text = auditctl_list()
            status = auditctl_status()
            state = {
                key: int(status[key])
                for key in ("enabled", "lost")
                if status.get(key, "").isdigit()
            }
            enabled_text = status.get("enabled", "1")
            enabled = int(enabled_text) if enabled_text.isdigit() else None
            source = parse_rules(
                text,
                path="auditctl -l",
                machine=options.machine,
                syntax="listing",
                files=options.files,
            )
            return (*judge_source(source, options, label=label, enabled=enabled), state)
    items = tuple(Command(kind="add", origin=rule.origin, rule=rule) for rule in rules)
    source = RulesSource(path="kernel", syntax="listing", items=items, machine=options.machine)
    state = {"enabled": found.enabled, "lost": found.lost}
    return (*judge_source(source, options, label=label, enabled=found.enabled), state)


def drift_findings(drift: Drift, label: str) -> list[Finding]:
    """The warnings of `check` for the drift between the running rules and `label`."""
    findings = [
        Finding(
            path=rule.origin.path,
            line=rule.origin.line,
            text=rule.origin.text,
            message=f"on disk but not running: {rule.render()}",
            hint="reload the rules (NixOS: systemctl restart audit-rules-nixos; "
            "elsewhere: augenrules --load), or reboot when they are locked (-e 2)",
            severity="warning",
        )
        for rule in drift.missing
    ]
    findings.extend(
        Finding(
            path="auditctl -l",
            line=rule.origin.line,
            text=rule.origin.text,
            message=f"running but not in {label}: {rule.render()}",
            hint="a rule was added by hand or the on-disk rules changed since they were "
            "loaded; make the on-disk rules the source of truth and reload them",
            severity="warning",
        )
        for rule in drift.extra
    )
    if drift.moved:
        findings.append(
            Finding(
                path="auditctl -l",
                line=0,
                text="",
                message=f"the running rules are those of {label} but in another order",
                hint="order matters (the first matching rule wins); reload the on-disk rules",
                severity="warning",
            )
        )
    return findings


@attrs.frozen
class CheckRun:
    """What one `check` run read and judged.

    Attributes:
        report: The report.
        running: The running rules, when the kernel was read.
        drift: How the running rules differ from each on-disk rule set compared.
        kernel: The kernel's `enabled` and `lost`, read with the running rules (empty when
            they were not read, or the status did not say).
    """

    report: Report
    running: RuleSet | None
    drift: tuple[Drift, ...]
    kernel: Mapping[str, int] = attrs.field(factory=dict)


def run_check(options: Options, sources: Sequence[str], *, running: bool) -> CheckRun:
    """Judge `sources` (files, rules.d, `-`), and the running rules with `running`.

    With neither, judge the running rules and what the next start of audit loads from
    disk, and report the drift between them (or that there are no on-disk rules).

    Raises:
        ParseError: a source cannot be read.
        TransportError: the running rules cannot be read.
    """
    reports: list[SourceReport] = []
    drift: list[Finding] = []
    kernel: RuleSet | None = None
    state: dict[str, int] = {}
    files = [_load_file(path, options) for path in sources]
    if running:
        kernel, report, state = _load_running(options)
        reports.append(report)
    if not sources and not running:
        kernel, report, state = _load_running(options)
        reports.append(report)
        on_disk = discover_on_disk(live=options.live)
        if on_disk is None:
            drift.append(
                Finding(
                    path="",
                    line=0,
                    text="",
                    message="no on-disk rules found (no audit-rules-nixos.service, "
                    "/etc/audit/rules.d/*.rules or /etc/audit/audit.rules)",
                    hint="the running rules will not survive a reboot; persist them",
                    severity="warning",
                )
            )
        else:
            files.append(_judge_on_disk(on_disk, options))
    reports.extend(report for _, report in files)
    compared = (
        [(compare(kernel, ruleset), report.label) for ruleset, report in files]
        if kernel is not None
        else []
    )
    for differences, label in compared:
        drift.extend(drift_findings(differences, label))
    whole = Report(sources=tuple(reports), drift=tuple(drift), options=options.as_pairs())
    return CheckRun(
        report=whole,
        running=kernel,
        drift=tuple(differences for differences, _ in compared),
        kernel=state,
    )
