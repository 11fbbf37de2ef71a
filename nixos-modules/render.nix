# Pure rule rendering for security.kernelModuleAudit: builtins only (no nixpkgs, no lib), so
# it can be evaluated anywhere with `nix-instantiate --eval --strict` and compared byte for
# byte with `kmod-audit generate` (tests/test_nix.py does, for every profile x arch x option).
#
# The data (which syscalls each profile needs, their numbers per ABI) comes from
# ./profiles.json, generated from the Python package: one source of truth.
#
# Canonical line format (see verifier/kmod_audit/generate.py):
#   -a always,exit -F arch=<b64|b32> -S <syscalls in number order> -F auid>=<uidMin> -F auid!=unset -k <key>
#   -a always,exit -F path=<kmodPath> -F perm=x -F auid>=<uidMin> -F auid!=unset -k <key>
#   -a always,exit -F arch=b32 -S execveat -F path=<kmodPath> -F auid>=<uidMin> -F auid!=unset -k <key>
#   -a always,exit -F arch=<b64|b32> -S execve,execveat -F exit=-<errno> -F auid>=<uidMin> -F auid!=unset -k <key>
# The third only where perm=x misses an exec syscall of an ABI (aarch64's b32 execveat). The
# last per ABI and per failure that ends an exec before the file is opened on Linux 5.9 to
# 6.7 (EFAULT, E2BIG): such an exec names no file, and path= misses it.
let
  data = builtins.fromJSON (builtins.readFile ./profiles.json);

  unique = builtins.foldl' (seen: x: if builtins.elem x seen then seen else seen ++ [ x ]) [ ];

  render =
    {
      # Profile ids (nixos-stig, al2023-stig, cis, tenable) or "all".
      profiles ? [ "nixos-stig" ],
      # The machine whose kernel loads the rules: "x86_64" or "aarch64".
      arch ? "x86_64",
      # Which of its ABIs get a rule (b64 native, b32 compat).
      abis ? [
        "b64"
        "b32"
      ],
      key ? "module_chng",
      uidMin ? 1000,
      # The real path of the kmod binary (never a symlink: a watch on a link never fires).
      kmodPath ? "/usr/bin/kmod",
      # Whether to add the kmod execution rule: null follows the profiles (only those that
      # ask for kmod executions get it), true/false force it on or off.
      watchKmod ? null,
    }:
    let
      machine = data.machines.${arch};
      selected =
        if builtins.elem "all" profiles then builtins.attrNames data.profiles else unique profiles;
      requirements = builtins.concatLists (map (p: data.profiles.${p}.requirements) selected);
      filters = "-F auid>=${toString uidMin} -F auid!=unset -k ${key}";

      # One rule per ABI, b64 first, with every required syscall that exists there.
      abiLine =
        bits:
        let
          table = machine.${bits}.syscalls;
          wanted = unique (
            builtins.concatLists (map (r: if builtins.elem bits r.abis then r.syscalls else [ ]) requirements)
          );
          present = builtins.filter (s: builtins.hasAttr s table) wanted;
          byNumber = builtins.sort (a: b: table.${a} < table.${b}) present;
        in
        if byNumber == [ ] then
          [ ]
        else
          [ "-a always,exit -F arch=${bits} -S ${builtins.concatStringsSep "," byNumber} ${filters}" ];

      wantsKmod = builtins.any (r: r.tools != [ ]) requirements;
      withKmod = if watchKmod == null then wantsKmod else watchKmod;
      kmodLine = if withKmod then [ "-a always,exit -F path=${kmodPath} -F perm=x ${filters}" ] else [ ];
      # Exec syscalls an ABI's audit classes do not call an exec: perm=x misses them.
      missLine =
        bits:
        let
          misses = machine.${bits}.execMisses;
        in
        if withKmod && misses != [ ] then
          [
            "-a always,exit -F arch=${bits} -S ${builtins.concatStringsSep "," misses} -F path=${kmodPath} ${filters}"
          ]
        else
          [ ];
      # Failed execs that end before the file is opened name no file: an exit= rule each.
      beforeOpenLines =
        bits:
        if withKmod then
          map (
            code:
            "-a always,exit -F arch=${bits} -S ${
              builtins.concatStringsSep "," machine.${bits}.execs
            } -F exit=-${toString code} ${filters}"
          ) data.execErrnosBeforeOpen
        else
          [ ];
      selectedAbis = builtins.filter (b: builtins.elem b abis) [
        "b64"
        "b32"
      ];

      lines =
        builtins.concatLists (map abiLine selectedAbis)
        ++ kmodLine
        ++ builtins.concatLists (map missLine selectedAbis)
        ++ builtins.concatLists (map beforeOpenLines selectedAbis);
    in
    {
      inherit lines;
      text = builtins.concatStringsSep "" (map (line: line + "\n") lines);
    };
in
{
  inherit render;
  profileIds = builtins.attrNames data.profiles;
  machines = builtins.attrNames data.machines;
  # Whether the profiles ask for syscalls of an ABI (for the module's b32 warning).
  wantsAbi =
    bits: profiles:
    builtins.any (r: builtins.elem bits r.abis && r.syscalls != [ ]) (
      builtins.concatLists (
        map (p: data.profiles.${p}.requirements) (
          if builtins.elem "all" profiles then builtins.attrNames data.profiles else profiles
        )
      )
    );
}
