"""Heimdall Data Format (HDF) JSON, for Heimdall and the MITRE SAF tools."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kmod_audit._version import __version__

from .assess import (
    IMPACT,
    TOOL,
    Assessment,
    ChecklistEntry,
    ccis,
    check_text,
    fix_text,
    references,
    release,
)

# --------------------------------------------------------------------------------------
# HDF (MITRE Heimdall Data Format, exec JSON 1.0)


def _hdf_control(outcome: ChecklistEntry, time: str) -> dict[str, Any]:
    req = outcome.requirement
    refs = references(req)
    severity = refs.get("severity", "medium")
    if outcome.status == "not_applicable":
        results: list[dict[str, Any]] = [
            {
                "status": "skipped",
                "code_desc": f"{req.id}: not applicable",
                "skip_message": outcome.comment,
                "start_time": time,
            }
        ]
    else:
        results = []
        for target, status, message in outcome.checks:
            result: dict[str, Any] = {
                "status": status,
                "code_desc": f"{req.id} {target}",
                "start_time": time,
            }
            if status == "failed":
                result["message"] = message
            elif status == "skipped":
                result["skip_message"] = message
            else:
                result["message"] = message
            results.append(result)
    tags: dict[str, Any] = {"severity": severity, "kmod_audit_status": outcome.status}
    for label, tag in (("Vuln ID", "gid"), ("Rule ID", "rid"), ("STIG ID", "stig_id")):
        if label in refs:
            tags[tag] = refs[label]
    if ccis(req):
        tags["cci"] = ccis(req)
    for label in ("CIS", "Tenable", "ComplianceAsCode"):
        if label in refs:
            tags[label.lower()] = refs[label]
    return {
        "id": req.id,
        "title": req.title,
        "desc": check_text(outcome.profile, req),
        "descriptions": [
            {"label": "default", "data": req.title},
            {"label": "check", "data": check_text(outcome.profile, req)},
            {"label": "fix", "data": fix_text(outcome.profile, req)},
        ],
        # Heimdall reads impact 0 as "not applicable".
        "impact": 0.0 if outcome.status == "not_applicable" else IMPACT.get(severity, 0.5),
        "refs": [],
        "tags": tags,
        "code": outcome.details,
        "source_location": {"ref": "kmod_audit/profiles.py", "line": None},
        "results": results,
    }


def render_hdf(assessment: Assessment) -> str:
    """The Heimdall Data Format (exec JSON 1.0): one profile per selected profile."""
    profiles = []
    for profile in assessment.profiles:
        controls = [
            _hdf_control(o, assessment.time)
            for o in assessment.outcomes
            if o.profile.id == profile.id
        ]
        digest = hashlib.sha256(
            json.dumps([c["id"] for c in controls] + [profile.title]).encode()
        ).hexdigest()
        profiles.append(
            {
                "name": f"kmod-audit-{profile.id}",
                "title": profile.title,
                "version": __version__,
                "summary": release(profile),
                "maintainer": "kmod-audit",
                "license": "MIT",
                "sha256": digest,
                "supports": [{"platform-family": "linux"}],
                "attributes": [],
                "groups": [
                    {"id": c["id"], "title": c["title"], "controls": [c["id"]]} for c in controls
                ],
                "controls": controls,
                "status": "loaded",
            }
        )
    document = {
        "platform": {
            "name": "linux",
            "release": assessment.kernel,
            "target_id": assessment.hostname(),
        },
        "profiles": profiles,
        "statistics": {},
        "version": __version__,
        "passthrough": {
            "tool": TOOL,
            "command": assessment.command,
            "time": assessment.time,
            "target": assessment.target,
            "machine": assessment.machine,
            "host": assessment.host,
            "verdict": assessment.verdict,
        },
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
