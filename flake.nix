{
  description = "kmod-audit: prove that kernel module loads and unloads leave keyed audit records";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;

      # The two machines whose syscall tables kmod-audit models (DESIGN.md section 6).
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];

      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # Where the pytest suite and the NixOS VM tests run. The VM tests need a builder with
      # KVM of the same system, and they exercise b32 (i386) syscalls through `int 0x80`,
      # which an aarch64 kernel cannot enter: there the nixos-stig verdicts would be "not
      # exercised" (exit 3) instead of a pass. The fixtures describe an x86_64 host too
      # (nix/package.nix).
      testSystems = [ "x86_64-linux" ];

      # The NixOS configuration of one machine with the module, evaluated for its options
      # and settings only (nothing is built from it).
      evalModule =
        pkgs: config:
        nixpkgs.lib.nixosSystem {
          modules = [
            self.nixosModules.default
            { nixpkgs.pkgs = pkgs; }
            config
          ];
        };
    in
    {
      nixosModules = {
        default = ./nixos-modules;
        kernelModuleAudit = ./nixos-modules;
      };

      packages = forAllSystems (
        pkgs:
        let
          kmod-audit = pkgs.python3Packages.callPackage ./nix/package.nix { };
        in
        {
          inherit kmod-audit;
          # The same build seen as an application (no python3.x- prefix in the name).
          default = pkgs.python3Packages.toPythonApplication kmod-audit;
        }
      );

      checks = forAllSystems (
        import ./nix/checks.nix {
          inherit
            self
            lib
            evalModule
            testSystems
            ;
        }
      );

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            (pkgs.python3.withPackages (ps: [
              ps.attrs
              ps.pexpect
              ps.hatchling
              ps.pytest
              ps.hypothesis
              ps.mypy
              (ps.callPackage ./nix/types-pexpect.nix { })
            ]))
            pkgs.ruff
            pkgs.codespell
            # The tests that drive the real audit subsystem (as root) and the ssh transport.
            pkgs.audit
            pkgs.kmod
            pkgs.openssh
            # Nix: the formatter and linters of STYLE.md item 8.
            pkgs.nixfmt-tree
            pkgs.deadnix
            pkgs.statix
          ];
          # Import the package from the work tree, as tools/setup's editable install does.
          shellHook = ''
            export PYTHONPATH="$PWD/verifier''${PYTHONPATH:+:$PYTHONPATH}"
          '';
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt-tree);
    };
}
