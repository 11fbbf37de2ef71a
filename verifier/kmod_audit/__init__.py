"""kmod-audit: prove that kernel module loads and unloads leave keyed audit records.

The package judges audit rules the way the kernel applies them (`check`), prints the
minimal rules for the DISA STIG / CIS / Tenable profiles (`generate`), and (from the
`verify` subcommand) exercises a real kernel.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .check import Options, judge, judge_source
    from .errors import (
        CommandFailed,
        ComplianceFailure,
        ConfigurationError,
        ConsoleTimeout,
        ParseError,
        TransportError,
        VerifierError,
    )
    from .evaluate import Context, Coverage, ExecFile, RequiredEvent, evaluate
    from .generate import DEFAULT_KEY, generate_lines, validate_key
    from .loader import LoadIssue, RuleSet, load
    from .profiles import PROFILES, Profile, Requirement, select_profiles
    from .report import Finding, Report, render_json, render_text
    from .rules import Command, Field, Origin, Rejection, Rule, RulesSource, parse_rules
    from .syscalls import MACHINES, Abi, Machine, machine_by_name

from ._version import __version__ as __version__

__all__ = [
    "DEFAULT_KEY",
    "MACHINES",
    "PROFILES",
    "Abi",
    "Command",
    "CommandFailed",
    "ComplianceFailure",
    "ConfigurationError",
    "ConsoleTimeout",
    "Context",
    "Coverage",
    "ExecFile",
    "Field",
    "Finding",
    "LoadIssue",
    "Machine",
    "Options",
    "Origin",
    "ParseError",
    "Profile",
    "Rejection",
    "Report",
    "RequiredEvent",
    "Requirement",
    "Rule",
    "RuleSet",
    "RulesSource",
    "TransportError",
    "VerifierError",
    "evaluate",
    "generate_lines",
    "judge",
    "judge_source",
    "load",
    "machine_by_name",
    "parse_rules",
    "render_json",
    "render_text",
    "select_profiles",
    "validate_key",
]

# The public names, by the module that defines them. They are imported on first use
# (PEP 562), so a command pays only for the modules it runs: `kmod-audit generate` never
# loads the evaluator, `check` never loads the netlink or verify code.
_LAZY: dict[str, str] = {
    "Options": "check",
    "judge": "check",
    "judge_source": "check",
    "CommandFailed": "errors",
    "ComplianceFailure": "errors",
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
