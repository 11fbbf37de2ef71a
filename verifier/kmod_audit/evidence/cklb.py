"""STIG Viewer 3 checklists (`.cklb`, JSON), and filling in a template byte-faithfully."""

from __future__ import annotations

import json
import os
import re
import stat
import uuid
from collections.abc import Sequence
from typing import Any, Final

from kmod_audit._jsonspans import Node, member_spans, parse_spans
from kmod_audit.errors import ConfigurationError
from kmod_audit.profiles import Benchmark, Profile

from .assess import (
    OUR_COMMENTS,
    SRG,
    Assessment,
    ChecklistEntry,
    ccis,
    check_text,
    fix_text,
    references,
    release,
    stable_uuid,
    stig_profiles,
    target_data,
)


def cklb_rule(outcome: ChecklistEntry, bench: Benchmark, stig_uuid: str) -> dict[str, Any]:
    """One rule of a STIG Viewer 3 checklist (the STIG Viewer 2 one is built from it)."""
    req = outcome.requirement
    refs = references(req)
    group = refs.get("Vuln ID", req.id)
    rule_src = refs.get("Rule ID", "")
    srg = SRG.findall(refs.get("SRG", ""))
    return {
        "group_id_src": group,
        "group_tree": [
            {
                "id": group,
                "title": srg[0] if srg else group,
                "description": "<GroupDescription></GroupDescription>",
            }
        ],
        "group_id": group,
        "severity": refs.get("severity", "medium"),
        "group_title": srg[0] if srg else req.title,
        "rule_id_src": rule_src,
        "rule_id": rule_src.removesuffix("_rule"),
        "rule_version": refs.get("STIG ID", ""),
        "rule_title": req.title,
        "fix_text": fix_text(outcome.profile, req),
        "weight": "10.0",
        "check_content": check_text(outcome.profile, req),
        "check_content_ref": {"href": bench.filename, "name": "M"},
        "classification": "Unclassified",
        "discussion": (
            f"See the {release(outcome.profile)} for the discussion of this requirement. "
            "Audit records of module loads and unloads show who changed the running kernel."
        ),
        "false_positives": "",
        "false_negatives": "",
        "documentable": "false",
        "security_override_guidance": "",
        "potential_impacts": "",
        "third_party_tools": "",
        "ia_controls": "",
        "responsibility": "",
        "mitigations": "",
        "mitigation_control": "",
        "legacy_ids": [],
        "ccis": ccis(req),
        "reference_identifier": "",
        "uuid": stable_uuid(bench.id, group),
        "stig_uuid": stig_uuid,
        "status": outcome.status,
        "overrides": {},
        "comments": outcome.comment,
        "finding_details": outcome.details,
    }


def _cklb_stig(profile: Profile, outcomes: Sequence[ChecklistEntry]) -> dict[str, Any]:
    bench = profile.benchmark
    if bench is None:  # pragma: no cover - callers pass STIG profiles only
        msg = f"{profile.id} is no STIG"
        raise ValueError(msg)
    stig_uuid = stable_uuid(bench.id)
    rules = [cklb_rule(o, bench, stig_uuid) for o in outcomes if o.profile.id == profile.id]
    return {
        "stig_name": bench.title,
        "display_name": bench.display_name,
        "stig_id": bench.id,
        "release_info": bench.release_info,
        "version": bench.version,
        "uuid": stig_uuid,
        "reference_identifier": "",
        "size": len(rules),
        "rules": rules,
    }


def render_cklb(assessment: Assessment, template: str | None = None) -> str:
    """A STIG Viewer 3 checklist (CKLB): one STIG entry per selected STIG profile.

    With `template` (the text of a checklist exported from STIG Viewer), the rules
    kmod-audit judged are filled into it and everything else stays byte-identical (see
    `merge_cklb`).
    """
    if template is not None:
        return merge_cklb(template, assessment)
    stigs = [_cklb_stig(p, assessment.outcomes) for p in stig_profiles(assessment.profiles)]
    checklist = {
        "title": f"kmod-audit {assessment.command}: {assessment.hostname()}",
        "id": str(uuid.uuid4()),
        "stigs": stigs,
        "active": False,
        "mode": 2,
        "has_path": False,
        "target_data": target_data(assessment),
        "cklb_version": "1.0",
    }
    return json.dumps(checklist, indent=2, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------------------
# Merging into a STIG Viewer checklist


MAX_TEMPLATE_BYTES: Final = 64 * 1024 * 1024
"""The most a `--cklb-template` may hold (a whole STIG's checklist is a few MiB)."""


def _regular_template(path: str, mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "no regular file (a device, FIFO or socket)"
        msg = f"--cklb-template {path}: is {kind}; pass a .cklb file STIG Viewer 3 saved"
        raise ConfigurationError(msg)


def load_template(path: str) -> str:
    """Read a STIG Viewer 3 checklist to merge into, checked to be one.

    Raises:
        ConfigurationError: it cannot be read or is no CKLB checklist (names the file).
    """
    try:
        # Only a regular file, and a bounded read: /dev/zero would fill the memory, and a
        # FIFO without a writer would hang (as for rules sources). O_NONBLOCK: a path
        # swapped for a FIFO after the check does not wait for a writer either.
        _regular_template(path, os.stat(path).st_mode)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            _regular_template(path, os.fstat(handle.fileno()).st_mode)
            data = handle.read(MAX_TEMPLATE_BYTES + 1)
        # Plain utf-8: a byte order mark is kept (and written back) like every other byte.
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        msg = (
            f"--cklb-template {path}: cannot read it ({exc}); pass a .cklb file STIG Viewer 3 saved"
        )
        raise ConfigurationError(msg) from None
    if len(data) > MAX_TEMPLATE_BYTES:
        msg = (
            f"--cklb-template {path}: holds more than {MAX_TEMPLATE_BYTES // (1024 * 1024)} "
            "MiB, far more than a checklist of a whole STIG; pass a .cklb file STIG Viewer 3 "
            "saved"
        )
        raise ConfigurationError(msg)
    try:
        # Three levels reach each STIG's `rules`; the rules are read by the merge.
        root = parse_spans(text.removeprefix("\ufeff"), levels=3)
    except json.JSONDecodeError as exc:
        checklist_like = exc.msg.startswith(("Nested deeper", "Integer too long"))
        what = "no checklist" if checklist_like else "not JSON"
        msg = (
            f"--cklb-template {path}: {what} ({exc.msg} at line {exc.lineno} column "
            f"{exc.colno}); pass a .cklb file STIG Viewer 3 saved"
        )
        raise ConfigurationError(msg) from None
    stigs = root.get("stigs") if isinstance(root.value, dict) else None
    if stigs is None or not isinstance(stigs.value, list):
        msg = f"--cklb-template {path}: no `stigs` array, so it is no STIG Viewer 3 checklist"
        raise ConfigurationError(msg)
    for index, stig in enumerate(stigs.items):
        rules = stig.get("rules") if isinstance(stig.value, dict) else None
        if rules is None or not isinstance(rules.value, list):
            msg = f"--cklb-template {path}: stigs[{index}] has no `rules` array"
            raise ConfigurationError(msg)
    return text


def _indent_of(text: str, pos: int) -> str:
    """The blanks between the start of `pos`'s line and `pos` ("" if anything else is there)."""
    # Only the blanks just before `pos` are read: looking back to the line start would read
    # a compact (one-line) checklist whole, once per rule.
    start = pos
    while start > 0 and text[start - 1] != "\n" and text[start - 1].isspace():
        start -= 1
    if start > 0 and text[start - 1] != "\n":
        return ""
    return text[start:pos]


def _dumps_like(value: object, indent: str, step: str) -> str:
    """`value` as JSON, indented to sit at `indent` in a document indented by `step`."""
    if not step:
        return json.dumps(value, ensure_ascii=False)
    text = json.dumps(value, indent=len(step), ensure_ascii=False)
    return text.replace("\n", "\n" + indent)


def _step(text: str) -> str:
    """The document's indentation unit (empty for compact JSON)."""
    match = re.search(r"\n([ \t]+)\S", text)
    return match.group(1) if match else ""


def merge_cklb(template: str, assessment: Assessment) -> str:
    """Fill the rules kmod-audit judged into the checklist `template`.

    A rule is matched by the STIG's `stig_id` and the rule's `group_id` (its V- number).
    Its `status` and `finding_details` are replaced; its `comments` too, unless an
    assessor wrote some (a comment an earlier kmod-audit run wrote is replaced). A rule
    kmod-audit could not review (`not_reviewed`) is left as the template has it: "could
    not decide" never overwrites an assessor's verdict. A STIG of the selection that the
    template lacks is appended. An empty host name is filled in
    (STIG Manager needs one). Every other byte of the template stays as it is.
    """
    bom = "\ufeff" if template.startswith("\ufeff") else ""
    text = template.removeprefix("\ufeff")
    # Four levels reach each rule (decoded whole); a rule that changes is read again for
    # the spans of its members.
    root = parse_spans(text, levels=4)
    step = _step(text)
    edits: list[tuple[int, int, str]] = []
    # Each outcome's texts are encoded once, not once per rule that shows them.
    encoded: dict[str, str] = {}

    def encode(value: str) -> str:
        if value not in encoded:
            encoded[value] = json.dumps(value, ensure_ascii=False)
        return encoded[value]

    stigs_node = root.get("stigs")
    if stigs_node is None:  # load_template checked it
        msg = "the template has no stigs array"
        raise ConfigurationError(msg)
    present: set[str] = set()
    for stig in stigs_node.items:
        stig_id = stig.get("stig_id")
        bench_id = str(stig_id.value) if stig_id is not None else ""
        bench_id = bench_id.replace("xccdf_mil.disa.stig_benchmark_", "")
        present.add(bench_id)
        ours = {
            references(o.requirement).get("Vuln ID", o.requirement.id): o
            for o in assessment.outcomes
            if o.profile.benchmark is not None and o.profile.benchmark.id == bench_id
        }
        rules = stig.get("rules")
        for rule in rules.items if rules is not None else ():
            # The decoded rule holds the last of repeated members, as Node.get finds it.
            members = rule.value if isinstance(rule.value, dict) else {}
            if "group_id" not in members:
                continue
            outcome = ours.get(str(members["group_id"]))
            if outcome is None or outcome.status == "not_reviewed":
                continue
            comments = members.get("comments")
            changes: dict[str, str] = {
                "status": encode(outcome.status),
                "finding_details": encode(outcome.details),
            }
            # An assessor's comment stays; one an earlier run wrote would contradict the
            # new status (a merged checklist is the next run's template).
            if not comments or (isinstance(comments, str) and comments.startswith(OUR_COMMENTS)):
                changes["comments"] = encode(outcome.comment)
            edits.extend(_set_members(text, rule, changes))
    missing = [
        p
        for p in stig_profiles(assessment.profiles)
        if p.benchmark is not None and p.benchmark.id not in present
    ]
    if missing:
        indent = _indent_of(text, stigs_node.items[0].start) if stigs_node.items else ""
        blocks = [_dumps_like(_cklb_stig(p, assessment.outcomes), indent, step) for p in missing]
        if stigs_node.items:
            joiner = ",\n" + indent if step else ","
            edits.append(
                (stigs_node.items[-1].end, stigs_node.items[-1].end, joiner + joiner.join(blocks))
            )
        else:
            edits.append((stigs_node.start + 1, stigs_node.end - 1, ",".join(blocks)))
    target = root.get("target_data")
    if target is not None and isinstance(target.value, dict) and not target.value.get("host_name"):
        # STIG Manager refuses a checklist without a host name; every other field of the
        # target data is the assessor's.
        edits.extend(_set_members(text, target, {"host_name": encode(assessment.hostname())}))
    return bom + _apply(text, edits)


def _apply(text: str, edits: list[tuple[int, int, str]]) -> str:
    """`text` with each span `[start, end)` of `edits` replaced, built in one pass.

    The edits never overlap (each lies inside its own rule, the target data, or at the end
    of the stigs array). Making them one by one copied the whole text per edit: a
    checklist of 20,000 rules never finished.
    """
    parts: list[str] = []
    pos = 0
    # An insertion at the end of a replaced member sorts after it, so it follows it.
    for start, end, new in sorted(edits):
        if start < pos:  # pragma: no cover - would be a bug in merge_cklb
            msg = f"overlapping checklist edits at offset {start}"
            raise ValueError(msg)
        parts.append(text[pos:start])
        parts.append(new)
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


def _set_members(text: str, obj: Node, changes: dict[str, str]) -> list[tuple[int, int, str]]:
    """Edits that set members of the object `obj` (replaced in place, or appended).

    `changes` maps each member's name to its new value as JSON text.
    """
    edits: list[tuple[int, int, str]] = []
    added: list[str] = []
    spans = member_spans(text, obj)
    found = {key: (start, end) for key, start, end in spans}  # the last of repeated keys
    for name, encoded in changes.items():
        if name in found:
            edits.append((*found[name], encoded))
        else:
            added.append(f"{json.dumps(name)}: {encoded}")
    if added:
        if not spans:
            edits.append((obj.start + 1, obj.start + 1, ", ".join(added)))
        else:
            _, last_start, last_end = spans[-1]
            key_start = text.rfind('"', 0, text.rfind(":", 0, last_start))
            key_start = text.rfind('"', 0, key_start)
            indent = _indent_of(text, key_start)
            sep = ",\n" + indent if indent else ", "
            edits.append((last_end, last_end, sep + sep.join(added)))
    return edits
