#!/bin/sh
# Inside a throwaway guest: run kmod-audit once per case, in one boot.
# WORK/cases/NAME.rules are the rules of case NAME and WORK/cases/NAME.args its kmod-audit
# arguments, one per line (e.g. `verify`, `--target`, `local`, `--format`, `json`, or
# `probe`, `--no-load`). For each case, in name order: delete every rule, load the case's
# with `auditctl -R`, run kmod-audit with its stdout to WORK/out/NAME.stdout (stderr to
# .stderr), and print `RESULT case-NAME=STATUS`: kmod-audit's exit status, or `load-N` when
# auditctl refused the file with status N. auditd runs across the cases.
#
# Usage: run-cases.sh REPO WORK
set -u
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
repo=$1
work=$2

if [ "$(uname -m)" = x86_64 ]; then
    kmod_audit() { "$repo/.venv/bin/kmod-audit" "$@"; }
else
    # A foreign root (tools/matrix.py): its python3 runs the package from the repository.
    kmod_audit() { PYTHONPATH=$repo/verifier PYTHONDONTWRITEBYTECODE=1 python3 -m kmod_audit "$@"; }
fi

sh "$repo/tools/guest/start-auditd.sh" 60 >/dev/null || exit 1
auditd_pid=$(auditctl -s | sed -n 's/^pid //p')
echo "== guest: kernel $(uname -r) ($(uname -m)), auditd pid $auditd_pid"
mkdir -p "$work/out"
for rules in "$work"/cases/*.rules; do
    name=$(basename "$rules" .rules)
    auditctl -D >/dev/null
    auditctl -e 1 >/dev/null  # a previous case's `-e 0` must not carry over
    if ! auditctl -R "$rules" >"$work/out/$name.load" 2>&1; then
        echo "RESULT case-$name=load-$?"
        continue
    fi
    set --
    while IFS= read -r word; do
        set -- "$@" "$word"
    done <"$work/cases/$name.args"
    start=$(cut -d' ' -f1 /proc/uptime)
    kmod_audit "$@" >"$work/out/$name.stdout" 2>"$work/out/$name.stderr"
    status=$?
    took=$(awk -v t0="$start" '{printf "%.1f", $1 - t0}' /proc/uptime)
    echo "== guest: case $name: kmod-audit $1 exit $status in $took s"
    echo "RESULT case-$name=$status"
done
auditctl -D >/dev/null
sh "$repo/tools/guest/stop-auditd.sh" "$auditd_pid" /var/log/audit/audit.log 30 >/dev/null
echo "RESULT done=1"
