"""Evidence an assessor takes: STIG Viewer checklists (CKLB, CKL) and Heimdall HDF.

`check` and `verify` judge requirements; this module turns a judgement into the files
assessors import: STIG Viewer 3 checklists (`.cklb`, JSON), STIG Viewer 2 checklists
(`.ckl`, XML) and MITRE's Heimdall Data Format (HDF, what `inspecjs` and Heimdall read).
STIG Manager imports the checklists with its own parsers (`reviewsFromCklb`,
`reviewsFromCkl`); the tests run those parsers on real outputs.

Checklists exist only for DISA STIGs (`nixos-stig`, `al2023-stig`): one STIG entry per
selected STIG profile, one rule per requirement. CIS and Tenable are no STIGs: a checklist
for them alone is refused (exit 2; use `--format hdf` or `json`), and alongside a STIG they
are left out of the checklist (its target comments say so). HDF holds every profile.

The check and fix text are kmod-audit's own words and name the STIG release; DISA's text
is not reproduced. Statuses: `not_a_finding` when proven, `open` with the reason when not,
`not_reviewed` when kmod-audit could not decide (`check`: the evaluator cannot decide;
`verify`: exit 3, the kernel could not be exercised or the evidence is incomplete, or a
failure that rests on no record read while another requirement makes the run exit 1), and
`not_applicable` when nothing of the requirement exists on the machine. The finding
details are the evidence: the covering rule lines with file:line (`check`), or per stimulus
the SYSCALL record's serial, key, auid, success and exit and the KERN_MODULE name of a real
load (`verify`); each states the time, kernel, host and kmod-audit version.

Files are written atomically (`_files.write_atomic`): a temporary file in the same directory,
fsync, rename, so a reader never sees a partial checklist.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kmod_audit.errors import ConfigurationError
from kmod_audit.profiles import Profile

from .assess import (
    Assessment,
    ChecklistEntry,
    ChecklistStatus,
    assess_check,
    assess_verify,
    stig_profiles,
)
from .ckl import render_ckl
from .cklb import load_template, merge_cklb, render_cklb
from .hdf import render_hdf

__all__ = [
    "Assessment",
    "ChecklistEntry",
    "ChecklistStatus",
    "assess_check",
    "assess_verify",
    "load_template",
    "merge_cklb",
    "preflight",
    "render",
    "render_ckl",
    "render_cklb",
    "render_hdf",
]

# --------------------------------------------------------------------------------------
# The CLI's entry points


def preflight(
    fmt: str, profiles: Sequence[Profile], template: str | None, *, option: str | None = None
) -> str | None:
    """Refuse what cannot give the file asked for, before any work; return the template.

    `option` names what asked for the file in the messages (default `--format FMT`).

    Raises:
        ConfigurationError: a checklist of no STIG, a template without `--format cklb`,
            or an unreadable template.
    """
    if template is not None and fmt != "cklb":
        msg = "--cklb-template: it fills a STIG Viewer 3 checklist; pass --format cklb with it"
        raise ConfigurationError(msg)
    if fmt in {"cklb", "ckl"} and not stig_profiles(profiles):
        chosen = ", ".join(p.id for p in profiles)
        named = option or f"--format {fmt}"
        msg = (
            f"{named}: STIG Viewer checklists exist only for DISA STIGs (nixos-stig, "
            f"al2023-stig), and {chosen} is none; use --format hdf (Heimdall) or json for "
            "CIS and Tenable, or add --profile nixos-stig or --profile al2023-stig"
        )
        raise ConfigurationError(msg)
    return load_template(template) if template is not None else None


def render(fmt: str, assessment: Assessment, template: str | None = None) -> str:
    """Render `assessment` in the evidence format `fmt` (`cklb`, `ckl` or `hdf`)."""
    writers: dict[str, Callable[[Assessment], str]] = {
        "cklb": lambda a: render_cklb(a, template),
        "ckl": render_ckl,
        "hdf": render_hdf,
    }
    return writers[fmt](assessment)
