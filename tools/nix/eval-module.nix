# Evaluate security.kernelModuleAudit with the real NixOS module system (lib.evalModules)
# but without nixpkgs: the few NixOS options the module touches are declared here as
# stand-ins, and `pkgs` holds only what the module reads. Needs a nixpkgs `lib`, e.g. a
# checkout of nix-community/nixpkgs.lib (not part of this repository):
#
#   nix-instantiate --eval --strict --json tools/nix/eval-module.nix \
#     --arg lib 'import /path/to/nixpkgs.lib/lib' --argstr system aarch64-linux \
#     --arg config '{ security.kernelModuleAudit = { enable = true; profiles = [ "cis" ]; }; }'
#
# Prints the rendered rules, security.audit.rules, assertions that fail, warnings, the
# systemd override and the option documentation types.
{
  lib,
  system ? "x86_64-linux",
  config ? {
    security.kernelModuleAudit.enable = true;
  },
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
        environment.systemPackages = lib.mkOption {
          type = lib.types.listOf lib.types.package;
          default = [ ];
        };
      };
    };
  evaluated = lib.evalModules {
    modules = [
      ../../nixos-modules
      nixosStandIns
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
  systemPackages = map (p: p.name) c.environment.systemPackages;
  optionTypes = lib.mapAttrs (_: o: o.type.description) (
    lib.filterAttrs (_: o: o ? type) evaluated.options.security.kernelModuleAudit
  );
}
