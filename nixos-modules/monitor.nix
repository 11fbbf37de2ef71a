# security.kernelModuleAudit.monitor: keep the control proven. A timer re-judges the
# running rules (`kmod-audit check --running`, optionally `verify --no-load`), and so does
# every (re)load of the rules by audit-rules-nixos.service; the verdicts go to
# node_exporter's textfile collector for the alerts in monitoring/kmod-audit.rules.yml,
# and a non-compliant machine leaves the unit failed. The unit, its script and its checks
# are in ./monitor-unit.nix (builtins only, tested without nixpkgs).
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.security.kernelModuleAudit;
  monitor = cfg.monitor;
  unit = import ./monitor-unit.nix;
  guards = import ./guards.nix;
  node = config.services.prometheus.exporters.node;
  directory = if monitor.textfileDirectory == null then null else toString monitor.textfileDirectory;
in
{
  options.security.kernelModuleAudit.monitor = {
    enable = lib.mkEnableOption ''
      kmod-audit-monitor.service and its timer: `kmod-audit check --running` judges the
      running rules with this module's profiles, key, uidMin and kmod path on every
      {option}`security.kernelModuleAudit.monitor.interval` and whenever
      `audit-rules-nixos.service` (re)loads the rules (boot, and `nixos-rebuild switch`
      when the rules changed). The unit fails when the machine is not compliant, so
      `systemctl --failed` and `OnFailure=` see it, and the verdicts are written as
      Prometheus metrics to {option}`security.kernelModuleAudit.monitor.textfileDirectory`
    '';

    interval = lib.mkOption {
      type = lib.types.nonEmptyStr;
      default = "hourly";
      example = "*:0/15";
      description = ''
        When the timer runs the monitor, as a systemd calendar expression (`OnCalendar=`,
        see {manpage}`systemd.time(7)`). The timer is `Persistent`, so a run missed while
        the machine was off happens at the next boot. The stale-run alert in
        `monitoring/kmod-audit.rules.yml` assumes hourly (it fires after two hours without
        a run): change it with this option.
      '';
    };

    verify = lib.mkOption {
      type = lib.types.bool;
      default = false;
      example = true;
      description = ''
        Whether each run also makes the unsuccessful module syscalls and the execution
        stimuli as a logged-in user and finds their records:
        `kmod-audit verify --target local --no-load`. It never loads a module (the unit's
        capabilities do not include `CAP_SYS_MODULE` either), but it writes audit records
        on every run and needs auditd's log; the unit then drops the seccomp-based
        hardening that would hide its syscalls from audit.
      '';
    };

    textfileDirectory = lib.mkOption {
      type = lib.types.nullOr (
        lib.types.pathWith {
          inStore = false;
          absolute = true;
        }
      );
      default = unit.textfileDirectory node;
      defaultText = lib.literalMD ''
        node_exporter's textfile directory (`--collector.textfile.directory=DIR` in
        {option}`services.prometheus.exporters.node.extraFlags`) when
        {option}`services.prometheus.exporters.node.enable` is set and its textfile
        collector is on (the default; see `enabledCollectors`/`disabledCollectors`), else
        `null`
      '';
      example = "/var/lib/prometheus-node-exporter-text-files";
      description = ''
        Where the monitor writes `kmod-audit-check.prom` (and `kmod-audit-verify.prom`)
        for node_exporter's textfile collector, and `kmod-audit-lock.prom`
        (`kmod_audit_lock_expected 1`) when {option}`security.audit.enable` is `"lock"`.
        The directory is created as root's, mode 0755, if missing. `null`: no metrics; the
        unit still fails when the machine is not compliant.
      '';
    };
  };

  config = lib.mkIf monitor.enable {
    assertions = unit.assertions {
      moduleEnabled = cfg.enable;
      inherit directory;
      services = config.systemd.services;
    };

    warnings = unit.directoryWarning { inherit directory node; };

    systemd.services.${unit.unitName} = {
      description = "kmod-audit: judge the kernel module audit rules of the running kernel";
      # Wanted by the unit that loads the rules: every start or restart of it (at boot,
      # and when nixos-rebuild switch reloads changed rules) also starts this unit, after
      # it. A restart propagates only to active units (PartOf=), and this oneshot is not
      # active between runs, so a Wants= dependency is what triggers it.
      wantedBy = [ "${guards.rulesUnit}.service" ];
      after = [ "${guards.rulesUnit}.service" ] ++ lib.optional monitor.verify "auditd.service";
      # auditctl, which kmod-audit runs.
      path = [ pkgs.audit ];
      script = unit.script {
        kmodAudit = "${cfg.package}/bin/kmod-audit";
        settings = {
          inherit (cfg) profiles key uidMin;
          kmodPath = "${cfg.kmodPackage}/bin/kmod";
        };
        inherit directory;
        inherit (monitor) verify;
        locked = config.security.audit.enable == "lock";
      };
      serviceConfig = unit.serviceConfig {
        inherit directory;
        inherit (monitor) verify;
      };
    };

    systemd.timers.${unit.unitName} = {
      description = "kmod-audit: re-judge the kernel module audit rules";
      wantedBy = [ "timers.target" ];
      timerConfig = unit.timerConfig monitor.interval;
    };

    # ReadWritePaths= needs the directory to exist when the unit starts.
    systemd.tmpfiles.rules = lib.optional (directory != null) "d ${directory} 0755 root root -";
  };
}
