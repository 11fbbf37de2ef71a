#!/bin/sh
# Start auditd inside a throwaway guest (tools/vmrun.py) and wait until the kernel knows it.
#
# Usage: start-auditd.sh [TIMEOUT_SECONDS]       (default 30)
#
# Runs `auditd -n` (foreground mode) in the background with the default config,
# /etc/audit/auditd.conf, which logs to /var/log/audit/audit.log. In a virtme-ng guest
# /var/log is an empty tmpfs, so the directory is created first. Prints
# `RESULT auditd_pid=PID` once `auditctl -s` reports that pid, then exits 0 and leaves the
# daemon running; stop it with stop-auditd.sh PID. Exits 1 (with auditd's own output on
# stderr) if auditd dies or does not register in time.
#
# Never run this on a real machine: it starts a second auditd beside the system's.
set -u
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

timeout=${1:-30}
output=/run/kmod-audit-auditd.out

registered=$(auditctl -s | sed -n 's/^pid //p')
if [ "${registered:-0}" != 0 ]; then
    echo "start-auditd.sh: an audit daemon (pid $registered) is already registered" >&2
    exit 1
fi

mkdir -p /var/log/audit
chmod 0700 /var/log/audit
# Own output file: auditd must not hold the caller's stdout (a `$(...)` would never end).
auditd -n </dev/null >"$output" 2>&1 &
pid=$!

deadline=$(($(date +%s) + timeout))
while :; do
    registered=$(auditctl -s 2>/dev/null | sed -n 's/^pid //p')
    if [ "$registered" = "$pid" ]; then
        echo "RESULT auditd_pid=$pid"
        exit 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "start-auditd.sh: auditd (pid $pid) exited before registering; its output:" >&2
        cat "$output" >&2
        exit 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "start-auditd.sh: auditd (pid $pid) not registered after ${timeout}s" \
            "(auditctl -s says pid ${registered:-?}); its output:" >&2
        cat "$output" >&2
        kill "$pid" 2>/dev/null
        exit 1
    fi
    sleep 0.1
done
