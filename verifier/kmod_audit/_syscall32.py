"""Make syscalls through the 32-bit ABI (`int 0x80`) from this 64-bit x86_64 process.

With IA32 emulation, `int 0x80` from 64-bit code enters the i386 syscall table, and the
audit subsystem records it with `arch=40000003` (b32). That is exactly what a 32-bit
program's module syscalls look like to the kernel, without shipping a 32-bit program.
Pointer arguments must lie below 4 GiB: `LowMemory` maps such memory (MAP_32BIT).

Run these only in a child process: with IA32 emulation disabled, `int 0x80` raises a
general protection fault and the kernel kills the process with SIGSEGV.
"""

from __future__ import annotations

import ctypes
import mmap
import platform
from typing import Final

__all__ = ["LowMemory", "Syscall32", "available"]

MAP_32BIT: Final = 0x40

# push rbx; push rbp; mov eax,edi; mov ebx,esi; mov r11,rcx; mov ecx,edx; mov edx,r11d;
# mov esi,r8d; mov edi,r9d; int 0x80; movsxd rax,eax; pop rbp; pop rbx; ret
# (SysV arguments nr, a1..a5 -> eax, ebx, ecx, edx, esi, edi; result sign-extended.)
_TRAMPOLINE: Final = bytes.fromhex("535589f889f34989cb89d14489da4489c64489cfcd804863c05d5bc3")

_Function = ctypes.CFUNCTYPE(
    ctypes.c_long,
    ctypes.c_long,
    ctypes.c_long,
    ctypes.c_long,
    ctypes.c_long,
    ctypes.c_long,
    ctypes.c_long,
)


def available() -> bool:
    """Whether this process can try `int 0x80` (an x86_64 Linux machine)."""
    return platform.machine() == "x86_64"


class LowMemory:
    """A page of memory below 4 GiB, for pointer arguments of 32-bit syscalls."""

    def __init__(self, size: int = 4096) -> None:
        """Map `size` bytes with MAP_32BIT."""
        self._map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_32BIT)
        self.address = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        self._used = 0

    def put(self, data: bytes) -> int:
        """Copy `data` into the page (8-byte aligned) and return its 32-bit address."""
        start = (self._used + 7) & ~7
        self._map[start : start + len(data)] = data
        self._used = start + len(data)
        return self.address + start

    def string(self, text: str) -> int:
        """A NUL-terminated string; return its address."""
        return self.put(text.encode() + b"\0")

    def pointers(self, addresses: list[int]) -> int:
        """A NULL-terminated array of 32-bit pointers (compat argv/envp); return its address."""
        data = b"".join(a.to_bytes(4, "little") for a in [*addresses, 0])
        return self.put(data)


class Syscall32:
    """Call i386 syscalls by number through an executable trampoline."""

    def __init__(self) -> None:
        """Map the trampoline (read, write, execute)."""
        self._code = mmap.mmap(
            -1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC
        )
        self._code.write(_TRAMPOLINE)
        address = ctypes.addressof(ctypes.c_char.from_buffer(self._code))
        self._call = _Function(address)

    def __call__(self, number: int, *args: int) -> int:
        """Make i386 syscall `number` with up to five 32-bit arguments.

        Returns:
            The result, or -errno.
        """
        padded = [a & 0xFFFFFFFF for a in args] + [0] * (5 - len(args))
        return int(self._call(number, *padded))
