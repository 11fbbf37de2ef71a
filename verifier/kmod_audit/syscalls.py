"""Machines, their syscall ABIs and the syscall tables auditctl uses.

A *machine* is what `uname -m` reports on the computer whose kernel loads the rules
(`x86_64`, `aarch64`). Each machine runs a native 64-bit ABI (`-F arch=b64`) and, when
the kernel has compat support, a 32-bit ABI (`-F arch=b32`): i386 on x86_64, arm on
aarch64. Syscall names resolve to different numbers in each ABI, which is why a rule
without `-F arch` does not cover 32-bit calls.
"""

from __future__ import annotations

import errno
import functools
import platform
from typing import Final

import attrs

from ._syscall_tables import TABLES

__all__ = [
    "ABIS",
    "BEFORE_OPEN",
    "EXEC_SYSCALLS",
    "MACHINES",
    "MODULE_SYSCALLS",
    "Abi",
    "Machine",
    "abi_by_audit_arch",
    "host_machine",
    "machine_by_name",
]

# AUDIT_ARCH_* values from <linux/audit.h>: EM_* | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE.
ARCH_64BIT: Final = 0x80000000
ARCH_LE: Final = 0x40000000

#: The syscalls that load or unload kernel modules, in the order profiles list them.
MODULE_SYSCALLS: Final = (
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "query_module",
)

#: The syscalls by which a program (kmod, insmod, ...) is executed.
EXEC_SYSCALLS: Final = ("execve", "execveat")
#: The failures of an exec that come before the kernel opens the file, on kernels that
#: copy argv and envp first (`evaluate.ExecOrder`: Linux 5.9 to 6.7): a bad argv or envp
#: pointer (EFAULT), too many or too long arguments (E2BIG). Such an exec names no file, so
#: `path=`, `dir=` and watches do not match it.
BEFORE_OPEN: Final = (errno.EFAULT, errno.E2BIG)


@functools.cache
def _table(name: str) -> tuple[dict[str, int], dict[int, str]]:
    by_name: dict[str, int] = {}
    by_number: dict[int, str] = {}
    for token in TABLES[name].split():
        number, _, syscall = token.partition(":")
        by_name[syscall] = int(number)
        by_number.setdefault(int(number), syscall)
    return by_name, by_number


@attrs.frozen
class Abi:
    """One syscall ABI of a machine, as the audit subsystem names it.

    Attributes:
        table: The audit userspace table name (`x86_64`, `i386`, `aarch64`, `arm`).
        audit_arch: The AUDIT_ARCH_* value the kernel puts in `arch=` of SYSCALL records.
        execs: The syscalls the kernel's classifier for this ABI calls an exec
            (`AUDITSC_EXECVE`): the only calls `-F perm=x` (and `-w ... -p x`) matches.
    """

    table: str
    audit_arch: int
    execs: frozenset[str] = frozenset(EXEC_SYSCALLS)

    @property
    def bits(self) -> str:
        """`b64` or `b32`, the spelling `auditctl -l` prints."""
        return "b64" if self.audit_arch & ARCH_64BIT else "b32"

    @property
    def hex(self) -> str:
        """The `arch=` value as it appears in a SYSCALL record, e.g. `c000003e`."""
        return f"{self.audit_arch:x}"

    def number(self, syscall: str) -> int | None:
        """Return the number of `syscall` in this ABI, or None if it does not exist here."""
        return _table(self.table)[0].get(syscall)

    def name(self, number: int) -> str | None:
        """Return the name of syscall `number` in this ABI, or None if the table lacks it."""
        return _table(self.table)[1].get(number)

    def __str__(self) -> str:
        """Return `b64 (x86_64)`."""
        return f"{self.bits} ({self.table})"


ABIS: Final = {
    "x86_64": Abi("x86_64", 62 | ARCH_64BIT | ARCH_LE),
    "i386": Abi("i386", 3 | ARCH_LE),
    "aarch64": Abi("aarch64", 183 | ARCH_64BIT | ARCH_LE),
    # The exec class of each ABI, as the classifier its machine's kernel uses spells it:
    # x86_64 `arch/x86/kernel/audit_64.c`, i386 on x86_64 `arch/x86/ia32/audit.c`, and
    # aarch64 the generic `lib/audit.c` all list execve and execveat. arm on aarch64 is
    # the generic compat classifier, `lib/compat_audit.c`, which lists execve only (Debian
    # 6.1 and 6.12 arm64 kernels agree: tests/test_vm_matrix.py).
    "arm": Abi("arm", 40 | ARCH_LE, frozenset({"execve"})),
    # Machines we do not judge, kept so that rules naming them resolve as auditctl does
    # (they simply never match events on x86_64 or aarch64).
    "ppc": Abi("ppc", 20),
    "ppc64": Abi("ppc", 21 | ARCH_64BIT),
    "ppc64le": Abi("ppc", 21 | ARCH_64BIT | ARCH_LE),
    "s390": Abi("s390", 22),
    "s390x": Abi("s390x", 22 | ARCH_64BIT),
}


@attrs.frozen
class Machine:
    """A machine type whose kernel loads the rules.

    Attributes:
        name: `uname -m` spelling.
        native: The 64-bit ABI (`-F arch=b64`).
        compat: The 32-bit ABI (`-F arch=b32`).
    """

    name: str
    native: Abi
    compat: Abi

    @property
    def abis(self) -> tuple[Abi, Abi]:
        """Native first, then compat."""
        return (self.native, self.compat)

    def abi(self, bits: str) -> Abi:
        """Return the ABI for `b64` or `b32`."""
        return self.native if bits == "b64" else self.compat


MACHINES: Final = {
    "x86_64": Machine("x86_64", ABIS["x86_64"], ABIS["i386"]),
    "aarch64": Machine("aarch64", ABIS["aarch64"], ABIS["arm"]),
}

# Names `-F arch=` accepts, as audit userspace's machine table spells them, mapped to the
# AUDIT_ARCH value. Machines we have no syscall table for are still valid rule arches: such
# a rule just never matches (or, with `!=`, always matches) events on the machines we model.
_ARCH_NAMES: Final = {
    "x86_64": ABIS["x86_64"].audit_arch,
    "i386": ABIS["i386"].audit_arch,
    "i486": ABIS["i386"].audit_arch,
    "i586": ABIS["i386"].audit_arch,
    "i686": ABIS["i386"].audit_arch,
    "aarch64": ABIS["aarch64"].audit_arch,
    "arm": ABIS["arm"].audit_arch,
    "armeb": ABIS["arm"].audit_arch,
    "armv5tejl": ABIS["arm"].audit_arch,
    "armv5tel": ABIS["arm"].audit_arch,
    "armv6l": ABIS["arm"].audit_arch,
    "armv7l": ABIS["arm"].audit_arch,
    "ppc64": 0x80000015,
    "ppc64le": 0xC0000015,
    "ppc": 0x14,
    "s390x": 0x80000016,
    "s390": 0x16,
}


def machine_by_name(name: str) -> Machine | None:
    """Return the machine for a `uname -m` / `--arch` spelling, or None."""
    aliases = {"amd64": "x86_64", "arm64": "aarch64"}
    return MACHINES.get(aliases.get(name, name))


def host_machine() -> Machine | None:
    """Return the machine this process runs on, or None when it is not modelled."""
    return machine_by_name(platform.machine())


def abi_by_audit_arch(value: int) -> Abi | None:
    """Return the ABI whose AUDIT_ARCH value is `value`, or None."""
    for abi in ABIS.values():
        if abi.audit_arch == value:
            return abi
    return None


def resolve_arch(value: str, machine: Machine) -> int | None:
    """Resolve the value of `-F arch=` to an AUDIT_ARCH number the way auditctl does.

    `b64`/`b32` are relative to `machine`; names and numbers are absolute. Returns None
    when auditctl would reject the value ("arch" unknown).
    """
    lowered = value.lower()
    if lowered == "b64":
        return machine.native.audit_arch
    if lowered == "b32":
        return machine.compat.audit_arch
    if value[:1].isdigit():
        try:
            number = int(value, 0)
        except ValueError:
            return None
        return number if number in _ARCH_NAMES.values() else None
    return _ARCH_NAMES.get(lowered)
