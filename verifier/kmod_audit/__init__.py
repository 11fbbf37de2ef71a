"""kmod-audit: prove that kernel module loads and unloads leave keyed audit records.

The package judges audit rules the way the kernel applies them (`check`), prints the
minimal rules for the DISA STIG / CIS / Tenable profiles (`generate`), and exercises a
real kernel (`verify`). This is its public API: what programs and the NixOS VM tests
import (`from kmod_audit import ...`); the modules behind it may change.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .check import CheckRun, Options, judge, judge_source, run_check
    from .errors import (
        CommandFailed,
        ConfigurationError,
        ConsoleTimeout,
        ParseError,
        TransportError,
        VerifierError,
    )
    from .evaluate import Context, Coverage, ExecFile, RequiredEvent, evaluate
    from .generate import DEFAULT_KEY, generate_lines, generate_rules, validate_key
    from .loader import LoadIssue, RuleSet, load
    from .probe_result import ProbeResult
    from .profiles import PROFILES, Profile, Requirement, select_profiles
    from .records import AuditEvent, AuditRecord, group_events, parse_records
    from .report import Evidence, Finding, Report, VerifyReport, render_json, render_text
    from .rules import Command, Field, Origin, Rejection, Rule, RulesSource, parse_rules
    from .syscalls import MACHINES, Abi, Machine, machine_by_name
    from .transports import (
        DriverMachine,
        Host,
        LocalHost,
        SerialConsole,
        SshTarget,
        target_from_spec,
    )
    from .verify import (
        VerifyOptions,
        judge_probe,
        render_verify_json,
        render_verify_text,
        run_verify,
        verify_target,
    )

from ._version import __version__ as __version__

__all__ = [
    "DEFAULT_KEY",
    "MACHINES",
    "PROFILES",
    "Abi",
    "AuditEvent",
    "AuditRecord",
    "CheckRun",
    "Command",
    "CommandFailed",
    "ConfigurationError",
    "ConsoleTimeout",
    "Context",
    "Coverage",
    "DriverMachine",
    "Evidence",
    "ExecFile",
    "Field",
    "Finding",
    "Host",
    "LoadIssue",
    "LocalHost",
    "Machine",
    "Options",
    "Origin",
    "ParseError",
    "ProbeResult",
    "Profile",
    "Rejection",
    "Report",
    "RequiredEvent",
    "Requirement",
    "Rule",
    "RuleSet",
    "RulesSource",
    "SerialConsole",
    "SshTarget",
    "TransportError",
    "VerifierError",
    "VerifyOptions",
    "VerifyReport",
    "evaluate",
    "generate_lines",
    "generate_rules",
    "group_events",
    "judge",
    "judge_probe",
    "judge_source",
    "load",
    "machine_by_name",
    "parse_records",
    "parse_rules",
    "render_json",
    "render_text",
    "render_verify_json",
    "render_verify_text",
    "run_check",
    "run_verify",
    "select_profiles",
    "target_from_spec",
    "validate_key",
    "verify_target",
]

# The public names, by the module that defines them. They are imported on first use
# (PEP 562), so a command pays only for the modules it runs: `kmod-audit generate` never
# loads the evaluator, `check` never loads the netlink or verify code.
_LAZY: dict[str, str] = {
    "Options": "check",
    "judge": "check",
    "judge_source": "check",
    "CommandFailed": "errors",
    "ConfigurationError": "errors",
    "ConsoleTimeout": "errors",
    "ParseError": "errors",
    "TransportError": "errors",
    "VerifierError": "errors",
    "Context": "evaluate",
    "Coverage": "evaluate",
    "ExecFile": "evaluate",
    "RequiredEvent": "evaluate",
    "evaluate": "evaluate",
    "DEFAULT_KEY": "generate",
    "generate_lines": "generate",
    "validate_key": "generate",
    "LoadIssue": "loader",
    "RuleSet": "loader",
    "load": "loader",
    "PROFILES": "profiles",
    "Profile": "profiles",
    "Requirement": "profiles",
    "select_profiles": "profiles",
    "Finding": "report",
    "Report": "report",
    "render_json": "report",
    "render_text": "report",
    "Command": "rules",
    "Field": "rules",
    "Origin": "rules",
    "Rejection": "rules",
    "Rule": "rules",
    "RulesSource": "rules",
    "parse_rules": "rules",
    "MACHINES": "syscalls",
    "Abi": "syscalls",
    "Machine": "syscalls",
    "machine_by_name": "syscalls",
    "CheckRun": "check",
    "run_check": "check",
    "generate_rules": "generate",
    "AuditEvent": "records",
    "AuditRecord": "records",
    "group_events": "records",
    "parse_records": "records",
    "ProbeResult": "probe_result",
    "Evidence": "report",
    "VerifyReport": "report",
    "Host": "transports",
    "LocalHost": "transports",
    "DriverMachine": "transports",
    "SshTarget": "transports",
    "SerialConsole": "transports",
    "target_from_spec": "transports",
    "VerifyOptions": "verify",
    "judge_probe": "verify",
    "render_verify_json": "verify",
    "render_verify_text": "verify",
    "run_verify": "verify",
    "verify_target": "verify",
}


def __getattr__(name: str) -> object:
    """Import the module defining the public `name` on first use, and cache the name."""
    module = _LAZY.get(name)
    if module is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the lazy ones included."""
    return sorted([*globals(), *_LAZY])
