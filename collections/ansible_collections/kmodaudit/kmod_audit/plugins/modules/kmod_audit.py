#!/usr/bin/python
"""Ansible module: run `kmod-audit check` or `kmod-audit verify` on the target."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kmod_audit
short_description: Prove that kernel module loads and unloads leave keyed audit records
version_added: "1.0.0"
description:
  - Runs C(kmod-audit check) or C(kmod-audit verify) on the target with C(--format json)
    and returns the report as structured data, so that C(register) works.
  - C(check) judges the audit rules the way the kernel applies them. With no O(sources)
    and O(running=false) it judges both the running rules and the on-disk rules
    (C(/etc/audit/rules.d), or the file that NixOS loads) and reports drift between them.
  - C(verify) exercises the kernel. It makes the module syscalls as a logged-in user and
    reads the audit records back. Unless O(no_load=true) it really loads and unloads the
    probe module (C(dummy)) when that module is not loaded; every module is left as found.
  - >-
    The exit codes of kmod-audit map to the results. C(0) is RV(compliant=true). C(1) is
    RV(compliant=false), a definite finding. C(3) is RV(undecided=true), because the system
    could not be asked or the evidence is incomplete, which never counts as compliant.
    These three do not fail the task unless O(fail_on) asks for it. C(2) (a usage error or
    an unreadable input) always fails the task, with kmod-audit's message.
  - The target needs kmod-audit (Python 3.11 or newer). The role
    P(kmodaudit.kmod_audit.prove#role) installs it into its own virtualenv.
author:
  - kmod-audit developers
options:
  command:
    description: What to run.
    type: str
    required: true
    choices: [check, verify]
  profiles:
    description: Profile ids (C(nixos-stig), C(al2023-stig), C(cis), C(tenable), C(all)).
    type: list
    elements: str
    default: [nixos-stig]
  executable:
    description:
      - Path of C(kmod-audit) on the target.
      - By default it is looked up on C(PATH), then in C(/opt/kmod-audit/bin) (where the
        P(kmodaudit.kmod_audit.prove#role) role installs it), C(/usr/local/bin) and
        C(/run/current-system/sw/bin) (NixOS).
    type: path
  sources:
    description:
      - For O(command=check), rules files, C(rules.d) directories or captured
        C(auditctl -l) output on the target to judge instead of discovering them.
    type: list
    elements: path
    default: []
  running:
    description: For O(command=check), judge the running rules (C(auditctl -l)).
    type: bool
    default: false
  no_load:
    description:
      - For O(command=verify), never load a module (C(--no-load)). Only the failing
        attempts, the executions of kmod and the negative controls are made.
      - In check mode C(verify) always runs with C(--no-load), so that nothing changes.
    type: bool
    default: false
  target:
    description:
      - For O(command=verify), the C(--target) to exercise, as seen from the Ansible
        target (C(local), C(ssh://USER@HOST[:PORT]) or C(console:COMMAND)).
    type: str
    default: local
  probe_module:
    description: For O(command=verify), the probe module (C(--module)).
    type: str
  timeout:
    description: For O(command=verify), seconds for the whole run (C(--timeout)).
    type: float
  arch:
    description: For O(command=check), the machine whose kernel loads the rules.
    type: str
    choices: [x86_64, aarch64]
  uid_min:
    description: The first uid of real users (default C(UID_MIN) of C(/etc/login.defs)).
    type: int
  key:
    description: The key the records must carry (default any non-empty key).
    type: str
    no_log: false
  kmod_path:
    description: The real path of the kmod binary.
    type: path
  strict:
    description: Also demand the literal C(auid>=N) and C(auid!=unset) filters.
    type: bool
    default: false
  cklb:
    description:
      - Also return the STIG Viewer 3 checklist of the same run as RV(cklb). kmod-audit
        runs once and writes the JSON report and the checklist from the one verdict
        (C(--cklb-output)), so the checklist never disagrees with RV(compliant), and
        C(verify) exercises the kernel once. The checklist goes through a temporary file
        in the module's temporary directory on the target, removed when the task ends.
      - Checklists exist only for the DISA STIG profiles (C(nixos-stig), C(al2023-stig)).
        Asking for one with no STIG profile selected fails the task.
    type: bool
    default: false
  fail_on:
    description:
      - When the task fails besides on a usage error. C(never) (the default) returns the
        verdict; C(noncompliant) fails on exit 1; C(unproven) fails on exit 1 or 3.
    type: str
    choices: [never, noncompliant, unproven]
    default: never
attributes:
  check_mode:
    support: full
    details:
      - C(check) only reads. C(verify) runs with C(--no-load).
  diff_mode:
    support: none
notes:
  - The task never reports C(changed); C(verify) leaves every module as it found it and
    never changes the audit rules or configuration.
"""

EXAMPLES = r"""
- name: Judge the running and on-disk rules
  kmodaudit.kmod_audit.kmod_audit:
    command: check
    profiles: [nixos-stig, cis]
  register: kmod_audit_check

- name: Exercise the kernel without loading a module
  kmodaudit.kmod_audit.kmod_audit:
    command: verify
    no_load: true
    cklb: true
  register: kmod_audit_verify

- name: Keep the checklist on the controller
  ansible.builtin.copy:
    content: "{{ kmod_audit_verify.cklb }}"
    dest: "reports/{{ inventory_hostname }}.cklb"
    mode: "0644"
  delegate_to: localhost

- name: Fail the host unless both say compliant
  ansible.builtin.assert:
    that:
      - kmod_audit_check.compliant
      - kmod_audit_verify.compliant
"""

RETURN = r"""
compliant:
  description: Whether kmod-audit said compliant (exit 0). False on exit 1 and 3.
  returned: always
  type: bool
undecided:
  description:
    - Whether kmod-audit could not decide (exit 3). For C(check) an undecided
      requirement; for C(verify) an unreachable target or incomplete evidence.
  returned: always
  type: bool
verdict:
  description: C(compliant), C(not-compliant) or C(undecided).
  returned: always
  type: str
  sample: not-compliant
exit_code:
  description: kmod-audit's exit code (0, 1, 2 or 3).
  returned: always
  type: int
report:
  description:
    - >-
      The C(--format json) report, as kmod-audit printed it (its JSON Schema ships in
      the package as C(kmod_audit/schema/report.schema.json)). On exit 2 and 3 without a
      verdict, the C({"error": {"exit": N, "message": ...}}) object.
  returned: when kmod-audit printed JSON
  type: dict
message:
  description: kmod-audit's error message, when it printed one.
  returned: when kmod-audit reported an error
  type: str
cmd:
  description: The command line that was run.
  returned: always
  type: list
  elements: str
stderr:
  description: kmod-audit's standard error (its log).
  returned: always
  type: str
cklb:
  description: The checklist (STIG Viewer 3 JSON), exactly as kmod-audit wrote it.
  returned: when O(cklb=true) and kmod-audit reached a verdict (exit 0, 1 or 3 with a report)
  type: str
cklb_exit:
  description:
    - The exit code of the run that wrote the checklist. It is the one run of the task, so
      it always equals RV(exit_code); kept for playbooks that read it.
  returned: when O(cklb=true)
  type: int
"""

import json
import os
from typing import Any

from ansible.module_utils.basic import AnsibleModule

#: Where the prove role installs kmod-audit, then the usual places (NixOS last).
SEARCH_DIRS = ["/opt/kmod-audit/bin", "/usr/local/bin", "/run/current-system/sw/bin"]
VERDICTS = {0: "compliant", 1: "not-compliant", 3: "undecided"}
# kmod-audit's messages in English, and the standard streams decoded as UTF-8.
_ENVIRON = {"LC_ALL": "C.UTF-8"}


def _argv(module: AnsibleModule, executable: str, cklb_path: str | None) -> list[str]:
    params = module.params
    command = params["command"]
    argv = [executable, command]
    for profile in params["profiles"]:
        argv += ["--profile", profile]
    if params["uid_min"] is not None:
        argv += ["--uid-min", str(params["uid_min"])]
    if params["key"] is not None:
        argv += ["--key", params["key"]]
    if params["kmod_path"] is not None:
        argv += ["--kmod-path", params["kmod_path"]]
    if params["strict"]:
        argv.append("--strict")
    if command == "check":
        if params["running"]:
            argv.append("--running")
        if params["arch"] is not None:
            argv += ["--arch", params["arch"]]
    else:
        argv += ["--target", params["target"]]
        if params["no_load"] or module.check_mode:
            argv.append("--no-load")
        if params["probe_module"] is not None:
            argv += ["--module", params["probe_module"]]
        if params["timeout"] is not None:
            argv += ["--timeout", f"{params['timeout']:g}"]
    argv += ["--format", "json"]
    if cklb_path is not None:
        # The same run writes the checklist: one verdict for the report and the checklist.
        argv += ["--cklb-output", cklb_path]
    if command == "check" and params["sources"]:
        # After `--`: a source may start with `-` (and `-` alone is stdin, not wanted here).
        argv += ["--", *params["sources"]]
    return argv


def _refuse_options(module: AnsibleModule) -> None:
    params = module.params
    if params["command"] == "check":
        wrong = [name for name in ("no_load", "probe_module", "timeout") if params[name]]
        if params["target"] != "local":
            wrong.append("target")
    else:
        wrong = [name for name in ("sources", "running", "arch") if params[name]]
    if wrong:
        module.fail_json(
            msg=f"option(s) {', '.join(wrong)} do not apply to command={params['command']}; "
            "remove them"
        )


def _parse(stdout: str) -> dict[str, Any] | None:
    try:
        report = json.loads(stdout)
    except ValueError:
        return None
    return report if isinstance(report, dict) else None


def main() -> None:
    """Run the module."""
    module = AnsibleModule(
        argument_spec={
            "command": {"type": "str", "required": True, "choices": ["check", "verify"]},
            "profiles": {"type": "list", "elements": "str", "default": ["nixos-stig"]},
            "executable": {"type": "path"},
            "sources": {"type": "list", "elements": "path", "default": []},
            "running": {"type": "bool", "default": False},
            "no_load": {"type": "bool", "default": False},
            "target": {"type": "str", "default": "local"},
            "probe_module": {"type": "str"},
            "timeout": {"type": "float"},
            "arch": {"type": "str", "choices": ["x86_64", "aarch64"]},
            "uid_min": {"type": "int"},
            "key": {"type": "str", "no_log": False},
            "kmod_path": {"type": "path"},
            "strict": {"type": "bool", "default": False},
            "cklb": {"type": "bool", "default": False},
            "fail_on": {
                "type": "str",
                "default": "never",
                "choices": ["never", "noncompliant", "unproven"],
            },
        },
        supports_check_mode=True,
    )
    _refuse_options(module)
    params = module.params
    executable = params["executable"]
    if executable is None:
        executable = module.get_bin_path("kmod-audit", opt_dirs=SEARCH_DIRS)
    if executable is None:
        module.fail_json(
            msg="kmod-audit is not installed on this host (not on PATH, nor in "
            f"{', '.join(SEARCH_DIRS)}): install it with the role kmodaudit.kmod_audit.prove "
            "(or pip install kmod-audit into a virtualenv) and pass its path as `executable`",
            compliant=False,
            undecided=True,
            verdict="undecided",
        )
    elif not (os.path.isfile(executable) and os.access(executable, os.X_OK)):
        module.fail_json(
            msg=f"kmod-audit is not installed on this host: {executable} (the option "
            "`executable`) is no executable file; install it with the role "
            "kmodaudit.kmod_audit.prove or fix the path",
            compliant=False,
            undecided=True,
            verdict="undecided",
        )
    cklb_path = os.path.join(module.tmpdir, "kmod-audit.cklb") if params["cklb"] else None
    argv = _argv(module, executable, cklb_path)
    rc, stdout, stderr = module.run_command(argv, check_rc=False, environ_update=_ENVIRON)
    report = _parse(stdout)
    error = report.get("error") if report is not None else None
    message = error.get("message") if isinstance(error, dict) else None
    result: dict[str, Any] = {
        "changed": False,
        "cmd": argv,
        "exit_code": rc,
        "stderr": stderr,
        "compliant": rc == 0,
        "undecided": rc == 3,
        "verdict": VERDICTS.get(rc, "error"),
    }
    if report is not None:
        result["report"] = report
    if message is not None:
        result["message"] = message
    if rc not in VERDICTS:
        what = message or (stderr.strip() or stdout.strip())[-2000:] or "no output"
        module.fail_json(msg=f"kmod-audit {params['command']} failed (exit {rc}): {what}", **result)
    if report is None:
        module.fail_json(
            msg=f"kmod-audit {params['command']} exited {rc} without a JSON report on stdout "
            f"(is {executable} kmod-audit?); stdout began: {stdout[:200]!r}",
            **result,
        )
    if cklb_path is not None:
        result["cklb_exit"] = rc
        if os.path.exists(cklb_path):
            with open(cklb_path, encoding="utf-8", errors="replace") as handle:
                result["cklb"] = handle.read()
        elif error is None:
            # A verdict without its checklist: not the kmod-audit this module was written for.
            module.fail_json(
                msg=f"kmod-audit {params['command']} exited {rc} with a report but wrote no "
                f"checklist to {cklb_path} (is {executable} a kmod-audit that has "
                "--cklb-output?)",
                **result,
            )
    fail_on = params["fail_on"]
    if (fail_on == "noncompliant" and rc == 1) or (fail_on == "unproven" and rc != 0):
        module.fail_json(
            msg=f"kmod-audit {params['command']}: {result['verdict']} (exit {rc})"
            + (f": {message}" if message else ""),
            **result,
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
