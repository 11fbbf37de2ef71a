# nixosModules.default: everything kmod-audit adds to NixOS.
{
  imports = [
    ./kmod-audit.nix
    ./monitor.nix
  ];
}
