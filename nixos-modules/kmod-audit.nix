# security.kernelModuleAudit: audit every attempt to load or unload a kernel module by a
# logged-in user, with a known key (NixOS STIG V-268096, AL2023 STIG V-274091..3, CIS,
# Tenable). The rule lines come from ./render.nix, the same canonical lines that
# `kmod-audit generate` prints; `kmod-audit check`/`verify` prove them.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.security.kernelModuleAudit;
  renderer = import ./render.nix;
  guards = import ./guards.nix;
  platform = pkgs.stdenv.hostPlatform;

  # The machine whose syscall tables apply. Only these two are modelled (DESIGN section 6).
  arch =
    if platform.isx86_64 then
      "x86_64"
    else if platform.isAarch64 then
      "aarch64"
    else
      null;

  profileIds = renderer.profileIds ++ [ "all" ];

  # Keys we render: printable, no space (auditctl splits on it), no quote or 0x01 (records
  # would hex-encode the key), at most 256 bytes (auditctl's limit). Kept identical to
  # KEY_PATTERN in verifier/kmod_audit/generate.py (tests/test_nix.py checks that).
  keyPattern = "[A-Za-z0-9_][A-Za-z0-9_.:@+=-]{0,255}";

  rendered = renderer.render {
    inherit (cfg)
      profiles
      key
      uidMin
      watchKmod
      ;
    arch = if arch == null then "x86_64" else arch;
    abis = cfg.architectures;
    kmodPath = "${cfg.kmodPackage}/bin/kmod";
  };

  auditEnabled = config.security.audit.enable;
  locked = auditEnabled == "lock";
in
{
  options.security.kernelModuleAudit = {
    enable = lib.mkEnableOption ''
      audit rules that record every attempt to load or unload a kernel module by a
      logged-in user with a known key, as the NixOS STIG (V-268096), the Amazon Linux 2023
      STIG, CIS and Tenable require. The rules are added to {option}`security.audit.rules`
      and loaded by `audit-rules-nixos.service`; prove them with `kmod-audit verify`
    '';

    profiles = lib.mkOption {
      type = lib.types.nonEmptyListOf (lib.types.enum profileIds);
      default = [ "nixos-stig" ];
      example = [
        "nixos-stig"
        "cis"
      ];
      description = ''
        The compliance profiles whose requirements the rules meet: `nixos-stig` (b64 and
        b32 init_module, finit_module, delete_module), `al2023-stig` (b64 init_module,
        finit_module, create_module and executions of kmod), `cis` (b64 init, finit,
        delete, create and query_module where they exist, and executions of kmod),
        `tenable` (b64 init_module, delete_module and executions of the module tools), or
        `all`. The rules are the union, one rule per ABI.
      '';
    };

    key = lib.mkOption {
      type = lib.types.strMatching keyPattern;
      default = "module_chng";
      example = "kernel_modules";
      description = ''
        The key every rule carries (`-k`), so that `ausearch -k KEY` finds the records. At
        most 256 characters from `[A-Za-z0-9_.:@+=-]`, not starting with one of `.:@+=-`;
        see {manpage}`auditctl(8)`.
      '';
    };

    uidMin = lib.mkOption {
      type = lib.types.ints.between 0 4294967294;
      default = 1000;
      example = 500;
      description = ''
        The first login uid of real users: the rules record events with
        `auid>=uidMin` and `auid!=unset`, as the STIG and CIS check texts ask. NixOS gives
        normal users uids from 1000.
      '';
    };

    architectures = lib.mkOption {
      type = lib.types.listOf (
        lib.types.enum [
          "b64"
          "b32"
        ]
      );
      default = [
        "b64"
        "b32"
      ];
      defaultText = lib.literalMD ''
        `[ "b64" "b32" ]`: the native ABI and the 32-bit compat ABI (i386 on x86_64, arm
        on aarch64)
      '';
      example = [ "b64" ];
      description = ''
        The syscall ABIs that get a rule. A rule without `-F arch` would not cover 32-bit
        calls, whose numbers differ; syscalls that do not exist on an ABI (create_module
        and query_module on aarch64) are left out, because one unknown name makes
        `auditctl -R` drop every later rule.
      '';
    };

    watchKmod = lib.mkOption {
      type = lib.types.nullOr lib.types.bool;
      default = null;
      example = true;
      description = ''
        Whether to record executions of the kmod binary (insmod, modprobe, rmmod...) with
        an execution rule on its real store path, {option}`kmodPackage`/bin/kmod (a watch
        on a symlink such as /run/current-system/sw/bin/modprobe never fires), and, per
        ABI, `-F exit=-14` and `-F exit=-7` rules for the failed executions that end
        before the file is opened on Linux 5.9 to 6.7 (a bad argv, a too long argument),
        which a path rule misses. `null` adds them when a selected profile asks for
        executions (al2023-stig, cis, tenable).
      '';
    };

    kmodPackage = lib.mkPackageOption pkgs "kmod" { };

    installVerifier = lib.mkOption {
      type = lib.types.bool;
      default = false;
      example = true;
      description = ''
        Whether to put the `kmod-audit` command on the system, to run
        `kmod-audit check` (judge the loaded rules) and `kmod-audit verify` (make module
        syscalls as a logged-in user and find the keyed records) on this machine.
      '';
    };

    package = lib.mkOption {
      type = lib.types.package;
      default = pkgs.python3Packages.callPackage ../nix/package.nix { };
      defaultText = lib.literalExpression "pkgs.python3Packages.callPackage ./nix/package.nix { }";
      description = "The kmod-audit package installed by {option}`installVerifier`.";
    };

    renderedRules = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      readOnly = true;
      default = rendered.lines;
      defaultText = lib.literalMD "the lines rendered from the options above";
      description = ''
        The rule lines this module adds to {option}`security.audit.rules`, byte for byte
        what `kmod-audit generate` prints for the same options. Read-only: the VM tests and
        the verifier compare the running rules with it.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = arch != null;
        message = ''
          security.kernelModuleAudit.enable: the syscall tables for ${platform.system} are not
          modelled; only x86_64-linux and aarch64-linux are supported. Disable the option on
          this machine.
        '';
      }
      {
        assertion = auditEnabled != false;
        message = ''
          security.kernelModuleAudit.enable is set but security.audit.enable is false, so
          no audit rules are loaded. Set security.audit.enable = true (or "lock").
        '';
      }
      {
        assertion = cfg.architectures != [ ];
        message = ''
          security.kernelModuleAudit.architectures is empty, so no syscall rule is
          rendered. Use [ "b64" "b32" ] (the default).
        '';
      }
    ]
    # Checked on nixpkgs' definition of the unit, never on our override below (which sets
    # no ExecStart), so an older nixpkgs cannot hide behind it.
    ++ lib.optional locked (guards.lockAssertion config.systemd.services);

    warnings =
      lib.optional (renderer.wantsAbi "b32" cfg.profiles && !(lib.elem "b32" cfg.architectures)) ''
        security.kernelModuleAudit.architectures lacks "b32", but a selected profile (e.g.
        nixos-stig) requires 32-bit module syscalls to be recorded; add "b32".
      ''
      ++ lib.optional locked guards.lockWarning;

    security.audit.enable = lib.mkDefault true;
    security.auditd.enable = lib.mkDefault true;

    # The kernel applies the first matching exit rule. Our lines go before every other
    # audit rule, so that a broader rule of the configuration (say an earlier
    # `-a never,exit -S all` or a key-less `-a always,exit -S all`) cannot take the module
    # syscalls first. Rules added with `-A` by hand still go in front; check with
    # `kmod-audit check --running`.
    security.audit.rules = lib.mkBefore rendered.lines;

    # With -e 2 the kernel refuses every rule change until reboot: restarting
    # audit-rules-nixos.service (its ExecStopPost runs `auditctl -e 0` and `-D`) would fail
    # and make `nixos-rebuild switch` report a failed unit. Leave it alone; the new rules
    # load at the next boot (see the warning above). The assertion above makes sure that
    # nixpkgs defines this unit.
    systemd.services.${guards.rulesUnit} = lib.mkIf locked {
      restartIfChanged = false;
    };

    # Switching out of lock mode: the kernel stays locked until reboot, so the unit's stop
    # and start commands fail. Say why during nixos-rebuild switch.
    system.activationScripts.kernelModuleAuditLocked = lib.mkIf (!locked) (
      guards.unlockCheck "${pkgs.audit}/bin/auditctl"
    );

    environment.systemPackages = lib.mkIf cfg.installVerifier [ cfg.package ];
  };
}
