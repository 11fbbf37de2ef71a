#!/bin/sh
# Inside a throwaway guest (see tools/vm-verify): start auditd, load the rules, run
# `kmod-audit verify` and print its report. Nothing here touches the host: the guest's
# /etc, /var and /tmp are in its own memory.
#
# Usage: verify-demo.sh REPO RULES [VERIFY ARGS...]
set -u
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
repo=$1
rules=$2
shift 2

sh "$repo/tools/guest/start-auditd.sh" 60 >/dev/null || exit 1
auditd_pid=$(auditctl -s | sed -n 's/^pid //p')
echo "== guest: kernel $(uname -r), auditd pid $auditd_pid; loading $rules"
auditctl -R "$rules" >/dev/null || exit 1
auditctl -l
echo "== guest: kmod-audit verify $*"
if [ "$(uname -m)" = x86_64 ]; then
    "$repo/.venv/bin/kmod-audit" verify --target local "$@"
    status=$?
else
    # A foreign root (tools/matrix.py): the host's .venv is x86_64; the root's python3 and
    # libraries run the package from the repository.
    PYTHONPATH=$repo/verifier PYTHONDONTWRITEBYTECODE=1 python3 -m kmod_audit verify --target local "$@"
    status=$?
fi
sh "$repo/tools/guest/stop-auditd.sh" "$auditd_pid" /var/log/audit/audit.log 30 >/dev/null
echo "RESULT verify=$status"
exit "$status"
