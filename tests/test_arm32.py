"""The AArch32 stimulus programs (kmod_audit._arm32), byte by byte.

On the x86_64 host these tests read the images as the arm64 kernel's ELF loader and an
ARM core would: the headers it checks (`compat_elf_check_arch` wants an EABI version),
the code, and the parameter block the code loads into r0-r5 and r7. The arm64 guests run
them for real (tests/test_vm_matrix.py).
"""

from __future__ import annotations

import struct

import pytest

from kmod_audit import _arm32
from kmod_audit.syscalls import ABIS


def _header(image: bytes) -> dict[str, int]:
    fields = struct.unpack_from("<HHIIIIIHHHHHH", image, 16)
    names = ["type", "machine", "version", "entry", "phoff", "shoff", "flags"]
    names += ["ehsize", "phentsize", "phnum", "shentsize", "shnum", "shstrndx"]
    return dict(zip(names, fields, strict=True))


def _phdrs(image: bytes) -> list[tuple[int, ...]]:
    header = _header(image)
    return [
        struct.unpack_from("<8I", image, header["phoff"] + i * header["phentsize"])
        for i in range(header["phnum"])
    ]


def _block(image: bytes) -> list[int]:
    """The seven words the code loads: r0-r5, then r7 (the syscall number)."""
    return list(struct.unpack_from("<7I", image, _arm32.HEADER + len(_arm32.CODE)))


def _at(image: bytes, address: int, size: int | None = None) -> bytes:
    offset = address - _arm32.BASE
    assert 0 <= offset < len(image)
    if size is not None:
        return image[offset : offset + size]
    return image[offset : image.index(b"\0", offset)]


def _pointers(image: bytes, address: int) -> list[int]:
    found = []
    while (word := struct.unpack_from("<I", image, address - _arm32.BASE)[0]) != 0:
        found.append(word)
        address += 4
    return found


class TestElfImage:
    """What arm64's ELF loader and an ARM core read from a built image."""

    def test_the_loader_accepts_it(self) -> None:
        """ELF32, little endian, ARM, executable, EABI version 5, entry at the code."""
        image = _arm32.build(20, [])
        assert image[:4] == b"\x7fELF"
        assert image[4:7] == bytes([1, 1, 1])  # ELFCLASS32, ELFDATA2LSB, EV_CURRENT
        header = _header(image)
        assert header["type"] == 2  # ET_EXEC
        assert header["machine"] == 40  # EM_ARM
        assert header["flags"] & 0xFF000000 == 0x05000000  # EF_ARM_EABI_VER5
        assert header["entry"] == _arm32.BASE + _arm32.HEADER
        assert header["ehsize"] == 52
        assert header["phentsize"] == 32

    def test_one_load_segment_maps_the_whole_file_read_execute(self) -> None:
        """One PT_LOAD maps the file r-x at BASE; PT_GNU_STACK keeps the stack rw-."""
        image = _arm32.build(20, [b"some string", [b"a", b"b"]])
        load, stack = _phdrs(image)
        p_type, offset, vaddr, _paddr, filesz, memsz, flags, align = load
        assert (p_type, offset, vaddr) == (1, 0, _arm32.BASE)
        assert filesz == memsz == len(image)
        assert flags == 5  # PF_R | PF_X
        assert align == 0x1000
        assert vaddr % align == 0
        # PT_GNU_STACK, not executable: no READ_IMPLIES_EXEC personality.
        assert stack[0] == 0x6474E551
        assert stack[6] == 6  # PF_R | PF_W

    def test_the_code_is_the_syscall_then_exit(self) -> None:
        """The code: the syscall from the block (add, ldmia, svc), then exit(-result)."""
        image = _arm32.build(20, [])
        words = struct.unpack_from("<6I", image, _arm32.HEADER)
        assert words == (0xE28F8010, 0xE89800BF, 0xEF000000, 0xE2600000, 0xE3A07001, 0xEF000000)
        # pc reads as the instruction's address + 8: r8 = the word after the six.
        add_at = _arm32.BASE + _arm32.HEADER
        assert add_at + 8 + 16 == add_at + len(_arm32.CODE)
        # ldmia's register list: r0-r5 and r7 (bits 0-5 and 7), base r8, no writeback.
        assert words[1] & 0xFFFF == 0b10111111
        assert (words[1] >> 16) & 0xF == 8

    def test_numbers_and_ints_go_to_r7_and_r0_r5(self) -> None:
        """The syscall number is r7; ints are passed as 32-bit words in r0-r5."""
        arm = ABIS["arm"]
        number = arm.number("finit_module")
        assert number == 379
        image = _arm32.build(number, [0xFFFFFFFF, 7, -100])
        block = _block(image)
        assert block[6] == 379
        assert block[:3] == [0xFFFFFFFF, 7, 0xFFFFFF9C]
        assert block[3:6] == [0, 0, 0]

    def test_bytes_become_pointers_to_nul_terminated_copies(self) -> None:
        """delete_module(name, O_NONBLOCK): the name is a pointer into the image."""
        image = _arm32.build(129, [b"kmod_audit_no_such_module", 0o4000])
        block = _block(image)
        assert _at(image, block[0]) == b"kmod_audit_no_such_module"
        assert block[1] == 0o4000
        assert block[0] % 4 == 0

    def test_lists_become_null_terminated_pointer_arrays(self) -> None:
        """execveat(AT_FDCWD, path, argv, envp, 0) as the probe makes it."""
        number = ABIS["arm"].number("execveat")
        assert number == 387
        image = _arm32.build(number, [-100, b"/usr/bin/kmod", [b"kmod", b"--version"], [], 0])
        block = _block(image)
        assert block[0] == 0xFFFFFF9C
        assert _at(image, block[1]) == b"/usr/bin/kmod"
        argv = _pointers(image, block[2])
        assert [_at(image, p) for p in argv] == [b"kmod", b"--version"]
        assert _pointers(image, block[3]) == []  # an empty envp: just the NULL
        assert block[2] % 4 == 0
        assert block[3] % 4 == 0
        assert block[4] == 0
        assert block[6] == 387

    def test_a_blob_keeps_its_bytes(self) -> None:
        """init_module(image, len, "") passes the bad image's bytes and length."""
        blob = b"kmod-audit probe, not an ELF module\0"
        image = _arm32.build(128, [blob, len(blob), b""])
        block = _block(image)
        assert _at(image, block[0], len(blob)) == blob
        assert block[1] == len(blob)
        assert _at(image, block[2]) == b""

    def test_at_most_six_arguments(self) -> None:
        """An arm syscall has six argument registers."""
        with pytest.raises(ValueError, match="at most 6"):
            _arm32.build(1, [0] * 7)


class TestExitResult:
    """The program's exit status read back as the syscall's result."""

    @pytest.mark.parametrize(
        ("status", "result"),
        [(0, 0), (1, -1), (38, -38), (255, -255), (-9, None), (None, None), (256, None)],
    )
    def test_status_to_result(self, status: int | None, result: int | None) -> None:
        """The program exits with -result: errno 38 (ENOSYS) is status 38; a signal is none."""
        assert _arm32.exit_result(status) == result
