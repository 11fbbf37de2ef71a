# Negative scenario: another part of the configuration puts `-a never,exit -F arch=b32 -S
# finit_module` in front of the module's rules. The rules still grep fine, but the kernel
# stops at the first match, so 32-bit finit_module calls are never recorded. Both
# `kmod-audit check --running` and `kmod-audit verify` must detect the fault and say so.
{ lib, ... }:
{
  name = "broken-rules";

  nodes.machine = {
    security.kernelModuleAudit.enable = true;

    # The module adds its lines with lib.mkBefore (order 500) so that ordinary rules
    # (order 1000) come after them. Order 400 sorts before even those.
    security.audit.rules = lib.mkOrder 400 [ "-a never,exit -F arch=b32 -S finit_module" ];
  };

  testScript =
    { nodes, ... }:
    let
      cfg = nodes.machine.security.kernelModuleAudit;
      auditRules = nodes.machine.security.audit.rules;
    in
    ''
      import json
      import shlex

      from kmod_audit import (
          MACHINES,
          DriverMachine,
          VerifyOptions,
          load,
          parse_rules,
          render_verify_text,
          run_verify,
          select_profiles,
      )

      # Read from the evaluated node configuration, never retyped here.
      AUDIT_RULES: list[str] = ${builtins.toJSON auditRules}
      RENDERED_RULES: list[str] = ${builtins.toJSON cfg.renderedRules}
      PROFILES: list[str] = ${builtins.toJSON cfg.profiles}
      KEY: str = ${builtins.toJSON cfg.key}
      UID_MIN: int = ${toString cfg.uidMin}
      NEVER_RULE = AUDIT_RULES[0]
      FAULT = "b32 finit_module"

      machine.wait_for_unit("audit-rules-nixos.service")
      machine.wait_for_unit("auditd.service")

      arch = MACHINES[machine.succeed("uname -m").strip()]

      with subtest("The never rule is loaded in front of the module's rules"):
          t.assertEqual(RENDERED_RULES, AUDIT_RULES[1:])
          t.assertTrue(NEVER_RULE.startswith("-a never,exit"), NEVER_RULE)
          expected = load(
              parse_rules(
                  "".join(line + "\n" for line in AUDIT_RULES),
                  path="security.audit.rules",
                  machine=arch,
                  syntax="rules",
                  live=False,
              ),
              live=False,
          )
          running = load(
              parse_rules(
                  machine.succeed("auditctl -l"),
                  path="auditctl -l",
                  machine=arch,
                  syntax="listing",
                  live=False,
              ),
              live=False,
          )
          t.assertEqual(
              [rule.signature() for rule in expected.rules],
              [rule.signature() for rule in running.rules],
          )

      with subtest("kmod-audit check exits 1 and names the never rule and b32 finit_module"):
          argv = ["kmod-audit", "check", "--running", "--key", KEY, "--uid-min", str(UID_MIN)]
          for profile in PROFILES:
              argv += ["--profile", profile]
          status, text = machine.execute(shlex.join(argv))
          t.assertEqual(1, status, text)
          t.assertIn(FAULT, text)
          t.assertIn(NEVER_RULE, text)
          t.assertIn("(action never)", text)

          status, output = machine.execute(shlex.join([*argv, "--format", "json"]))
          t.assertEqual(1, status, output)
          check_report = json.loads(output)
          t.assertFalse(check_report["compliant"])
          failed = [
              check
              for profile in check_report["profiles"]
              for requirement in profile["requirements"]
              for check in requirement["checks"]
              if check["status"] == "fail"
          ]
          t.assertEqual([FAULT], [check["target"] for check in failed])
          t.assertIn(NEVER_RULE, failed[0]["reason"])

      with subtest("kmod-audit verify reports b32 finit_module as not recorded"):
          verify_report = run_verify(
              DriverMachine(machine),
              VerifyOptions(
                  profiles=select_profiles(PROFILES),
                  key=KEY,
                  uid_min=UID_MIN,
                  probe_command=("kmod-audit",),
              ),
              local=False,
          )
          summary = render_verify_text(verify_report)
          print(summary)
          t.assertFalse(verify_report.compliant, summary)
          t.assertEqual(1, verify_report.exit_code(), summary)
          t.assertEqual((), verify_report.problems, summary)
          failing = [
              check
              for profile in verify_report.profiles
              for requirement in profile.requirements
              for check in requirement.checks
              if check.status == "fail"
          ]
          t.assertEqual([FAULT], [check.target for check in failing], summary)
          t.assertIn("no SYSCALL record", failing[0].reason)
    '';
}
