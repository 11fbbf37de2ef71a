"""Syscalls through the 32-bit arm EABI (AArch32) on an aarch64 machine.

Unlike `int 0x80` on x86_64, an aarch64 process cannot enter the 32-bit syscall table: only
a 32-bit process can. So each stimulus is its own process that executes a tiny static
ELF32 ARM program built here (no toolchain): it loads r0-r5 and r7 (the syscall number)
from a parameter block, runs `svc #0`, and exits with the negated result, so a failing
call's errno is the exit status. The process keeps its pid through the exec, so the
SYSCALL record (arch=40000028) matches the stimulus by pid.

It needs CONFIG_COMPAT and a CPU that runs AArch32 at EL0 (Neoverse V2 and Apple M-series
cannot): otherwise the kernel refuses the program with ENOEXEC. `compat_el0()` reads what
the machine says about it.
"""

from __future__ import annotations

import gzip
import os
import platform
import struct
from pathlib import Path
from typing import Final

__all__ = ["Arg", "build", "compat_el0", "exec_image", "exit_result"]

BASE: Final = 0x10000  # load address, above mmap_min_addr
EM_ARM: Final = 40
#: arm64's compat_elf_check_arch() refuses an image without an EABI version (ENOEXEC).
EF_ARM_EABI_VER5: Final = 0x05000000
PT_LOAD: Final = 1
#: Without it the stack is executable, and READ_IMPLIES_EXEC is set for the process.
PT_GNU_STACK: Final = 0x6474E551
_EHDR: Final = 52
_PHDR: Final = 32
HEADER: Final = _EHDR + 2 * _PHDR
#: add r8, pc, #16; ldmia r8, {r0-r5, r7}; svc #0; rsb r0, r0, #0; mov r7, #1; svc #0
#: (pc reads 8 ahead: r8 = the parameter block right after these six words; 1 = exit).
CODE: Final = struct.pack(
    "<6I", 0xE28F8010, 0xE89800BF, 0xEF000000, 0xE2600000, 0xE3A07001, 0xEF000000
)
_DATA: Final = HEADER + len(CODE) + 7 * 4

#: An argument: an int as is (truncated to 32 bits); bytes become a pointer to a
#: NUL-terminated copy; a list of bytes a pointer to a NULL-terminated array of such
#: pointers (argv, envp).
Arg = int | bytes | list[bytes]


def build(number: int, args: list[Arg]) -> bytes:
    """An ELF32 ARM EABI program that makes syscall `number` with `args`, then exits.

    Its exit status is the negated result, modulo 256: `exit_result` reads it back.

    Raises:
        ValueError: more than six arguments.
    """
    if len(args) > 6:
        msg = f"an arm syscall takes at most 6 arguments, not {len(args)}"
        raise ValueError(msg)
    data = bytearray()

    def put(blob: bytes) -> int:
        data.extend(b"\0" * (-len(data) % 4))
        address = BASE + _DATA + len(data)
        data.extend(blob)
        return address

    words: list[int] = []
    for arg in args:
        if isinstance(arg, int):
            words.append(arg & 0xFFFFFFFF)
        elif isinstance(arg, bytes):
            words.append(put(arg + b"\0"))
        else:
            pointers = [put(item + b"\0") for item in arg]
            data.extend(b"\0" * (-len(data) % 4))
            words.append(put(struct.pack(f"<{len(pointers) + 1}I", *pointers, 0)))
    words += [0] * (6 - len(words))
    body = CODE + struct.pack("<7I", *words, number) + bytes(data)
    size = HEADER + len(body)
    ident = b"\x7fELF" + bytes([1, 1, 1, 0]) + bytes(8)  # ELFCLASS32, LSB, version 1, SysV
    ehdr = ident + struct.pack(
        "<HHIIIIIHHHHHH",
        2,  # ET_EXEC
        EM_ARM,
        1,  # EV_CURRENT
        BASE + HEADER,  # entry: the code right after the headers
        _EHDR,  # program headers right after the ELF header
        0,  # no section headers
        EF_ARM_EABI_VER5,
        _EHDR,
        _PHDR,
        2,
        0,
        0,
        0,
    )
    load = struct.pack("<8I", PT_LOAD, 0, BASE, BASE, size, size, 5, 0x1000)  # r-x
    stack = struct.pack("<8I", PT_GNU_STACK, 0, 0, 0, 0, 0, 6, 16)  # rw-
    return ehdr + load + stack + body


def exit_result(status: int | None) -> int | None:
    """The result a program from `build` reported by its exit status: 0 or -errno.

    None when it reported nothing: killed by a signal (a negative status), or not waited for.
    """
    if status is None or not 0 <= status < 256:
        return None
    return -status


def exec_image(image: bytes, name: str = "kmod-audit-arm32") -> None:
    """In a child process: execute `image` from a memfd. Returns only by raising OSError."""
    fd = os.memfd_create(name)
    os.write(fd, image)
    os.execve(fd, [name], {})  # noqa: S606 - the program is built above, not a shell's


def compat_el0() -> str | None:
    """What the machine says about running AArch32 programs, when it says no; else None.

    Reads `/sys/devices/system/cpu/aarch32_el0` (the CPUs that run AArch32 at EL0, since
    Linux 5.12 with CONFIG_COMPAT) and the kernel's configuration (/proc/config.gz or
    /boot/config-<release>).
    """
    config = _config_compat()
    if config is False:
        return "the kernel is built without CONFIG_COMPAT"
    try:
        cpus = Path("/sys/devices/system/cpu/aarch32_el0").read_text().strip()
    except OSError:
        return None
    if not cpus:
        return "no CPU runs AArch32 at EL0 (/sys/devices/system/cpu/aarch32_el0 is empty)"
    return None


def _config_compat() -> bool | None:
    """CONFIG_COMPAT of the running kernel: True, False, or None when no config is readable."""
    text = None
    try:
        with gzip.open("/proc/config.gz", "rt", encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        try:
            text = Path(f"/boot/config-{platform.release()}").read_text(errors="replace")
        except OSError:
            return None
    return "\nCONFIG_COMPAT=y\n" in f"\n{text}"
