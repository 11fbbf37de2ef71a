# The checks security.kernelModuleAudit makes on the NixOS configuration around it.
# Builtins only (no nixpkgs, no lib), like ./render.nix: tests/test_nix.py evaluates them
# with stand-in values for both nixpkgs layouts, without a nixpkgs checkout.
let
  # The unit of nixpkgs' security.audit module that loads security.audit.rules. nixpkgs
  # introduced it in NixOS 25.11 (PR #429553, August 2025); NixOS 25.05 and older load the
  # rules with `audit.service` instead.
  rulesUnit = "audit-rules-nixos";
in
{
  inherit rulesUnit;

  # In lock mode the module overrides the rules unit. Unless nixpkgs defines that unit
  # itself (with an ExecStart: our override sets none), the override would create a unit
  # that loads nothing. `services` is config.systemd.services.
  lockAssertion = services: {
    assertion = services ? ${rulesUnit} && (services.${rulesUnit}.serviceConfig or { }) ? ExecStart;
    message = ''
      security.kernelModuleAudit.enable with security.audit.enable = "lock" needs nixpkgs
      from NixOS 25.11 or newer: its security.audit module loads the rules with
      systemd.services.audit-rules-nixos, which this nixpkgs does not define (NixOS 25.05
      and older use audit.service). Update nixpkgs, or set security.audit.enable = true.
    '';
  };

  lockWarning = ''
    security.audit.enable = "lock": the audit rules are locked (-e 2) until reboot, so
    changes to security.kernelModuleAudit (or any audit rule) take effect only after a
    reboot; audit-rules-nixos.service is not restarted by nixos-rebuild switch. Leaving
    lock mode needs a reboot too: while the kernel is locked, the unit's stop commands
    (auditctl -e 0, auditctl -D) fail. Apply such a change with nixos-rebuild boot and
    reboot.
  '';

  # Activation snippet for a configuration that does not lock: warn when the running
  # kernel is still locked by an earlier "lock" generation (switching out of lock mode).
  # `auditctl` is the path of the auditctl binary.
  unlockCheck = auditctl: ''
    if ${auditctl} -s 2>/dev/null | grep -qx 'enabled 2'; then
      echo 'warning: security.kernelModuleAudit: the kernel audit rules are still locked' \
        '(auditctl -s: enabled 2) by a generation with security.audit.enable = "lock";' \
        'audit-rules-nixos.service cannot stop or load rules until a reboot. Reboot to' \
        'apply the audit rules of this configuration.' >&2
    fi
  '';
}
