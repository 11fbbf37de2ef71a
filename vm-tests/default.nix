# Every other `vm-tests/<scenario>.nix` file, run through the harness in ./lib.nix:
# { <scenario> = <runNixOSTest derivation>; }, with the attribute name equal to the file
# stem (and to the test's `name`). flake.nix exposes them as checks `vm-<scenario>`.
{
  pkgs,
  module,
  verifier,
}:
let
  inherit (pkgs) lib;

  makeTest = import ./lib.nix { inherit pkgs module verifier; };

  isScenario =
    file: type:
    type == "regular"
    && lib.hasSuffix ".nix" file
    && !(lib.elem file [
      "default.nix"
      "lib.nix"
    ]);

  scenarios = lib.filterAttrs isScenario (builtins.readDir ./.);
in
lib.mapAttrs' (
  file: _: lib.nameValuePair (lib.removeSuffix ".nix" file) (makeTest (./. + "/${file}"))
) scenarios
