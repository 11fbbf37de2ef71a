"""The compliance profiles (DESIGN section 4) and their requirements, with references.

Each requirement names the syscalls that must be recorded, on which ABIs, and whether
executions of the module tools must be recorded. References come from the standards'
own texts (DISA STIG XCCDF for NixOS V1R1 and Amazon Linux 2023, CIS benchmarks,
Tenable's audit items, ComplianceAsCode rule ids).
"""

from __future__ import annotations

from typing import Final, Literal

import attrs

from .syscalls import EXEC_SYSCALLS, Abi, Machine

__all__ = ["PROFILES", "Benchmark", "Profile", "RequiredCall", "Requirement", "select_profiles"]

Bits = Literal["b64", "b32"]


@attrs.frozen
class RequiredCall:
    """One call a requirement needs recorded on a machine: one check of `check` and `verify`.

    Attributes:
        abi: The ABI the call is made in.
        syscall: The syscall's name.
        number: Its number in that ABI; None when the ABI has no such syscall (the check is
            not applicable).
        execution: An execution of the requirement's tools (`check` makes one check per
            program the tools resolve to; `verify` runs kmod), not a module syscall.
    """

    abi: Abi
    syscall: str
    number: int | None
    execution: bool = False

    def label(self, program: str = "kmod") -> str:
        """`b32 finit_module`, or `b64 execve of kmod` (of `program`) for an execution."""
        text = f"{self.abi.bits} {self.syscall}"
        return f"{text} of {program}" if self.execution else text


@attrs.frozen(kw_only=True)
class Requirement:
    """One requirement of a profile.

    Attributes:
        id: Stable id within the profile (the STIG Vuln ID where there is one).
        title: What must be true, in the standard's words.
        syscalls: Module syscalls that must be recorded (those missing on an ABI are n/a).
        abis: The ABIs the syscalls must be recorded on (`b64`, `b32`).
        tools: Programs whose executions must be recorded (resolved to the kmod binary).
        strict_filters: Whether the standard's check text demands `auid>=N` and
            `auid!=unset` on the rule (checked with `--strict`).
        references: (label, value) pairs: STIG ids, rule ids, CCIs, CIS sections...
        example: The rule line the standard gives (for reports).
    """

    id: str
    title: str
    syscalls: tuple[str, ...] = ()
    abis: tuple[Bits, ...] = ("b64",)
    tools: tuple[str, ...] = ()
    strict_filters: bool = True
    references: tuple[tuple[str, str], ...] = ()
    example: tuple[str, ...] = ()

    def calls(self, machine: Machine) -> list[RequiredCall]:
        """What this requirement needs recorded on `machine`: its checks, in report order.

        Each module syscall on each of its ABIs (with number None where the ABI lacks it),
        then, with tools, each exec syscall on every ABI of the machine (the ones it has).
        The one expansion `check`, `verify` and the checklists share.
        """
        calls = [
            RequiredCall(abi, syscall, abi.number(syscall))
            for syscall in self.syscalls
            for abi in (machine.abi(bits) for bits in self.abis)
        ]
        if self.tools:
            calls.extend(
                RequiredCall(abi, syscall, number, execution=True)
                for abi in machine.abis
                for syscall in EXEC_SYSCALLS
                if (number := abi.number(syscall)) is not None
            )
        return calls


@attrs.frozen(kw_only=True)
class Benchmark:
    """The DISA STIG release a profile implements (for STIG Viewer checklists).

    Attributes:
        id: The XCCDF benchmark id STIG Viewer and STIG Manager key checklists by.
        title: The STIG's full title.
        display_name: STIG Viewer's short name.
        version: The STIG version (the `1` of V1R1).
        release: The release (the `1` of V1R1).
        release_info: STIG Viewer's `releaseinfo` text: `Release: N Benchmark Date: ...`
            (STIG Manager reads the release from it).
        filename: The XCCDF file of the release, as DISA names it.
    """

    id: str
    title: str
    display_name: str
    version: str
    release: str
    release_info: str
    filename: str


@attrs.frozen(kw_only=True)
class Profile:
    """A named set of requirements.

    Attributes:
        id: The profile id used on the command line.
        title: The standard it implements.
        requirements: Its requirements.
        benchmark: The DISA STIG release, for STIG profiles (None for CIS and Tenable,
            which are no STIGs and have no STIG Viewer checklist).
    """

    id: str
    title: str
    requirements: tuple[Requirement, ...]
    benchmark: Benchmark | None = None


_STIG_CCIS_AL2023: Final = "CCI-000130, CCI-000135, CCI-000169, CCI-000172, CCI-002884"

PROFILES: Final = {
    "nixos-stig": Profile(
        id="nixos-stig",
        title="DISA Anduril NixOS STIG V1R1",
        benchmark=Benchmark(
            id="Anduril_NixOS_STIG",
            title="Anduril NixOS Security Technical Implementation Guide",
            display_name="Anduril NixOS",
            version="1",
            release="1",
            release_info="Release: 1 Benchmark Date: 22 Oct 2024",
            filename="U_Anduril_NixOS_STIG_V1R1_Manual-xccdf.xml",
        ),
        requirements=(
            Requirement(
                id="V-268096",
                title=(
                    "Successful/unsuccessful uses of the init_module, finit_module, and "
                    "delete_module system calls in NixOS must generate an audit record."
                ),
                syscalls=("init_module", "finit_module", "delete_module"),
                abis=("b64", "b32"),
                references=(
                    ("Vuln ID", "V-268096"),
                    ("STIG ID", "ANIX-00-000290"),
                    ("Rule ID", "SV-268096r1039563_rule"),
                    ("SRG", "SRG-OS-000042-GPOS-00020, SRG-OS-000471-GPOS-00216"),
                    ("CCI", "CCI-000135, CCI-000172 (mapped from the SRGs)"),
                    ("severity", "medium"),
                ),
                example=(
                    (
                        "-a always,exit -F arch=b32 -S init_module,finit_module,delete_module "
                        "-F auid>=1000 -F auid!=-1 -k module_chng"
                    ),
                    (
                        "-a always,exit -F arch=b64 -S init_module,finit_module,delete_module "
                        "-F auid>=1000 -F auid!=-1 -k module_chng"
                    ),
                ),
            ),
        ),
    ),
    "al2023-stig": Profile(
        id="al2023-stig",
        title="DISA Amazon Linux 2023 STIG",
        benchmark=Benchmark(
            id="Amazon_Linux_2023_STIG",
            title="Amazon Linux 2023 Security Technical Implementation Guide",
            display_name="Amazon Linux 2023",
            version="1",
            release="1",
            # The rule revisions (r112026x) are those of V1R1; its benchmark date is not
            # recorded here.
            release_info="Release: 1 (rule revisions of V1R1)",
            filename="U_Amazon_Linux_2023_STIG_V1R1_Manual-xccdf.xml",
        ),
        requirements=(
            Requirement(
                id="V-274091",
                title=(
                    "Amazon Linux 2023 must generate audit records for all uses of the "
                    "init_module and finit_module system calls."
                ),
                syscalls=("init_module", "finit_module"),
                references=(
                    ("Vuln ID", "V-274091"),
                    ("STIG ID", "AZLX-23-002135"),
                    ("Rule ID", "SV-274091r1120261_rule"),
                    ("CCI", _STIG_CCIS_AL2023),
                    ("severity", "medium"),
                ),
                example=(
                    (
                        "-a always,exit -F arch=b64 -S init_module,finit_module -F auid>=1000 "
                        "-F auid!=unset -k module_chng"
                    ),
                ),
            ),
            Requirement(
                id="V-274092",
                title=(
                    "Amazon Linux 2023 must generate audit records for all uses of the "
                    "create_module system call."
                ),
                syscalls=("create_module",),
                references=(
                    ("Vuln ID", "V-274092"),
                    ("STIG ID", "AZLX-23-002140"),
                    ("Rule ID", "SV-274092r1120264_rule"),
                    ("CCI", _STIG_CCIS_AL2023),
                    ("severity", "medium"),
                ),
                example=(
                    (
                        "-a always,exit -F arch=b64 -S create_module -F auid>=1000 "
                        "-F auid!=unset -k module-change"
                    ),
                ),
            ),
            Requirement(
                id="V-274093",
                title=(
                    "Amazon Linux 2023 must generate audit records for all uses of the kmod "
                    "command."
                ),
                tools=("kmod",),
                references=(
                    ("Vuln ID", "V-274093"),
                    ("STIG ID", "AZLX-23-002145"),
                    ("Rule ID", "SV-274093r1120267_rule"),
                    ("CCI", _STIG_CCIS_AL2023),
                    ("severity", "medium"),
                ),
                example=(
                    (
                        "-a always,exit -F path=/usr/bin/kmod -F perm=x -F auid>=1000 "
                        "-F auid!=unset -k modules"
                    ),
                ),
            ),
        ),
    ),
    "cis": Profile(
        id="cis",
        title=(
            "CIS Benchmarks: Ensure kernel module loading unloading and modification is collected"
        ),
        requirements=(
            Requirement(
                id="cis-kernel-module-syscalls",
                title=(
                    "Kernel module loading, unloading and modification syscalls are "
                    "collected (init, finit, delete, create, query)."
                ),
                syscalls=(
                    "init_module",
                    "finit_module",
                    "delete_module",
                    "create_module",
                    "query_module",
                ),
                references=(
                    (
                        "CIS",
                        (
                            "4.1.3.19 (Debian/Ubuntu/RHEL v1-v2), 5.2.3.19 (AL2023), "
                            "6.3.3.19 (newer benchmarks)"
                        ),
                    ),
                    ("ComplianceAsCode", "audit_rules_kernel_module_loading"),
                ),
                example=(
                    (
                        "-a always,exit -F arch=b64 -S init_module,finit_module,delete_module,"
                        "create_module,query_module -F auid>=1000 -F auid!=unset -k kernel_modules"
                    ),
                ),
            ),
            Requirement(
                id="cis-kernel-module-kmod",
                title="Executions of the kmod command are collected.",
                tools=("kmod",),
                references=(
                    (
                        "CIS",
                        (
                            "4.1.3.19 (Debian/Ubuntu/RHEL v1-v2), 5.2.3.19 (AL2023), "
                            "6.3.3.19 (newer benchmarks)"
                        ),
                    ),
                    ("ComplianceAsCode", "audit_rules_privileged_commands_kmod"),
                ),
                example=(
                    (
                        "-a always,exit -F path=/usr/bin/kmod -F perm=x -F auid>=1000 "
                        "-F auid!=unset -k kernel_modules"
                    ),
                ),
            ),
        ),
    ),
    "tenable": Profile(
        id="tenable",
        title="Tenable: kernel module loading and unloading is collected",
        requirements=(
            Requirement(
                id="tenable-kernel-module-syscalls",
                title="init_module and delete_module calls are collected.",
                syscalls=("init_module", "delete_module"),
                strict_filters=False,
                references=(
                    ("Tenable", "Ensure kernel module loading and unloading is collected"),
                ),
                example=("-a always,exit -F arch=b64 -S init_module -S delete_module -k modules",),
            ),
            Requirement(
                id="tenable-kernel-module-tools",
                title="Executions of insmod, rmmod and modprobe are collected.",
                tools=("insmod", "rmmod", "modprobe"),
                strict_filters=False,
                references=(
                    ("Tenable", "Ensure kernel module loading and unloading is collected"),
                ),
                example=(
                    "-w /sbin/insmod -p x -k modules",
                    "-w /sbin/rmmod -p x -k modules",
                    "-w /sbin/modprobe -p x -k modules",
                ),
            ),
        ),
    ),
}

DEFAULT_PROFILE: Final = "nixos-stig"


def select_profiles(ids: tuple[str, ...] | list[str]) -> tuple[Profile, ...]:
    """Return the profiles named by `ids` (`all` selects every one), in canonical order.

    Raises:
        KeyError: an id is unknown (the message lists the known ids).
    """
    wanted = set(ids) if ids else {DEFAULT_PROFILE}
    unknown = wanted - set(PROFILES) - {"all"}
    if unknown:
        known = ", ".join([*PROFILES, "all"])
        msg = f"unknown profile {', '.join(sorted(unknown))}; known profiles: {known}"
        raise KeyError(msg)
    if "all" in wanted:
        return tuple(PROFILES.values())
    return tuple(p for p in PROFILES.values() if p.id in wanted)
