# Proves lock mode works with the CIS profile (which adds an execution rule on the real
# kmod binary): `security.audit.enable = "lock"` loads the rules with `-e 2`, verify still
# finds keyed records, and switching to a configuration with another key fails no unit
# (nixos-rebuild switch must not break) while the kernel keeps the old rules until reboot.
# Should pass.
{
  name = "lock-cis";

  nodes.machine = {
    security.audit.enable = "lock";
    security.kernelModuleAudit = {
      enable = true;
      profiles = [ "cis" ];
    };

    # What an administrator changes later: only the key, so only the rules file differs.
    specialisation.changed.configuration = {
      security.kernelModuleAudit.key = "kernel_modules";
    };
  };

  testScript =
    { nodes, ... }:
    let
      cfg = nodes.machine.security.kernelModuleAudit;
      changed = nodes.machine.specialisation.changed.configuration.security.kernelModuleAudit;
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
      RENDERED_RULES: list[str] = ${builtins.toJSON cfg.renderedRules}
      CHANGED_RULES: list[str] = ${builtins.toJSON changed.renderedRules}
      PROFILES: list[str] = ${builtins.toJSON cfg.profiles}
      KEY: str = ${builtins.toJSON cfg.key}
      CHANGED_KEY: str = ${builtins.toJSON changed.key}
      UID_MIN: int = ${toString cfg.uidMin}
      KMOD: str = ${builtins.toJSON "${cfg.kmodPackage}/bin/kmod"}

      machine.wait_for_unit("audit-rules-nixos.service")
      machine.wait_for_unit("auditd.service")

      arch = MACHINES[machine.succeed("uname -m").strip()]


      def signatures_of_lines(lines: list[str]) -> list[tuple[object, ...]]:
          """The rules as the kernel keeps them, from rule lines (parsed here: live=False)."""
          text = "".join(line + "\n" for line in lines)
          ruleset = load(
              parse_rules(text, path="renderedRules", machine=arch, syntax="rules", live=False),
              live=False,
          )
          t.assertEqual((), ruleset.issues)
          return [rule.signature() for rule in ruleset.rules]


      def running_signatures() -> list[tuple[object, ...]]:
          """The rules the kernel holds now (`auditctl -l`)."""
          listing = machine.succeed("auditctl -l")
          ruleset = load(
              parse_rules(listing, path="auditctl -l", machine=arch, syntax="listing", live=False),
              live=False,
          )
          return [rule.signature() for rule in ruleset.rules]


      with subtest("The rules are loaded and locked: the kernel reports enabled 2"):
          t.assertIn("enabled 2", machine.succeed("auditctl -s"))
          t.assertEqual(signatures_of_lines(RENDERED_RULES), running_signatures())
          t.assertTrue(any(KMOD in line for line in RENDERED_RULES), "no kmod rule rendered")

      with subtest("kmod-audit check judges the locked CIS rules compliant"):
          argv = ["kmod-audit", "check", "--running", "--format", "json", "--key", KEY]
          argv += ["--uid-min", str(UID_MIN), "--kmod-path", KMOD]
          for profile in PROFILES:
              argv += ["--profile", profile]
          status, output = machine.execute(shlex.join(argv))
          t.assertEqual(0, status, output)
          t.assertTrue(json.loads(output)["compliant"])

      with subtest("kmod-audit verify still finds keyed records while the rules are locked"):
          verify_report = run_verify(
              DriverMachine(machine),
              VerifyOptions(
                  profiles=select_profiles(PROFILES),
                  key=KEY,
                  uid_min=UID_MIN,
                  probe_command=("kmod-audit",),
                  kmod_path=KMOD,
              ),
              local=False,
          )
          summary = render_verify_text(verify_report)
          print(summary)
          t.assertTrue(verify_report.compliant, summary)
          t.assertEqual(2, verify_report.probe.audit["enabled"])

      with subtest("Switching to a configuration with another key leaves no unit failed"):
          t.assertNotEqual(KEY, CHANGED_KEY)
          machine.succeed(
              "/run/current-system/specialisation/changed/bin/switch-to-configuration test"
          )
          machine.fail("systemctl is-failed --quiet audit-rules-nixos.service")
          t.assertEqual(
              "",
              machine.succeed("systemctl list-units --state=failed --no-legend --plain").strip(),
          )

      with subtest("The kernel keeps the old rules until the next boot"):
          t.assertIn("enabled 2", machine.succeed("auditctl -s"))
          t.assertEqual(signatures_of_lines(RENDERED_RULES), running_signatures())
          t.assertNotEqual(signatures_of_lines(CHANGED_RULES), running_signatures())
    '';
}
