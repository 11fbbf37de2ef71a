"""Regenerate verifier/kmod_audit/_syscall_tables.py.

Syscall tables come from `ausyscall --dump`; message type numbers from the kernel and
libaudit headers (names as `ausearch -m` spells them). Run on a machine with audit
userspace installed (`apt-get install auditd libaudit-dev linux-libc-dev`):
    python3 tools/gen_syscall_tables.py > verifier/kmod_audit/_syscall_tables.py
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

MACHINES = ("x86_64", "i386", "aarch64", "arm", "ppc", "s390", "s390x")
WIDTH = 84


def _wrap(tokens: list[str]) -> list[str]:
    chunks: list[str] = []
    current = ""
    for token in tokens:
        if current and len(current) + len(token) + 1 > WIDTH:
            chunks.append(current)
            current = token
        else:
            current = f"{current} {token}" if current else token
    chunks.append(current)
    return chunks


HEADERS = (Path("/usr/include/linux/audit.h"), Path("/usr/include/libaudit.h"))
# Defines in these headers that are not message types.
NOT_TYPES = re.compile(
    r"^(FIRST|LAST|KERNEL_OTHER_?|MAX|FILTER|ARCH|PERM|BIT|STATUS|FEATURE|VERSION|COMPARE|"
    r"NEGATE|UID|GID|LOG|FAIL|MESSAGE|FIELD|CLASS|OPERATORS|SYSCALL_CLASSES|WORD|BITMASK)"
)


def _message_types() -> dict[str, int]:
    types: dict[str, int] = {}
    pattern = re.compile(r"^#define\s+AUDIT_([A-Z0-9_]+)\s+(\d{4})\b")
    for header in HEADERS:
        for line in header.read_text().splitlines():
            match = pattern.match(line)
            if match and not NOT_TYPES.match(match.group(1)):
                number = int(match.group(2))
                if 1000 <= number <= 2999:
                    types.setdefault(match.group(1), number)
    return dict(sorted(types.items(), key=lambda item: item[1]))


def main() -> int:
    """Print the generated module on stdout."""
    version = subprocess.run(
        ["auditctl", "-v"], capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    out = [
        '"""Syscall name/number tables per audit machine.\n\n',
        f"Generated from `ausyscall <machine> --dump` (audit userspace {version});\n",
        "the numbers are the Linux ABI. Regenerate with\n",
        "`python3 tools/gen_syscall_tables.py > verifier/kmod_audit/_syscall_tables.py`.\n",
        '"""\n\nfrom __future__ import annotations\n\n# fmt: off\n',
        "TABLES: dict[str, str] = {\n",
    ]
    for machine in MACHINES:
        dump = subprocess.run(
            ["ausyscall", machine, "--dump"], capture_output=True, text=True, check=True
        ).stdout.splitlines()[1:]
        tokens = [":".join(line.split("\t")) for line in dump]
        out.append(f'    "{machine}": (\n')
        out.extend(f'        "{chunk} "\n' for chunk in _wrap(tokens))
        out.append("    ),\n")
    out.append("}\n\nMESSAGE_TYPES: dict[str, int] = {\n")
    out.extend(f'    "{name}": {number},\n' for name, number in _message_types().items())
    out.append("}\n# fmt: on\n")
    sys.stdout.write("".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
