# The flake's checks for one system (flake.nix: `checks`): the package and its tests,
# render.nix against `kmod-audit generate`, formatting, the option docs, and on the test
# systems the verifier's lint and the NixOS VM tests.
{
  self,
  lib,
  evalModule,
  testSystems,
}:
pkgs:
let
  inherit (pkgs.stdenv.hostPlatform) system;
  inherit (self.packages.${system}) kmod-audit;
  types-pexpect = pkgs.python3Packages.callPackage ./types-pexpect.nix { };
  renderer = import ../nixos-modules/render.nix;

  # `kmod-audit generate` arguments for one set of renderer inputs.
  generateArgs =
    {
      profiles,
      arch,
      key,
      uidMin,
      kmodPath,
    }:
    map (profile: "--profile=${profile}") profiles
    ++ [
      "--arch=${arch}"
      "--key=${key}"
      "--uid-min=${toString uidMin}"
      "--kmod-path=${kmodPath}"
    ];

  # render.nix for every profile alone, `all` and a combination, on both machines,
  # once with the defaults and once with every other input changed.
  rendererInputs = lib.cartesianProduct {
    profiles = map lib.singleton (renderer.profileIds ++ [ "all" ]) ++ [
      [
        "nixos-stig"
        "cis"
      ]
    ];
    arch = renderer.machines;
    options = [
      {
        key = "module_chng";
        uidMin = 1000;
        kmodPath = "/usr/bin/kmod";
      }
      {
        key = "kernel_modules";
        uidMin = 500;
        kmodPath = "/run/kmod-audit-render-check/bin/kmod";
      }
    ];
  };

  rendererCase =
    {
      profiles,
      arch,
      options,
    }:
    let
      inputs = {
        inherit profiles arch;
      }
      // options;
    in
    {
      name = "render.nix:${lib.concatStringsSep "+" profiles}:${arch}:${options.key}";
      inherit (renderer.render inputs) text;
      args = generateArgs inputs;
    };

  # The module itself on this system: renderedRules as NixOS evaluates them.
  moduleCase =
    profiles:
    let
      evaluated = evalModule pkgs {
        security.kernelModuleAudit = {
          enable = true;
          inherit profiles;
        };
      };
      cfg = evaluated.config.security.kernelModuleAudit;
    in
    {
      name = "module:${lib.concatStringsSep "+" profiles}:${system}";
      text = lib.concatMapStrings (line: line + "\n") cfg.renderedRules;
      args = generateArgs {
        inherit profiles;
        inherit (cfg) key uidMin;
        arch = pkgs.stdenv.hostPlatform.uname.processor;
        kmodPath = "${cfg.kmodPackage}/bin/kmod";
      };
    };

  renderCases =
    map rendererCase rendererInputs
    ++ map (profile: moduleCase [ profile ]) (renderer.profileIds ++ [ "all" ]);

  checkRendering = case: ''
    check_rendering ${lib.escapeShellArg case.name} ${lib.escapeShellArg case.text} ${lib.escapeShellArgs case.args}
  '';
in
{
  # The package builds (and, on x86_64, passes its tests) on every system.
  inherit kmod-audit;

  # nixos-modules/render.nix gives byte for byte what `kmod-audit generate` prints.
  render = pkgs.runCommand "kmod-audit-render-check" { nativeBuildInputs = [ kmod-audit ]; } ''
    failed=0
    check_rendering() {
      local name=$1 expected=$2
      shift 2
      printf '%s' "$expected" > expected
      kmod-audit generate "$@" > generated
      if cmp -s expected generated; then
        echo "same: $name"
      else
        echo "DIFFERENT: $name: render.nix (-) and kmod-audit generate $* (+):"
        diff -u expected generated || true
        failed=1
      fi
    }
    ${lib.concatMapStrings checkRendering renderCases}
    if [ "$failed" != 0 ]; then
      exit 1
    fi
    touch "$out"
  '';

  # Every .nix file is formatted as `nix fmt` (nixfmt-tree) would leave it.
  treefmt =
    let
      nixFiles = lib.fileset.toSource {
        root = ../.;
        fileset = lib.fileset.fileFilter (file: file.hasExt "nix") ../.;
      };
    in
    pkgs.runCommand "kmod-audit-treefmt" { nativeBuildInputs = [ pkgs.nixfmt-tree ]; } ''
      export HOME="$TMPDIR"
      cp -r ${nixFiles} tree
      chmod -R u+w tree
      # The source is a store path, not a git checkout: walk the directory itself,
      # format it in place and fail on any difference.
      treefmt --no-cache --tree-root "$PWD/tree" --walk filesystem
      diff -ru ${nixFiles} tree
      touch "$out"
    '';

  # The module's options render as documentation (descriptions, defaultText, types).
  option-docs =
    (pkgs.nixosOptionsDoc {
      options = (evalModule pkgs { }).options.security.kernelModuleAudit;
      # Name the declaring files relative to the repository, not the store.
      transformOptions =
        option:
        option
        // {
          declarations = map (
            declaration: lib.removePrefix "${toString self}/" (toString declaration)
          ) option.declarations;
        };
    }).optionsCommonMark;
}
// lib.optionalAttrs (lib.elem system testSystems) (
  {
    # What tools/check runs, inside a build: the package's pytest check phase,
    # then ruff (lint and format), mypy --strict and codespell on the sources.
    # promtool (pkgs.prometheus) lets tests/test_monitoring.py check and unit-test
    # monitoring/kmod-audit.rules.yml here too.
    verifier = kmod-audit.overridePythonAttrs (old: {
      pname = "kmod-audit-verifier-check";
      nativeCheckInputs = old.nativeCheckInputs ++ [
        pkgs.prometheus
        pkgs.codespell
        pkgs.ruff
        pkgs.python3Packages.mypy
        types-pexpect
      ];
      postCheck = ''
        ruff check verifier tests tools
        ruff format --check verifier tests tools
        mypy
        codespell verifier tests/*.py tools README.md
      '';
    });
  }
  // lib.mapAttrs' (name: test: lib.nameValuePair "vm-${name}" test) (
    import ../vm-tests {
      inherit pkgs;
      module = self.nixosModules.default;
      verifier = kmod-audit;
    }
  )
)
