# What security.kernelModuleAudit.monitor puts on the machine: the node_exporter textfile
# directory it defaults to, the script and hardening of kmod-audit-monitor.service, its
# timer and its checks. Builtins only (no nixpkgs, no lib), like ./guards.nix:
# tests/test_nix.py evaluates and runs these with stand-in values, without a nixpkgs
# checkout; ./monitor.nix wires them into NixOS.
let
  guards = import ./guards.nix;

  textfileFlag = "--collector.textfile.directory";

  optional = condition: value: if condition then [ value ] else [ ];

  # POSIX shell quoting, as lib.escapeShellArg does.
  quote = text: "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] text + "'";

  hasPrefix = prefix: text: builtins.substring 0 (builtins.stringLength prefix) text == prefix;

  # Every value node_exporter would take for `--collector.textfile.directory` from these
  # flags, in order: `--flag=DIR`, `--flag DIR` in one list element (systemd splits
  # ExecStart on spaces) or the flag and DIR as two elements (kingpin reads both).
  flagValues =
    flags:
    let
      count = builtins.length flags;
      at = index: builtins.elemAt flags index;
      valueAt =
        index:
        let
          joined = builtins.match "${builtins.replaceStrings [ "." ] [ "\\." ] textfileFlag}[= ]+(.+)" (
            at index
          );
        in
        if joined != null then
          joined
        else if at index == textfileFlag && index + 1 < count then
          [ (at (index + 1)) ]
        else
          [ ];
    in
    builtins.concatLists (builtins.genList valueAt count);

  # node_exporter's textfile directory, from config.services.prometheus.exporters.node
  # (enable, enabledCollectors, disabledCollectors, extraFlags), or null: node_exporter
  # off, its textfile collector off, or no `--collector.textfile.directory` in extraFlags.
  # node_exporter enables the textfile collector by default, so `enabledCollectors` needs
  # to name it only when extraFlags has `--collector.disable-defaults`.
  textfileDirectory =
    node:
    let
      flags = node.extraFlags or [ ];
      values = flagValues flags;
      enabled =
        if builtins.elem "--collector.disable-defaults" flags then
          builtins.elem "textfile" (node.enabledCollectors or [ ])
        else
          !(builtins.elem "textfile" (node.disabledCollectors or [ ]))
          && !(builtins.elem "--no-collector.textfile" flags);
    in
    if (node.enable or false) && enabled && values != [ ] then
      # As kingpin does for a flag given twice: the last one wins.
      builtins.elemAt values (builtins.length values - 1)
    else
      null;

  # The files the monitor writes in the textfile directory: one per command (the CLI
  # writes them atomically with --metrics) and the static lock expectation.
  metricsFiles = {
    check = "kmod-audit-check.prom";
    verify = "kmod-audit-verify.prom";
    lock = "kmod-audit-lock.prom";
  };

  lockMetric = [
    "# HELP kmod_audit_lock_expected 1 when the audit rules must be locked (auditctl -s: enabled 2)."
    "# TYPE kmod_audit_lock_expected gauge"
    "kmod_audit_lock_expected 1"
  ];
in
{
  inherit textfileDirectory;

  # The unit (and timer) name.
  unitName = "kmod-audit-monitor";

  inherit metricsFiles;

  # The body of the unit's `script` (NixOS runs it with `sh -e`). `kmodAudit` is the
  # kmod-audit executable; `settings` holds the module's profiles, key, uidMin and
  # kmodPath; `directory` is the textfile directory or null (no metrics written);
  # `verify` adds `verify --target local --no-load`; `locked` is whether
  # security.audit.enable is "lock".
  #
  # Both commands always run, so each writes its metrics; the script exits with check's
  # status when it is not 0, else with verify's: 1 not compliant, 2 usage, 3 undecided.
  script =
    {
      kmodAudit,
      settings,
      directory,
      verify,
      locked,
    }:
    let
      judged = map (profile: "--profile=${profile}") settings.profiles ++ [
        "--key=${settings.key}"
        "--uid-min=${toString settings.uidMin}"
        "--kmod-path=${settings.kmodPath}"
      ];
      metrics = command: optional (directory != null) "--metrics=${directory}/${command}";
      run =
        args: status:
        "${builtins.concatStringsSep " " (map quote ([ kmodAudit ] ++ args))} || ${status}=$?";
      lockFile = "${directory}/${metricsFiles.lock}";
      # Not a .prom name, so node_exporter never reads it half-written.
      lockTemporary = "${directory}/.${metricsFiles.lock}.tmp";
      lockLines =
        if directory == null then
          [ ]
        else if locked then
          [
            "# security.audit.enable = \"lock\": the alerts expect auditctl -s to say enabled 2."
            "printf '%s\\n' ${builtins.concatStringsSep " " (map quote lockMetric)} > ${quote lockTemporary}"
            "mv -f ${quote lockTemporary} ${quote lockFile}"
          ]
        else
          [
            "# Not locked: no lock expectation (a file left by an earlier \"lock\" generation goes)."
            "rm -f ${quote lockFile}"
          ];
    in
    builtins.concatStringsSep "\n" (
      lockLines
      ++ [
        "check=0"
        (run (
          # No SOURCE: the running rules and the on-disk ones (audit-rules-nixos.service),
          # so that drift between them is judged and reported (kmod_audit_drift_rules).
          [ "check" ] ++ judged ++ metrics metricsFiles.check
        ) "check")
      ]
      ++ (
        if verify then
          [
            "verify=0"
            (run (
              [
                "verify"
                "--target=local"
                "--no-load"
              ]
              ++ judged
              ++ metrics metricsFiles.verify
            ) "verify")
            "if [ \"$check\" -ne 0 ]; then exit \"$check\"; fi"
            "exit \"$verify\""
          ]
        else
          optional (directory != null)
            # verify's file from an earlier generation with verify on goes: its last run
            # would otherwise look stale forever (KmodAuditRunStale never resolves).
            "rm -f ${quote "${directory}/${metricsFiles.verify}"}"
          ++ [ "exit \"$check\"" ]
      )
    )
    + "\n";

  # serviceConfig of the unit. It runs as root: auditctl -l and -s (AUDIT_LIST_RULES,
  # AUDIT_GET) need CAP_AUDIT_CONTROL in the initial user namespace, which DynamicUser
  # cannot have. So the capabilities are bounded instead, and CAP_SYS_MODULE is never
  # among them: even `verify` cannot load a module from this unit.
  serviceConfig =
    { directory, verify }:
    {
      Type = "oneshot";
      User = "root";
      CapabilityBoundingSet = [
        "CAP_AUDIT_CONTROL"
      ]
      # verify: CAP_AUDIT_WRITE for its marker (a user message), CAP_SETUID and
      # CAP_SETGID for the stimuli it makes as the (unprivileged) test user, CAP_KILL to
      # stop such a stimulus on timeout (as contrib/systemd/kmod-audit-verify.service).
      # No CAP_SYSLOG: PrivateDevices hides /dev/kmsg, and NixOS runs auditd.
      ++ (
        if verify then
          [
            "CAP_AUDIT_WRITE"
            "CAP_KILL"
            "CAP_SETGID"
            "CAP_SETUID"
          ]
        else
          [ ]
      );
      NoNewPrivileges = true;
      ProtectSystem = "strict";
      ReadWritePaths = optional (directory != null) directory;
      ProtectHome = true;
      PrivateTmp = true;
      PrivateDevices = true;
      ProtectKernelTunables = true;
      # No kernel log (/dev/kmsg, syslog(2)): verify reads auditd's log or the journal.
      ProtectKernelLogs = true;
      ProtectControlGroups = true;
      ProtectHostname = true;
      ProtectClock = true;
      # auditctl talks netlink, and the audit netlink socket exists only in the initial
      # network namespace: no PrivateNetwork.
      RestrictAddressFamilies = [
        "AF_UNIX"
        "AF_NETLINK"
      ];
      IPAddressDeny = "any";
      RestrictNamespaces = true;
      RestrictRealtime = true;
      RestrictSUIDSGID = true;
      LockPersonality = true;
      # The metrics files must be readable by node_exporter's own user.
      UMask = "0022";
      # verify bounds itself (--timeout, 300 s); this only stops a hung run.
      TimeoutStartSec = "10min";
    }
    # Only without verify. verify makes module syscalls that must reach the kernel's audit
    # hooks: ProtectKernelModules' seccomp filter would refuse them before audit sees
    # them, and SystemCallArchitectures=native would kill its b32 calls (int 0x80).
    // (
      if verify then
        { }
      else
        {
          ProtectKernelModules = true;
          SystemCallArchitectures = "native";
        }
    );

  # The timer's timerConfig: `interval` is a systemd calendar expression
  # (systemd.time(7)); Persistent catches up on a run missed while the machine was off.
  timerConfig = interval: {
    OnCalendar = interval;
    Persistent = true;
  };

  # Checks on the monitor's settings; `services` is config.systemd.services.
  assertions =
    {
      moduleEnabled,
      directory,
      services,
    }:
    [
      {
        assertion = moduleEnabled;
        message = ''
          security.kernelModuleAudit.monitor.enable is set but security.kernelModuleAudit.enable
          is false: the monitor judges the rules that module loads, with its profiles, key,
          uidMin and kmod path. Set security.kernelModuleAudit.enable = true.
        '';
      }
      {
        # As guards.lockAssertion: nixpkgs' own definition, with an ExecStart.
        assertion =
          services ? ${guards.rulesUnit} && (services.${guards.rulesUnit}.serviceConfig or { }) ? ExecStart;
        message = ''
          security.kernelModuleAudit.monitor.enable needs nixpkgs from NixOS 25.11 or newer:
          the monitor runs whenever systemd.services.${guards.rulesUnit} (re)loads the rules,
          and this nixpkgs does not define that unit (NixOS 25.05 and older load the rules
          with audit.service). Update nixpkgs.
        '';
      }
    ]
    ++ (
      if directory == null then
        [ ]
      else
        [
          {
            assertion = builtins.match "/[A-Za-z0-9_./@+=:,-]*" directory != null;
            message = ''
              security.kernelModuleAudit.monitor.textfileDirectory = "${directory}": use an
              absolute path of letters, digits and `_./@+=:,-` only (it becomes a systemd
              ReadWritePaths= and tmpfiles.d entry, where spaces, quotes and `%` have meanings).
            '';
          }
          {
            assertion =
              !(builtins.any (dir: directory == dir || hasPrefix "${dir}/" directory) [
                "/tmp"
                "/var/tmp"
                builtins.storeDir
              ]);
            message = ''
              security.kernelModuleAudit.monitor.textfileDirectory = "${directory}" is under
              /tmp, /var/tmp or the Nix store: the monitor (PrivateTmp) and node_exporter would
              not see the same files, or could not write them. Use a directory such as
              /var/lib/prometheus-node-exporter-text-files and point node_exporter's
              --collector.textfile.directory at it.
            '';
          }
        ]
    );

  # Allowed but surprising: metrics written where node_exporter does not look.
  directoryWarning =
    { directory, node }:
    let
      exporterDirectory = textfileDirectory node;
    in
    optional (directory != null && (node.enable or false) && directory != exporterDirectory) ''
      security.kernelModuleAudit.monitor.textfileDirectory is "${directory}", but
      node_exporter (services.prometheus.exporters.node) reads textfiles from
      ${
        if exporterDirectory == null then "no directory" else "\"${exporterDirectory}\""
      }: the kmod-audit metrics will not be scraped. Add
      "--collector.textfile.directory=${directory}" to its extraFlags, or leave
      textfileDirectory at its default.
    '';
}
