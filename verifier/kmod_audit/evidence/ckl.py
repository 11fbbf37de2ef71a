"""STIG Viewer 2 checklists (`.ckl`, XML)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Final

from .assess import CKL_STATUS, TOOL, Assessment, release, stable_uuid, stig_profiles, target_data
from .cklb import cklb_rule

# --------------------------------------------------------------------------------------
# CKL (STIG Viewer 2)


# Characters XML 1.0 cannot hold at all (not even as references): a key or a record from the
# target may contain them.
_XML_INVALID: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _xml_text(text: str) -> str:
    return _XML_INVALID.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    element = ET.SubElement(parent, tag)
    if text is not None:
        element.text = _xml_text(text)
    return element


def render_ckl(assessment: Assessment) -> str:
    """A STIG Viewer 2 checklist (CKL, XML): one iSTIG per selected STIG profile."""
    root = ET.Element("CHECKLIST")
    asset = _sub(root, "ASSET")
    td = target_data(assessment)
    for tag, value in (
        ("ROLE", "None"),
        ("ASSET_TYPE", "Computing"),
        ("MARKING", ""),
        ("HOST_NAME", td["host_name"]),
        ("HOST_IP", td["ip_address"]),
        ("HOST_MAC", td["mac_address"]),
        ("HOST_FQDN", td["fqdn"]),
        ("TARGET_COMMENT", td["comments"]),
        ("TECH_AREA", ""),
        ("TARGET_KEY", ""),
        ("WEB_OR_DATABASE", "false"),
        ("WEB_DB_SITE", ""),
        ("WEB_DB_INSTANCE", ""),
    ):
        _sub(asset, tag, value)
    stigs = _sub(root, "STIGS")
    for profile in stig_profiles(assessment.profiles):
        bench = profile.benchmark
        if bench is None:  # pragma: no cover - filtered above
            continue
        istig = _sub(stigs, "iSTIG")
        info = _sub(istig, "STIG_INFO")
        for name, value in (
            ("version", bench.version),
            ("classification", "UNCLASSIFIED"),
            ("customname", ""),
            ("stigid", bench.id),
            ("description", f"Requirements of the {release(profile)} judged by {TOOL}."),
            ("filename", bench.filename),
            ("releaseinfo", bench.release_info),
            ("title", bench.title),
            ("uuid", stable_uuid(bench.id)),
            ("notice", ""),
            ("source", ""),
        ):
            datum = _sub(info, "SI_DATA")
            _sub(datum, "SID_NAME", name)
            if value:
                _sub(datum, "SID_DATA", value)
        for outcome in (o for o in assessment.outcomes if o.profile.id == profile.id):
            rule = cklb_rule(outcome, bench, stable_uuid(bench.id))
            vuln = _sub(istig, "VULN")
            attributes = [
                ("Vuln_Num", rule["group_id"]),
                ("Severity", rule["severity"]),
                ("Group_Title", rule["group_title"]),
                ("Rule_ID", rule["rule_id_src"]),
                ("Rule_Ver", rule["rule_version"]),
                ("Rule_Title", rule["rule_title"]),
                ("Vuln_Discuss", rule["discussion"]),
                ("IA_Controls", ""),
                ("Check_Content", rule["check_content"]),
                ("Fix_Text", rule["fix_text"]),
                ("False_Positives", ""),
                ("False_Negatives", ""),
                ("Documentable", "false"),
                ("Mitigations", ""),
                ("Potential_Impact", ""),
                ("Third_Party_Tools", ""),
                ("Mitigation_Control", ""),
                ("Responsibility", ""),
                ("Security_Override_Guidance", ""),
                ("Check_Content_Ref", "M"),
                ("Weight", "10.0"),
                ("Class", "Unclass"),
                ("STIGRef", f"{bench.title} :: Version {bench.version}, {bench.release_info}"),
                ("TargetKey", ""),
                ("STIG_UUID", rule["stig_uuid"]),
                *(("CCI_REF", cci) for cci in rule["ccis"]),
            ]
            for name, value in attributes:
                datum = _sub(vuln, "STIG_DATA")
                _sub(datum, "VULN_ATTRIBUTE", name)
                _sub(datum, "ATTRIBUTE_DATA", value)
            _sub(vuln, "STATUS", CKL_STATUS[outcome.status])
            _sub(vuln, "FINDING_DETAILS", outcome.details)
            _sub(vuln, "COMMENTS", outcome.comment)
            _sub(vuln, "SEVERITY_OVERRIDE", "")
            _sub(vuln, "SEVERITY_JUSTIFICATION", "")
    ET.indent(root, space="\t")
    body = ET.tostring(root, encoding="unicode", short_empty_elements=False)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<!--{TOOL}-->\n{body}\n'
