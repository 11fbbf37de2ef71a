"""kmod-audit: prove that kernel module loads and unloads leave keyed audit records.

The package judges audit rules the way the kernel applies them (`check`), prints the
minimal rules for the DISA STIG / CIS / Tenable profiles (`generate`), and (from the
`verify` subcommand) exercises a real kernel.
"""

from __future__ import annotations

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
from .evaluate import Context, Coverage, ExecFile, Target, evaluate
from .generate import DEFAULT_KEY, generate_lines, validate_key
from .loader import LoadIssue, RuleSet, load
from .profiles import PROFILES, Profile, Requirement, select_profiles
from .report import Finding, Report, render_json, render_text
from .rules import Command, Field, Origin, Rejection, Rule, RulesSource, parse_rules
from .syscalls import MACHINES, Abi, Machine, machine_by_name

__version__ = "0.1.0"

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
    "Requirement",
    "Rule",
    "RuleSet",
    "RulesSource",
    "Target",
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
