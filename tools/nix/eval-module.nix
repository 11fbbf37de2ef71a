# Evaluate security.kernelModuleAudit with the real NixOS module system (lib.evalModules)
# but without nixpkgs: the few NixOS options the module touches are declared here as
# stand-ins, and `pkgs` holds only what the module reads. Needs a nixpkgs `lib`, e.g. a
# checkout of nix-community/nixpkgs.lib (not part of this repository):
#
#   nix-instantiate --eval --strict --json tools/nix/eval-module.nix \
#     --arg lib 'import /path/to/nixpkgs.lib/lib' --argstr system aarch64-linux \
#     --arg config '{ security.kernelModuleAudit = { enable = true; profiles = [ "cis" ]; }; }'
#
# `--argstr rulesUnit audit` stands in for NixOS 25.05 and older, whose security.audit
# module loads the rules with audit.service instead of audit-rules-nixos.service.
#
# Prints the rendered rules, security.audit.rules, assertions that fail, warnings, the
# rules unit as configured, the activation scripts, the monitor's settings, unit, timer
# and tmpfiles rules, and the option documentation types.
{
  lib,
  system ? "x86_64-linux",
  config ? {
    security.kernelModuleAudit.enable = true;
  },
  # The unit nixpkgs' security.audit module defines (with an ExecStart) to load the rules.
  rulesUnit ? "audit-rules-nixos",
}:
let
  hostPlatform = lib.systems.elaborate system;
  fakePackage = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    meta = { };
  };
  pkgs = {
    stdenv = { inherit hostPlatform; };
    kmod = fakePackage "kmod-31";
    audit = fakePackage "audit-4.1.2";
    python3Packages.callPackage = _: _: fakePackage "kmod-audit-0.1.0";
  };
  # Stand-ins for the NixOS options the module sets (types as in nixpkgs).
  nixosStandIns =
    { lib, ... }:
    {
      options = {
        assertions = lib.mkOption {
          type = lib.types.listOf lib.types.unspecified;
          default = [ ];
        };
        warnings = lib.mkOption {
          type = lib.types.listOf lib.types.str;
          default = [ ];
        };
        security.audit.enable = lib.mkOption {
          type = lib.types.enum [
            false
            true
            "lock"
          ];
          default = false;
        };
        security.audit.rules = lib.mkOption {
          type = lib.types.listOf lib.types.str;
          default = [ ];
        };
        security.auditd.enable = lib.mkOption {
          type = lib.types.bool;
          default = false;
        };
        systemd.services = lib.mkOption {
          type = lib.types.attrsOf (lib.types.attrsOf lib.types.unspecified);
          default = { };
        };
        systemd.timers = lib.mkOption {
          type = lib.types.attrsOf (lib.types.attrsOf lib.types.unspecified);
          default = { };
        };
        systemd.tmpfiles.rules = lib.mkOption {
          type = lib.types.listOf lib.types.str;
          default = [ ];
        };
        # What nixpkgs' prometheus exporters module declares for node_exporter
        # (services/monitoring/prometheus/exporters.nix and exporters/node.nix).
        services.prometheus.exporters.node = {
          enable = lib.mkEnableOption "the prometheus node exporter";
          port = lib.mkOption {
            type = lib.types.port;
            default = 9100;
          };
          enabledCollectors = lib.mkOption {
            type = lib.types.listOf lib.types.str;
            default = [ ];
          };
          disabledCollectors = lib.mkOption {
            type = lib.types.listOf lib.types.str;
            default = [ ];
          };
          extraFlags = lib.mkOption {
            type = lib.types.listOf lib.types.str;
            default = [ ];
          };
        };
        environment.systemPackages = lib.mkOption {
          type = lib.types.listOf lib.types.package;
          default = [ ];
        };
        system.activationScripts = lib.mkOption {
          type = lib.types.attrsOf lib.types.unspecified;
          default = { };
        };
      };
    };
  # Stand-in for nixpkgs' security.audit module: the unit that loads the rules.
  nixpkgsAudit =
    { config, lib, ... }:
    {
      config.systemd.services.${rulesUnit} = lib.mkIf (config.security.audit.enable != false) {
        serviceConfig.ExecStart = "/nix/store/00000000000000000000000000000000-audit/bin/auditctl -R rules";
      };
    };
  evaluated = lib.evalModules {
    modules = [
      ../../nixos-modules
      nixosStandIns
      nixpkgsAudit
      config
    ];
    specialArgs = { inherit pkgs; };
  };
  c = evaluated.config;
in
{
  inherit system;
  renderedRules = c.security.kernelModuleAudit.renderedRules;
  auditRules = c.security.audit.rules;
  auditEnable = c.security.audit.enable;
  auditdEnable = c.security.auditd.enable;
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);
  warnings = c.warnings;
  auditRulesService = c.systemd.services.audit-rules-nixos or null;
  activationScripts = c.system.activationScripts;
  monitor = c.security.kernelModuleAudit.monitor;
  monitorService = c.systemd.services.kmod-audit-monitor or null;
  monitorTimer = c.systemd.timers.kmod-audit-monitor or null;
  tmpfilesRules = c.systemd.tmpfiles.rules;
  systemPackages = map (p: p.name) c.environment.systemPackages;
  optionTypes = lib.mapAttrs (_: o: o.type.description) (
    lib.filterAttrs (_: o: o ? type) evaluated.options.security.kernelModuleAudit
  );
  monitorOptionTypes = lib.mapAttrs (
    _: o: o.type.description
  ) evaluated.options.security.kernelModuleAudit.monitor;
}
