"""`--metrics FILE`: the verdict of a `check` or `verify` run as Prometheus metrics.

The file is in the Prometheus text exposition format, for node_exporter's textfile
collector (`--collector.textfile.directory`). It is written atomically by
`prometheus_client.write_to_textfile` (a temporary file beside it, then rename(2)), so a
scrape never sees half a file, and it is written whatever the exit code: 0, 1, 2 (usage or
unreadable input), 3 (the system could not be asked, or the evidence is incomplete) and
130 (interrupted).

Metrics (README "Keep it proven"; the names are a contract of the alert rules):

- `kmod_audit_compliant{command,profile,requirement}`: 1 when the requirement passes and
  nothing else makes the run non-compliant, else 0 (undecided, not exercised, or a run that
  ended in an error, before or after its verdict). So every series is 1 exactly when the
  exit code is 0.
- `kmod_audit_last_run_timestamp_seconds{command}`, `kmod_audit_run_duration_seconds{command}`,
  `kmod_audit_exit_code{command}`.
- The kernel's state, written only by `check` when it read the running kernel (so the
  files of `check` and `verify` in one textfile directory never hold the same series):
  `kmod_audit_audit_enabled`, `kmod_audit_rules_loaded`, `kmod_audit_drift_rules` (only
  when on-disk rules were compared) and `kmod_audit_lost_records`.

prometheus_client is imported only when the file is written: a run without `--metrics`
does not load it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final, Literal

import attrs

from ._files import check_writable, write_atomic
from ._verbose import logger
from .errors import ConfigurationError
from .profiles import Profile, select_profiles

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Gauge

    from .loader import Drift, RuleSet
    from .report import Report, VerifyReport

__all__ = ["RunMetrics"]

CommandName = Literal["check", "verify"]

PREFIX: Final = "kmod_audit_"

#: HELP text of each metric (also the README's table).
HELP: Final = {
    "compliant": "1 when the requirement passes and nothing else makes the run non-compliant "
    "(exit code 0 exactly when every series is 1); 0 when it fails, is undecided, was not "
    "exercised, or the run ended in an error (exit 2 or 3)",
    "last_run_timestamp_seconds": "Unix time at which the run ended",
    "run_duration_seconds": "How long the run took, in seconds",
    "exit_code": "Exit code of the run: 0 compliant, 1 not compliant, 2 usage or unreadable "
    "input, 3 the system could not be asked or the evidence is incomplete, 130 interrupted",
    "audit_enabled": "The kernel's audit enabled flag (auditctl -s): 0 off, 1 on, 2 locked",
    "rules_loaded": "Number of audit rules the running kernel holds (auditctl -l)",
    "drift_rules": "Number of rules that differ between the running and the on-disk rules "
    "(on disk but not running, plus running but not on disk; same rules in another order: "
    "the number of positions that differ)",
    "lost_records": "The kernel's count of lost audit records (auditctl -s: lost)",
}


@attrs.define
class RunMetrics:
    """The metrics of one run, collected as it goes and written when it ends.

    Attributes:
        command: `check` or `verify` (the `command` label).
        path: The file to write.
        profiles: The selected profiles (empty when `--profile` was invalid).
        started: `time.monotonic()` at the start.
        compliant: Per (profile id, requirement id), once a report was observed.
        verdict_exit: The exit code of the observed report's verdict.
        kernel: The kernel's state (`audit_enabled`, `rules_loaded`, `drift_rules`,
            `lost_records`), as far as `check` read it.
    """

    command: CommandName
    path: str
    profiles: tuple[Profile, ...] = ()
    started: float = attrs.Factory(time.monotonic)
    compliant: dict[tuple[str, str], bool] | None = None
    verdict_exit: int | None = None
    kernel: dict[str, int] = attrs.Factory(dict)

    @classmethod
    def begin(cls, command: CommandName, path: str, profile_ids: Sequence[str]) -> RunMetrics:
        """Start the metrics of a run, after checking that `path` can be written.

        Raises:
            ConfigurationError: `path` is a directory, its directory is missing or not
                writable, or prometheus_client is not installed (exit 2, before anything
                else is done).
        """
        check_writable(
            "--metrics",
            path,
            replaces=True,
            instead="a file in node_exporter's textfile directory, e.g. "
            "/var/lib/prometheus/node-exporter/kmod-audit-check.prom",
        )
        try:
            import prometheus_client  # noqa: F401, PLC0415 - only with --metrics
        except ImportError as exc:
            msg = (
                f"--metrics {path}: the Python package prometheus-client is missing ({exc}); "
                "install kmod-audit with its dependencies (pip install prometheus-client, or "
                "apt-get install python3-prometheus-client)"
            )
            raise ConfigurationError(msg) from None
        try:
            profiles = select_profiles(list(profile_ids))
        except KeyError:
            profiles = ()  # the run itself reports the bad --profile (exit 2)
        return cls(command=command, path=path, profiles=profiles)

    def observe_check(
        self,
        report: Report,
        *,
        running: RuleSet | None,
        drift: Sequence[Drift] = (),
        kernel: Mapping[str, int] | None = None,
    ) -> None:
        """Take the verdict of `check`, and the kernel's state when it read the running rules.

        Args:
            report: The whole report.
            running: The running rules, when the kernel was read.
            drift: How the running rules differ from each on-disk rule set compared.
            kernel: The kernel's `enabled` and `lost`, read with the running rules
                (`check.CheckRun.kernel`).
        """
        ok = not any(f.severity == "error" for s in report.sources for f in s.findings)
        self.verdict_exit = report.exit_code()
        self.compliant = {
            (profile.id, req.id): ok and req.status == "pass"
            for profile in report.merged_profiles()
            for req in profile.requirements
        }
        if running is None:
            return
        self.kernel["rules_loaded"] = len(running.rules)
        if drift:
            self.kernel["drift_rules"] = sum(differences.rules for differences in drift)
        for name, key in (("audit_enabled", "enabled"), ("lost_records", "lost")):
            if kernel is not None and key in kernel:
                self.kernel[name] = kernel[key]

    def observe_verify(self, report: VerifyReport) -> None:
        """Take the verdict of `verify`."""
        ok = not report.problems and not report.incomplete
        self.verdict_exit = report.exit_code()
        self.compliant = {
            (profile.id, req.id): ok and req.status == "pass"
            for profile in report.profiles
            for req in profile.requirements
        }

    def render(self, exit_code: int, *, now: float | None = None) -> bytes:
        """The file's content: the Prometheus text format, with HELP and TYPE lines."""
        from prometheus_client import generate_latest  # noqa: PLC0415 - only with --metrics

        return generate_latest(self._registry(exit_code, now))

    def write(self, exit_code: int) -> None:
        """Write the file atomically (a temporary file beside it, then rename).

        Raises:
            ConfigurationError: the file cannot be written (the message names it).
        """
        write_atomic(
            self.path,
            self.render(exit_code),
            option="--metrics",
            replaces=True,
            what="the metrics file",
            instead=(
                "pass a writable path, e.g. /var/lib/prometheus/node-exporter/kmod-audit-check.prom"
            ),
        )
        logger.info("metrics written to %s (exit code %d)", self.path, exit_code)

    def _registry(self, exit_code: int, now: float | None) -> CollectorRegistry:
        from prometheus_client import CollectorRegistry, Gauge  # noqa: PLC0415

        registry = CollectorRegistry()

        def gauge(name: str, labels: Sequence[str] = ()) -> Gauge:
            return Gauge(PREFIX + name, HELP[name], list(labels), registry=registry)

        compliant = gauge("compliant", ("command", "profile", "requirement"))
        values = self.compliant
        if values is not None and exit_code != self.verdict_exit:
            # The run failed after its verdict (e.g. --output could not be written, exit 2):
            # it is no compliant run, whatever the verdict said.
            values = dict.fromkeys(values, False)
        if values is None:
            # No verdict (exit 2 or 3 before a report): an unproven control is not
            # compliant, so alerts on kmod_audit_compliant == 0 keep firing.
            values = {(p.id, r.id): False for p in self.profiles for r in p.requirements}
        for (profile, requirement), value in values.items():
            compliant.labels(self.command, profile, requirement).set(int(value))
        ended = time.time() if now is None else now
        gauge("last_run_timestamp_seconds", ("command",)).labels(self.command).set(ended)
        duration = max(0.0, time.monotonic() - self.started)
        gauge("run_duration_seconds", ("command",)).labels(self.command).set(duration)
        gauge("exit_code", ("command",)).labels(self.command).set(exit_code)
        for name in ("audit_enabled", "rules_loaded", "drift_rules", "lost_records"):
            if name in self.kernel:
                gauge(name).set(self.kernel[name])
        return registry
