#!/bin/sh
# Inside a throwaway guest: start auditd, run every case of WORK/cases in one Python process
# (run_cases.py says what a case is and what it prints), stop auditd, and print
# `RESULT done=1` when all of that went through.
#
# Usage: run-cases.sh REPO WORK
set -u
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
repo=$1
work=$2

if [ "$(uname -m)" = x86_64 ]; then
    python() { "$repo/.venv/bin/python" "$@"; }
else
    # A foreign root (tools/matrix.py): its python3 runs the package from the repository.
    python() { PYTHONPATH=$repo/verifier PYTHONDONTWRITEBYTECODE=1 python3 "$@"; }
fi

# Room in auditd's netlink socket: under TCG a flood of records (`-S all`, a task rule)
# overruns the default 208 KiB, and the kernel then drops records without counting them
# as lost (measured on Debian's 6.1: the marker after the stimuli never arrived).
sysctl -qw net.core.rmem_max=67108864 net.core.rmem_default=67108864

sh "$repo/tools/guest/start-auditd.sh" 60 >/dev/null || exit 1
auditd_pid=$(auditctl -s | sed -n 's/^pid //p')
echo "== guest: kernel $(uname -r) ($(uname -m)), auditd pid $auditd_pid"
python "$repo/tools/guest/run_cases.py" "$work"
status=$?
sh "$repo/tools/guest/stop-auditd.sh" "$auditd_pid" /var/log/audit/audit.log 30 >/dev/null

# The kernel-differential test's files (tests/test_kernel_differential.py), drawn on the
# host, judged on this kernel by differential.py, when the host put them in WORK/differential.
if [ "$status" = 0 ] && [ -d "$work/differential" ]; then
    python "$repo/tools/guest/differential.py" "$work" >"$work/out/differential.log" 2>&1
    echo "RESULT differential=$?"
fi
[ "$status" = 0 ] && echo "RESULT done=1"
exit "$status"
