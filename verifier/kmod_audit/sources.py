"""Where `check`'s rules come from: what the next start of audit loads from disk.

The units (or the init script) that start audit are read, with their drop-ins and masks,
to know whether the next start runs `augenrules --load` (rules.d, as `augenrules`
assembles it), `auditctl -R FILE`, or loads no rules at all.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from typing import Final

import attrs

from . import system  # its paths are read at call time: tests point them elsewhere
from .augenrules import (
    ALL_DIALECTS,
    AUGENRULES_SCRIPTS,
    UNKNOWN_TIES,
    Assembly,
    TieOrder,
    assemble_rules_d_all,
    augenrules_dialects,
)
from .errors import ParseError
from .rules import Origin
from .system import read_rules_text, read_text

__all__ = [
    "OnDiskRules",
    "StartLoad",
    "discover_on_disk",
    "rules_d_assemblies",
    "start_loads",
]

UNIT_DIRS: Final = (
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)
"""systemd's system unit search path, highest priority first."""
AUDIT_UNITS: Final = ("auditd.service", "audit-rules.service")
"""auditd.service runs `augenrules --load` after auditd (audit < 4: Debian 12, RHEL 8, 9);
audit >= 4 moved that to audit-rules.service, which auditd.service wants."""
INIT_SCRIPTS: Final = ("/etc/init.d/auditd", "/etc/rc.d/init.d/auditd")
AUDITD_DEFAULTS: Final = ("/etc/default/auditd", "/etc/sysconfig/auditd")
LOCALE_FILES: Final = ("/etc/locale.conf", "/etc/default/locale")
"""Where systemd takes the locale it gives services (Debian: /etc/default/locale)."""
_LOCALE_VAR: Final = re.compile(r"LANG|LANGUAGE|LC_[A-Z_]+|LOCPATH")
#: The variables that choose the collation `sort` breaks ties with.
_COLLATION_VARS: Final = frozenset({"LANG", "LC_ALL", "LC_COLLATE"})
SYSTEM_CONF: Final = "/etc/systemd/system.conf"
"""systemd's manager configuration (`DefaultEnvironment=` reaches every service)."""
SYSTEM_CONF_DIRS: Final = (
    "/etc/systemd/system.conf.d",
    "/run/systemd/system.conf.d",
    "/usr/local/lib/systemd/system.conf.d",
    "/usr/lib/systemd/system.conf.d",
    "/lib/systemd/system.conf.d",
)
_EXEC_KEYS: Final = ("ExecStartPre", "ExecStart", "ExecStartPost")
AUGENRULES: Final = "augenrules"
NO_RULES: Final = ""
"""A `StartLoad` possibility: the next start of audit loads no rules."""


def _under(root: str, path: str) -> str:
    """`path` of the system whose root directory is `root`."""
    return path if root in {"", "/"} else os.path.join(root, path.lstrip("/"))


def _assignments(text: str) -> list[tuple[str, str]]:
    """KEY=VALUE lines of a shell-like environment file (locale.conf, /etc/default/...)."""
    found = []
    for line in text.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        for word in words:
            key, sep, value = word.partition("=")
            if sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                found.append((key, value))
    return found


def _unit_lines(text: str) -> list[str]:
    """A unit file's lines with continuations joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    if pending:
        lines.append(pending)
    return lines


@attrs.frozen(kw_only=True)
class _Unit:
    """The parts of a systemd service that say how it loads audit rules."""

    path: str
    masked: bool = False
    commands: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


def _read_unit(root: str, name: str) -> _Unit | None:
    """The unit `name` with its drop-ins applied, as systemd reads it; None when absent."""
    main = next(
        (
            path
            for path in (_under(root, os.path.join(d, name)) for d in UNIT_DIRS)
            if os.path.lexists(path)
        ),
        None,
    )
    if main is None:
        return None
    target = os.readlink(main) if os.path.islink(main) else ""
    if target == "/dev/null" or (not target and os.path.isfile(main) and not os.path.getsize(main)):
        return _Unit(path=main, masked=True)
    dropins: dict[str, str] = {}
    for directory in reversed(UNIT_DIRS):  # a higher-priority drop-in of a name wins
        folder = _under(root, os.path.join(directory, name + ".d"))
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for entry in entries:
            if entry.endswith(".conf"):
                dropins[entry] = os.path.join(folder, entry)
    commands: dict[str, list[str]] = {key: [] for key in _EXEC_KEYS}
    environment: list[tuple[str, str]] = []
    files: list[str] = []
    for path in [main, *(dropins[entry] for entry in sorted(dropins))]:
        try:
            text = read_text(path)
        except OSError:
            continue
        section = ""
        for line in _unit_lines(text):
            if line.startswith("["):
                section = line
                continue
            key, _, value = (part.strip() for part in line.partition("="))
            if section != "[Service]":
                continue
            if key in commands:
                # An empty assignment resets the list (how a drop-in removes a command).
                commands[key] = [*commands[key], value] if value else []
            elif key == "Environment":
                environment = [*environment, *_assignments(value)] if value else []
            elif key == "EnvironmentFile":
                files = [*files, value] if value else []
    for file in files:  # EnvironmentFile= overrides Environment=
        try:
            environment.extend(_assignments(read_text(_under(root, file.lstrip("-")))))
        except OSError:
            continue
    return _Unit(
        path=main,
        commands=tuple(c for key in _EXEC_KEYS for c in commands[key]),
        env=tuple(environment),
    )


def _unit_loads(commands: Sequence[str]) -> list[str] | None:
    """What the commands load: `augenrules` or a rules file; None when one is not understood."""
    loads: list[str] = []
    regenerated = False
    for command in commands:
        try:
            words = shlex.split(command.lstrip("-@:+!"))
        except ValueError:
            return None
        program = os.path.basename(words[0]) if words else ""
        if program == AUGENRULES:
            if "--load" in words:
                loads.append(AUGENRULES)
            elif "--check" not in words:
                regenerated = True
        elif program == "auditctl" and "-R" in words[:-1]:
            file = words[words.index("-R") + 1]
            loads.append(AUGENRULES if regenerated and file == system.AUDIT_RULES else file)
        elif re.search(r"augenrules|auditctl|audit\.rules|rules\.d", command):
            return None  # a script or shell line that may load rules: not followed
    return loads


def _init_script_loads(root: str) -> tuple[list[str] | None, str] | None:
    """What the SysV init script loads (None: no script), and how that was read."""
    for script in INIT_SCRIPTS:
        try:
            text = read_text(_under(root, script))
        except OSError:
            continue
        if AUGENRULES not in text:
            if re.search(r"auditctl\s+-R\s+/etc/audit/audit\.rules", text):
                return [system.AUDIT_RULES], f"{script} runs `auditctl -R {system.AUDIT_RULES}`"
            return None, f"{script} loads no rules that kmod-audit can follow"
        if "USE_AUGENRULES" not in text:
            return [AUGENRULES], f"{script} runs augenrules"
        for defaults in AUDITD_DEFAULTS:
            try:
                values = dict(_assignments(read_text(_under(root, defaults))))
            except OSError:
                continue
            if values.get("USE_AUGENRULES", "").lower() == "no":
                return [system.AUDIT_RULES], f"{script}: USE_AUGENRULES=no in {defaults}"
            return [AUGENRULES], f"{script} runs augenrules (USE_AUGENRULES in {defaults})"
        return [AUGENRULES], f"{script} runs augenrules (USE_AUGENRULES is not set)"
    return None


def _default_environment(root: str) -> list[tuple[str, str]]:
    """`DefaultEnvironment=` of systemd's system.conf and its drop-ins (later ones win)."""
    found: list[tuple[str, str]] = []
    drop_ins = sorted(
        {
            name
            for directory in SYSTEM_CONF_DIRS
            if os.path.isdir(_under(root, directory))
            for name in os.listdir(_under(root, directory))
            if name.endswith(".conf")
        }
    )
    paths = [SYSTEM_CONF] + [
        next(
            os.path.join(d, name)
            for d in SYSTEM_CONF_DIRS
            if os.path.exists(_under(root, os.path.join(d, name)))
        )
        for name in drop_ins
    ]
    for path in paths:
        try:
            text = read_text(_under(root, path))
        except (OSError, ParseError):
            continue
        for line in text.splitlines():
            key, _, value = line.strip().partition("=")
            if key.strip() != "DefaultEnvironment":
                continue
            try:
                words = shlex.split(value)
            except ValueError:
                continue
            found.extend(
                (k, v) for k, _, v in (w.partition("=") for w in words) if _LOCALE_VAR.fullmatch(k)
            )
    return found


def _locale_env(root: str) -> tuple[list[tuple[str, str]], bool]:
    """The locale systemd gives every service (LANG, LC_*), and whether a file sets it.

    systemd's `DefaultEnvironment=`, then the first locale file. Without a locale file, or
    a `DefaultEnvironment=` that names the collation, PID 1's own environment (the kernel
    command line, an initrd) decides, which cannot be read here.
    """
    default = _default_environment(root)
    for path in LOCALE_FILES:
        try:
            text = read_text(_under(root, path))
        except (OSError, ParseError):
            continue
        return [
            *default,
            *((k, v) for k, v in _assignments(text) if _LOCALE_VAR.fullmatch(k)),
        ], True
    return default, any(k in _COLLATION_VARS for k, _ in default)


@attrs.frozen(kw_only=True)
class StartLoad:
    """What the next start of audit loads, as far as the machine tells.

    Attributes:
        loads: Each possibility (one when known): `augenrules` (rules.d assembled, written
            over audit.rules and loaded; audit.rules itself when there is no rules.d), the
            path of a rules file loaded as it is (`auditctl -R FILE`), or NO_RULES (the
            units that start audit load none, or are masked).
        how: How that was decided, for the report.
        ties: The locale augenrules runs in, for the order of names `sort -V` ties.
    """

    loads: tuple[str, ...]
    how: str
    ties: TieOrder = UNKNOWN_TIES


def start_loads(root: str = "/", *, live: bool = True) -> StartLoad:
    """Read from the machine what the next start of audit loads.

    systemd (when it runs, else also the init script): `auditd.service` and
    `audit-rules.service` with their drop-ins; `augenrules --load` regenerates audit.rules
    from rules.d (even an empty one) and loads it, `auditctl -R FILE` loads FILE as it is.
    The SysV script runs augenrules unless USE_AUGENRULES=no, then loads audit.rules. Units
    that load nothing (or are masked) mean no rules. When nothing says, or a command is not
    understood (or not `live`: a foreign root), both are possible.

    Args:
        root: The system's root directory.
        live: `root` is this running machine (its programs and locales are used).
    """
    both = (AUGENRULES, system.AUDIT_RULES)
    if not live:
        return StartLoad(
            loads=both,
            how="not this running machine: augenrules (from rules.d) and "
            f"`auditctl -R {system.AUDIT_RULES}` are both possible",
        )
    possible: list[str] = []
    hows: list[str] = []
    unknown = False
    seen = False  # a unit or init script that starts audit was read
    envs: set[tuple[tuple[str, str], ...] | None] = set()
    for name in AUDIT_UNITS:
        unit = _read_unit(root, name)
        if unit is None:
            continue
        seen = True
        if unit.masked:
            hows.append(f"{name} is masked")
            continue
        loads = _unit_loads(unit.commands)
        if loads is None:
            unknown = True
            hows.append(f"{unit.path} runs a command that kmod-audit does not follow")
            continue
        hows.extend(
            f"{name} runs `augenrules --load`"
            if load == AUGENRULES
            else f"{name} runs `auditctl -R {load}`"
            for load in loads
        )
        possible.extend(loads)
        if AUGENRULES in loads:
            service, known = _locale_env(root)
            own = [(k, v) for k, v in unit.env if _LOCALE_VAR.fullmatch(k)]
            assigned = [*service, *own]
            if known or any(k in _COLLATION_VARS for k, _ in own):
                envs.add(tuple(dict(assigned).items()))
            else:
                envs.add(None)  # the locale of PID 1's own environment
    if not os.path.isdir(_under(root, "/run/systemd/system")):
        # systemd is not running here: an init script may start audit instead.
        script = _init_script_loads(root)
        if script is not None:
            script_loads, how = script
            seen = True
            hows.append(how)
            if script_loads is None:
                unknown = True
            else:
                possible.extend(script_loads)
                if AUGENRULES in script_loads:
                    envs.add(None)  # an init script's locale is that of whoever runs it
    if unknown:
        possible.extend(both)
        hows.append("what else loads rules is not known: both are possible")
    elif not possible and seen:
        possible.append(NO_RULES)
        hows.append("so nothing loads rules when audit starts")
    elif not possible:
        possible.extend(both)
        hows.append(
            "no unit or init script that starts audit was found: augenrules (from rules.d) "
            f"and `auditctl -R {system.AUDIT_RULES}` are both possible"
        )
    env = envs.pop() if len(envs) == 1 else None
    ties = (
        TieOrder(env=env, how="the locale of " + (", ".join(f"{k}={v}" for k, v in env) or "C"))
        if env is not None
        else UNKNOWN_TIES
    )
    return StartLoad(loads=tuple(dict.fromkeys(possible)), how="; ".join(hows), ties=ties)


@attrs.frozen(kw_only=True)
class OnDiskRules:
    """The rules the system loads at boot.

    Attributes:
        label: How the report names them.
        path: The file or directory.
        text: The (assembled) text.
        origins: Per-line origins when assembled from rules.d.
        assemblies: rules.d as each possible augenrules dialect assembles it (else empty).
        how: How the augenrules dialect was chosen.
        alternatives: When what the next start loads is not known: each possibility (the
            worst is reported); the other attributes are then those of the first.
    """

    label: str
    path: str
    text: str
    origins: tuple[Origin, ...] | None = None
    assemblies: tuple[Assembly, ...] = ()
    how: str = ""
    alternatives: tuple[OnDiskRules, ...] = ()


def _rules_d_on_disk(root: str, live: bool, start: StartLoad) -> OnDiskRules:
    directory = _under(root, system.RULES_D)
    why = start.how
    if live:
        dialects, how = augenrules_dialects(
            tuple(_under(root, script) for script in AUGENRULES_SCRIPTS)
        )
        ties = start.ties
    else:
        dialects, how = ALL_DIALECTS, "rules.d of another machine: every augenrules dialect"
        ties = UNKNOWN_TIES
    assemblies = assemble_rules_d_all(
        directory, dialects, header_directory=system.RULES_D, ties=ties, empty_ok=True
    )
    return OnDiskRules(
        label=f"on-disk rules {directory}/*.rules (as augenrules assembles them and writes "
        f"them over {system.AUDIT_RULES}: {why})",
        path=directory,
        text=assemblies[0].text,
        origins=assemblies[0].origins,
        assemblies=assemblies,
        how=how,
    )


def discover_on_disk(root: str = "/", *, live: bool = True) -> OnDiskRules | None:
    """Find the rules the next start of audit loads, or None when there are none.

    On NixOS the file `audit-rules-nixos.service` loads. Elsewhere what `start_loads`
    reads from the machine: rules.d as augenrules assembles it whenever augenrules runs
    and rules.d exists (an empty rules.d gives no rules: augenrules writes that over
    audit.rules), audit.rules where nothing regenerates it. When that is not known, every
    possibility is returned in `alternatives`.

    Args:
        root: The system's root directory.
        live: `root` is this running machine (else every possibility is judged).

    Raises:
        ParseError: the rules exist but cannot be read (special file, too big, ...).
    """
    nixos = system.nixos_rules_file(tuple(_under(root, unit) for unit in system.NIXOS_UNITS))
    if nixos is not None:
        return OnDiskRules(
            label=f"on-disk rules {nixos} (loaded by audit-rules-nixos.service)",
            path=nixos,
            text=read_rules_text(_under(root, nixos)),
        )
    start = start_loads(root, live=live)
    found: list[OnDiskRules] = []
    for load in start.loads:
        if load == NO_RULES:
            found.append(
                OnDiskRules(label=f"on-disk rules: none ({start.how})", path="(none)", text="")
            )
            continue
        if load == AUGENRULES and os.path.isdir(_under(root, system.RULES_D)):
            found.append(_rules_d_on_disk(root, live, start))
            continue
        path = system.AUDIT_RULES if load == AUGENRULES else load
        if os.path.exists(_under(root, path)):
            found.append(
                OnDiskRules(
                    label=f"on-disk rules {_under(root, path)} ({start.how})",
                    path=_under(root, path),
                    text=read_rules_text(_under(root, path)),
                )
            )
    if not found:
        return None
    if len(found) == 1:
        return found[0]
    return attrs.evolve(found[0], alternatives=tuple(found))


def rules_d_assemblies(
    directory: str, *, live: bool = True, root: str = "/"
) -> tuple[tuple[Assembly, ...], str]:
    """rules.d as this machine's augenrules may assemble it, and how the dialect was chosen.

    Live: the dialects of the installed augenrules and awk (`augenrules_dialects`), and
    the locale augenrules runs in (`start_loads`) for the order of names `sort -V` ties.
    Otherwise (rules.d from another machine) every modelled dialect and every order.

    Raises:
        ParseError: see `assemble_rules_d_all`.
    """
    if live:
        dialects, how = augenrules_dialects(
            tuple(_under(root, script) for script in AUGENRULES_SCRIPTS)
        )
        ties = start_loads(root).ties
    else:
        dialects, how = ALL_DIALECTS, "rules.d of another machine: every augenrules dialect"
        ties = UNKNOWN_TIES
    return assemble_rules_d_all(directory, dialects, ties=ties), how
