# Proves the rules record what an administrator really does: alice logs in to the server
# over ssh from a second machine (PAM sets her login uid) and runs `sudo modprobe dummy`
# and `sudo modprobe -r dummy`. The server's audit.log must then hold keyed SYSCALL
# records of the load and the unload with auid = alice's uid, although uid = 0. Should pass.
{ pkgs, ... }:
let
  # The snakeoil key pair that nixpkgs' own openssh tests use (nixos/tests/ssh-keys.nix).
  inherit (import (pkgs.path + "/nixos/tests/ssh-keys.nix") pkgs)
    snakeOilPrivateKey
    snakeOilPublicKey
    ;
in
{
  name = "ssh-login";

  nodes = {
    server = {
      security.kernelModuleAudit.enable = true;

      services.openssh.enable = true;

      users.users.alice = {
        isNormalUser = true;
        # Pinned so that the expectation below is this value, read back from the config.
        uid = 1000;
        openssh.authorizedKeys.keys = [ snakeOilPublicKey ];
      };

      # Only modprobe, without a password: the test must not depend on wheel or a TTY.
      security.sudo.extraRules = [
        {
          users = [ "alice" ];
          commands = [
            {
              command = "/run/current-system/sw/bin/modprobe";
              options = [ "NOPASSWD" ];
            }
          ];
        }
      ];
    };

    client = { };
  };

  testScript =
    { nodes, ... }:
    let
      cfg = nodes.server.security.kernelModuleAudit;
      alice = nodes.server.users.users.alice;
    in
    ''
      import shlex

      from kmod_audit import MACHINES, AuditEvent, AuditRecord, group_events, parse_records

      KEY: str = ${builtins.toJSON cfg.key}
      ALICE: str = ${builtins.toJSON alice.name}
      ALICE_UID: int = ${toString alice.uid}
      UID_MIN: int = ${toString cfg.uidMin}
      MARKER = "kmod-audit-vm-test-ssh-login-done"

      start_all()
      server.wait_for_unit("audit-rules-nixos.service")
      server.wait_for_unit("auditd.service")
      server.wait_for_unit("sshd.service")
      client.wait_for_unit("network.target")

      arch = MACHINES[server.succeed("uname -m").strip()]
      t.assertGreaterEqual(ALICE_UID, UID_MIN, "alice must count as a real user")


      def over_ssh(*command: str) -> str:
          """Run `command` on the server as alice, through a real ssh login."""
          ssh = [
              "ssh",
              "-o", "StrictHostKeyChecking=no",
              "-o", "UserKnownHostsFile=/dev/null",
              "-o", "BatchMode=yes",
              "-i", "/root/.ssh/id_snakeoil",
              f"{ALICE}@server",
              shlex.join(command),
          ]
          return client.succeed(shlex.join(ssh), timeout=60)


      with subtest("alice loads and unloads dummy with sudo over ssh"):
          client.succeed("install -D -m 600 ${snakeOilPrivateKey} /root/.ssh/id_snakeoil")
          t.assertEqual(str(ALICE_UID), over_ssh("cat", "/proc/self/loginuid").strip())
          over_ssh("/run/wrappers/bin/sudo", "/run/current-system/sw/bin/modprobe", "dummy")
          server.succeed("grep -q '^dummy ' /proc/modules")
          over_ssh("/run/wrappers/bin/sudo", "/run/current-system/sw/bin/modprobe", "-r", "dummy")
          server.fail("grep -q '^dummy ' /proc/modules")

      with subtest("audit.log holds keyed SYSCALL records of both, with alice's login uid"):
          # auditd writes in order: once this marker is in the log, so is everything before.
          server.succeed(f"auditctl -m {MARKER}")
          server.wait_until_succeeds(f"grep -q {MARKER} /var/log/audit/audit.log", timeout=60)
          events = group_events(parse_records(server.succeed("cat /var/log/audit/audit.log")))


          def keyed(syscalls: tuple[str, ...]) -> list[tuple[AuditEvent, AuditRecord]]:
              """The events of alice's modprobe with a keyed, successful SYSCALL record."""
              numbers = {arch.native.number(name) for name in syscalls}
              return [
                  (event, record)
                  for event in events
                  if (record := event.syscall) is not None
                  and KEY in record.keys
                  and record.number("syscall") in numbers
                  and record.get("success") == "yes"
                  and record.get("comm") == "modprobe"
              ]


          # A load is finit_module, or init_module when kmod decompresses the module itself.
          for what, syscalls in (
              ("load", ("finit_module", "init_module")),
              ("unload", ("delete_module",)),
          ):
              found = keyed(syscalls)
              t.assertEqual(1, len(found), f"keyed {what} records: {[r.raw for _, r in found]}")
              ((event, record),) = found
              t.assertEqual(str(ALICE_UID), record.get("auid"), record.raw)
              t.assertEqual("0", record.get("uid"), record.raw)
              modules = [kern.get("name") for kern in event.records_of("KERN_MODULE")]
              t.assertEqual(["dummy"], modules, f"KERN_MODULE records of the {what} event")
    '';
}
