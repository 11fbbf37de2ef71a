# Proves security.kernelModuleAudit.monitor with node_exporter's textfile collector: the
# run at boot (wanted by audit-rules-nixos) leaves kmod_audit_compliant{...} 1 at
# `curl localhost:9100/metrics`; after `auditctl -D` one run of kmod-audit-monitor.service
# fails, the unit is failed and the scrape shows 0 with drift; switching to a configuration
# with changed rules reloads them, which runs the monitor again: compliant. Detects the
# fault, then passes.
{
  name = "monitor";

  nodes.machine =
    { pkgs, ... }:
    {
      security.kernelModuleAudit = {
        enable = true;
        monitor = {
          enable = true;
          # The hardened unit must still let verify's probe make its syscalls.
          verify = true;
        };
      };

      services.prometheus.exporters.node = {
        enable = true;
        enabledCollectors = [ "textfile" ];
        extraFlags = [ "--collector.textfile.directory=/var/lib/prometheus-node-exporter-text-files" ];
      };

      environment.systemPackages = [ pkgs.curl ];

      # What an administrator changes later: only the key, so only the rules file (and the
      # monitor's --key) differ, and nixos-rebuild switch restarts audit-rules-nixos.
      specialisation.changed.configuration = {
        security.kernelModuleAudit.key = "kernel_modules";
      };
    };

  testScript =
    { nodes, ... }:
    let
      cfg = nodes.machine.security.kernelModuleAudit;
      node = nodes.machine.services.prometheus.exporters.node;
      unit = nodes.machine.systemd.services.kmod-audit-monitor;
      changed = nodes.machine.specialisation.changed.configuration.security.kernelModuleAudit;
    in
    ''
      import re
      import shlex

      # Read from the evaluated node configuration, never retyped here.
      PROFILES: list[str] = ${builtins.toJSON cfg.profiles}
      KEY: str = ${builtins.toJSON cfg.key}
      CHANGED_KEY: str = ${builtins.toJSON changed.key}
      TEXTFILE_DIR: str = ${builtins.toJSON cfg.monitor.textfileDirectory}
      NODE_FLAGS: list[str] = ${builtins.toJSON node.extraFlags}
      PORT: int = ${toString node.port}
      VERIFY: bool = ${if cfg.monitor.verify then "True" else "False"}
      CAPABILITIES: list[str] = ${builtins.toJSON unit.serviceConfig.CapabilityBoundingSet}
      UNIT = "kmod-audit-monitor.service"
      COMMANDS = ["check", "verify"] if VERIFY else ["check"]

      SAMPLE = re.compile(r"(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)")
      LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

      Sample = tuple[str, dict[str, str], float]


      def scrape() -> list[Sample]:
          """node_exporter's kmod_audit_* and node_textfile_* samples, as Prometheus reads them."""
          text = machine.succeed(f"curl --silent --show-error --fail 127.0.0.1:{PORT}/metrics")
          samples: list[Sample] = []
          for line in text.splitlines():
              if not line.startswith(("kmod_audit_", "node_textfile_scrape_error")):
                  continue
              print(line)
              match = SAMPLE.fullmatch(line)
              if match is None:
                  t.fail(f"not a sample line: {line!r}")
              labels = dict(LABEL.findall(match["labels"] or ""))
              samples.append((match["name"], labels, float(match["value"])))
          return samples


      def values(samples: list[Sample], name: str, command: str | None = None) -> list[float]:
          """The values of `name` (of `command`'s run, when the sample names a command)."""
          return [
              value
              for sample_name, labels, value in samples
              if sample_name == name and command in (None, labels.get("command", command))
          ]


      def unit_property(name: str) -> str:
          return machine.succeed(f"systemctl show --property={name} --value {UNIT}").strip()


      def wait_for_a_run_after(invocation: str) -> None:
          """Wait until a run of the monitor other than `invocation` (or "": none) has ended."""
          show = f"systemctl show --value {UNIT} --property"
          machine.wait_until_succeeds(
              f'id=$({show}=InvocationID) && [ -n "$id" ] && [ "$id" != {shlex.quote(invocation)} ]'
              f" && {show}=ActiveState | grep -qx -e inactive -e failed",
              timeout=600,
          )


      def assert_compliant(samples: list[Sample]) -> None:
          for command in COMMANDS:
              compliant = values(samples, "kmod_audit_compliant", command=command)
              t.assertNotEqual([], compliant, f"no kmod_audit_compliant{{command={command}}}")
              t.assertEqual([1.0] * len(compliant), compliant)
              t.assertEqual([0.0], values(samples, "kmod_audit_exit_code", command=command))
          t.assertEqual(
              set(PROFILES),
              {labels["profile"] for name, labels, _ in samples if name == "kmod_audit_compliant"},
          )
          t.assertEqual([0.0], values(samples, "kmod_audit_drift_rules", command="check"))
          loaded = values(samples, "kmod_audit_rules_loaded", command="check")
          t.assertNotEqual([], loaded)
          t.assertTrue(all(value > 0 for value in loaded), loaded)
          t.assertEqual([1.0], list(set(values(samples, "kmod_audit_audit_enabled"))))
          # node_exporter read every .prom file of the directory without an error.
          t.assertEqual([0.0], values(samples, "node_textfile_scrape_error"))


      machine.wait_for_unit("audit-rules-nixos.service")
      machine.wait_for_unit("auditd.service")
      machine.wait_for_unit("prometheus-node-exporter.service")
      machine.wait_for_open_port(PORT)

      with subtest("The monitor writes where node_exporter's textfile collector reads"):
          t.assertIn(f"--collector.textfile.directory={TEXTFILE_DIR}", NODE_FLAGS)
          wants = machine.succeed("systemctl show --property=Wants --value audit-rules-nixos.service")
          t.assertIn(UNIT, wants.split())
          persistent = "systemctl show --property=Persistent --value kmod-audit-monitor.timer"
          t.assertEqual("yes", machine.succeed(persistent).strip())
          machine.succeed("systemctl is-active --quiet kmod-audit-monitor.timer")
          # systemctl lists them in capability-number order.
          t.assertEqual(
              {name.lower() for name in CAPABILITIES}, set(unit_property("CapabilityBoundingSet").split())
          )
          t.assertEqual("strict", unit_property("ProtectSystem"))

      with subtest("The run at boot (wanted by audit-rules-nixos) judged the machine compliant"):
          wait_for_a_run_after("")
          t.assertEqual("success", unit_property("Result"))
          before = scrape()
          assert_compliant(before)
          t.assertEqual([], values(before, "kmod_audit_lock_expected"))

      with subtest("After auditctl -D one run fails the unit, and the scrape shows 0 with drift"):
          machine.succeed("auditctl -D")
          machine.fail(f"systemctl start {UNIT}")
          machine.succeed(f"systemctl is-failed --quiet {UNIT}")
          t.assertIn(UNIT, machine.succeed("systemctl list-units --state=failed --no-legend --plain"))
          t.assertEqual("1", unit_property("ExecMainStatus"))
          after = scrape()
          for command in COMMANDS:
              compliant = values(after, "kmod_audit_compliant", command=command)
              t.assertNotEqual([], compliant)
              t.assertEqual([0.0] * len(compliant), compliant)
          t.assertEqual([1.0], values(after, "kmod_audit_exit_code", command="check"))
          t.assertEqual([0.0], values(after, "kmod_audit_rules_loaded", command="check"))
          drift = values(after, "kmod_audit_drift_rules", command="check")
          t.assertEqual(1, len(drift), after)
          t.assertGreater(drift[0], 0)

      with subtest("Switching to changed rules reloads them, which runs the monitor: compliant"):
          t.assertNotEqual(KEY, CHANGED_KEY)
          failed_run = unit_property("InvocationID")
          # switch-to-configuration fails when it finds any failed unit at its end; the run
          # that this switch triggers decides anew.
          machine.succeed(f"systemctl reset-failed {UNIT}")
          machine.succeed(
              "/run/current-system/specialisation/changed/bin/switch-to-configuration test"
          )
          wait_for_a_run_after(failed_run)
          t.assertEqual("success", unit_property("Result"))
          machine.fail(f"systemctl is-failed --quiet {UNIT}")
          t.assertIn(f"-F key={CHANGED_KEY}", machine.succeed("auditctl -l"))
          assert_compliant(scrape())
    '';
}
