#!/bin/sh
# Stop the auditd that start-auditd.sh started, after everything the kernel sent is on disk.
#
# Usage: stop-auditd.sh PID [LOG [TIMEOUT_SECONDS]]
#        (defaults: /var/log/audit/audit.log, 30)
#
# auditd receives and writes records asynchronously. So first send a unique user message
# (`auditctl -m`) and wait until it is in LOG: the kernel delivers records in order, so
# every record produced before this script ran is then in LOG too. Then SIGTERM auditd and
# wait until the process is gone and `auditctl -s` no longer reports it. Prints
# `RESULT auditd_stopped=PID`; exits 1 with a message on stderr on any failure or timeout.
set -u
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

if [ $# -lt 1 ]; then
    echo "usage: stop-auditd.sh PID [LOG [TIMEOUT_SECONDS]]" >&2
    exit 2
fi
pid=$1
log=${2:-/var/log/audit/audit.log}
timeout=${3:-30}
deadline=$(($(date +%s) + timeout))

# Zombies keep their /proc entry: a reparented daemon may not be reaped at once.
alive() {
    state=
    # stderr first: a failed `<` (the process is gone) must not print anything.
    { read -r _ _ state _; } 2>/dev/null <"/proc/$1/stat"
    [ -n "$state" ] && [ "$state" != Z ]
}

expired() {
    [ "$(date +%s)" -ge "$deadline" ]
}

marker="kmod_audit_flush_$(date +%s%N)_$$"
if ! auditctl -m "$marker"; then
    echo "stop-auditd.sh: auditctl -m failed; is audit enabled?" >&2
    exit 1
fi
until grep -qF "$marker" "$log" 2>/dev/null; do
    if expired; then
        echo "stop-auditd.sh: marker $marker not in $log after ${timeout}s" >&2
        exit 1
    fi
    sleep 0.1
done

if ! kill -TERM "$pid"; then
    echo "stop-auditd.sh: cannot signal auditd pid $pid" >&2
    exit 1
fi
while alive "$pid" || [ "$(auditctl -s 2>/dev/null | sed -n 's/^pid //p')" = "$pid" ]; do
    if expired; then
        echo "stop-auditd.sh: auditd pid $pid still running ${timeout}s after SIGTERM" >&2
        exit 1
    fi
    sleep 0.1
done
echo "RESULT auditd_stopped=$pid"
