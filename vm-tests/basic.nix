# Proves the default configuration (profile nixos-stig, key module_chng) end to end: the
# kernel holds exactly the rendered rules, `kmod-audit check --running` judges them
# compliant, and `kmod-audit verify` (driven from this script through the Python API)
# finds the keyed records of every module syscall, including a real load and unload of
# the dummy module by a user with a login uid. Should pass.
{
  name = "basic";

  nodes.machine = {
    security.kernelModuleAudit.enable = true;
  };

  testScript =
    { nodes, ... }:
    let
      cfg = nodes.machine.security.kernelModuleAudit;
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
      PROFILES: list[str] = ${builtins.toJSON cfg.profiles}
      KEY: str = ${builtins.toJSON cfg.key}
      UID_MIN: int = ${toString cfg.uidMin}

      machine.wait_for_unit("audit-rules-nixos.service")
      machine.wait_for_unit("auditd.service")

      arch = MACHINES[machine.succeed("uname -m").strip()]

      with subtest("The kernel holds exactly the rules the module rendered, in that order"):
          # Parsed on this (driver) side, so live=False: the files named are the VM's.
          rendered = load(
              parse_rules(
                  "".join(line + "\n" for line in RENDERED_RULES),
                  path="security.kernelModuleAudit.renderedRules",
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
          t.assertEqual((), rendered.issues)
          t.assertEqual(len(RENDERED_RULES), len(rendered.rules))
          t.assertEqual(
              [rule.signature() for rule in rendered.rules],
              [rule.signature() for rule in running.rules],
          )
          t.assertIn("enabled 1", machine.succeed("auditctl -s"))

      with subtest("kmod-audit check judges the running rules compliant"):
          argv = ["kmod-audit", "check", "--running", "--format", "json", "--key", KEY]
          argv += ["--uid-min", str(UID_MIN)]
          for profile in PROFILES:
              argv += ["--profile", profile]
          status, output = machine.execute(shlex.join(argv))
          t.assertEqual(0, status, output)
          check_report = json.loads(output)
          t.assertTrue(check_report["compliant"])
          t.assertEqual(
              [(profile, True) for profile in PROFILES],
              [(p["id"], p["compliant"]) for p in check_report["profiles"]],
          )

      with subtest("kmod-audit verify finds keyed records of a real load and unload of dummy"):
          # Commands from the driver run with the login uid unset; the probe sets a login
          # uid in each child itself, as a login through PAM would.
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
          t.assertTrue(verify_report.compliant, summary)
          t.assertEqual(0, verify_report.exit_code())

          evidence = {item.stimulus.id: item for item in verify_report.evidence}
          native = arch.native
          for action, syscall in (("load", "finit_module"), ("unload", "delete_module")):
              stimulus_id = f"{native.bits}-{action}-dummy-root"
              t.assertIn(stimulus_id, evidence, "\n".join(verify_report.notes))
              item = evidence[stimulus_id]
              t.assertEqual("recorded", item.verdict, item.describe())
              t.assertEqual(syscall, item.stimulus.syscall)
              # A load is finit_module, or init_module when kmod has to decompress the
              # module itself; the probe lists both numbers for it.
              t.assertIn(item.number, item.stimulus.numbers)
              t.assertEqual("yes", item.success, item.describe())
              t.assertGreaterEqual(item.stimulus.auid, UID_MIN)
              t.assertEqual(str(item.stimulus.auid), item.auid)
              t.assertIn(KEY, item.key)
              t.assertEqual("dummy", item.module)
          unload = evidence[f"{native.bits}-unload-dummy-root"]
          t.assertEqual(native.number("delete_module"), unload.number)

          controls = [item for item in verify_report.evidence if item.stimulus.control]
          t.assertNotEqual([], controls)
          t.assertEqual([], [item.describe() for item in controls if item.verdict == "recorded"])

      with subtest("The probe leaves the dummy module as it found it"):
          machine.fail("grep -q '^dummy ' /proc/modules")
    '';
}
