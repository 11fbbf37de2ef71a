# The harness every scenario in this directory runs in (like disko's makeDiskoTest): a
# function from a test module (`vm-tests/<scenario>.nix`) to a `pkgs.testers.runNixOSTest`
# derivation, with the kmod-audit module on every node, the `kmod-audit` command
# installed there, and the same package importable from the test script.
#
# Type checking (mypy) and linting (pyflakes) of the test scripts stay on: the verifier
# ships py.typed, so `from kmod_audit... import ...` is checked against its annotations.
{
  # The Nixpkgs to build the tests with (hostPkgs; the nodes use the same set).
  pkgs,
  # nixosModules.default of this flake.
  module,
  # The kmod-audit Python package, built with pkgs.python3Packages: the test driver
  # imports it with the same Python.
  verifier,
}:

test:
pkgs.testers.runNixOSTest {
  imports = [ test ];

  defaults = {
    imports = [ module ];
    security.kernelModuleAudit = {
      installVerifier = true;
      package = verifier;
    };
  };

  extraPythonPackages = _: [ verifier ];

  # A scenario boots one or two VMs and runs one probe (~300 module syscalls) per verify;
  # minutes with KVM. The bound only stops a hung VM from holding a builder for the
  # driver's default hour.
  globalTimeout = 20 * 60;
}
