# The kmod-audit library and CLI (verifier/kmod_audit, pyproject.toml at the root).
#
# Called from two places, so it takes only what a Python package set provides:
#   - nixos-modules/kmod-audit.nix: `pkgs.python3Packages.callPackage ../nix/package.nix { }`
#   - flake.nix: the same, plus `python3Packages.toPythonApplication` for `packages.default`
#
# The check phase runs the whole pytest suite, as tools/check does. In the build sandbox
# we are not root and there is no auditctl, sshd, kmod or QEMU, so the tests that need
# them skip themselves (tests/conftest.py: KMOD_AUDIT_REQUIRE_ROOT stays unset, and
# KMOD_AUDIT_NO_VM=1 opts out of the virtme-ng VM tests explicitly).
{
  lib,
  stdenv,
  buildPythonPackage,
  hatchling,
  attrs,
  pexpect,
  prometheus-client,
  pytestCheckHook,
  hypothesis,
}:

let
  # Only what the build and the tests read. Every listed path must exist, so a typo
  # fails evaluation instead of silently shrinking the source.
  sources = lib.fileset.unions [
    # hatchling reads both: the metadata, and README.md as the long description.
    ../pyproject.toml
    ../README.md
    ../verifier
    ../tests
    # pyproject.toml puts tools/ on the pytest pythonpath: tests/test_vm_*.py import
    # tools/vmrun.py when they are collected, and tests/test_nix.py runs
    # tools/gen_profiles_json.py. tools/ needs only the stdlib, attrs and pexpect, so
    # keeping it lets every test module be collected (the VM tests then skip
    # themselves) instead of deselecting whole modules and losing their pure tests.
    ../tools
    # tests/test_nix.py checks that profiles.json is fresh and that the module's key
    # pattern is the generator's. Its nix-instantiate tests skip without Nix; the
    # flake's `render` check compares render.nix with `kmod-audit generate` instead.
    ../nixos-modules
    # tests/test_monitoring.py reads the alerting rules when it is collected; it runs
    # promtool on them where promtool is there (the flake's `verifier` check adds it).
    ../monitoring
  ];

  # A flake copies only tracked files, but a plain `callPackage` on a checkout (the
  # NixOS module's default package) sees the work tree and what local runs left there.
  caches = lib.fileset.unions [
    (lib.fileset.fileFilter (file: file.hasExt "pyc") ../.)
    (lib.fileset.maybeMissing ../tests/.hypothesis)
  ];
in
buildPythonPackage {
  pname = "kmod-audit";
  version = "0.1.0";
  pyproject = true;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.difference sources caches;
  };

  build-system = [ hatchling ];

  dependencies = [
    attrs
    pexpect
    # `--metrics FILE` (imported only then).
    prometheus-client
  ];

  # The fixtures and goldens describe an x86_64 host: a fixture without `--arch` is judged
  # for the machine the tests run on (DESIGN.md section 3), so on aarch64 several
  # verdicts would change. The package still builds there (and pythonImportsCheck runs).
  doCheck = stdenv.hostPlatform.isx86_64;

  nativeCheckInputs = [
    pytestCheckHook
    hypothesis
  ];

  preCheck = ''
    export KMOD_AUDIT_NO_VM=1
  '';

  # Tests that read this machine's files (/usr/bin/kmod and its /usr/sbin symlinks, which
  # the build sandbox does not have) skip themselves there; tests/_support.py
  # (host_kmod_layout, require_or_skip) makes them fail instead only under .ci/run as root.

  # A build must not depend on luck: hypothesis draws from a fixed seed here (its plugin
  # flag), so a failure reproduces with the same nixpkgs.
  pytestFlags = [ "--hypothesis-seed=0" ];

  # The import name differs from the distribution name (STYLE.md item 13).
  pythonImportsCheck = [ "kmod_audit" ];

  meta = {
    description = "Prove that Linux kernel module loads and unloads leave keyed audit records";
    longDescription = ''
      kmod-audit judges audit rules the way auditctl and the kernel apply them
      (`kmod-audit check`), prints the minimal rules for the NixOS and Amazon Linux 2023
      STIGs, CIS and Tenable (`kmod-audit generate`), and proves them on a running kernel
      by making every module syscall as a logged-in user (`kmod-audit verify`).
    '';
    license = lib.licenses.mit;
    mainProgram = "kmod-audit";
    platforms = lib.platforms.linux;
  };
}
