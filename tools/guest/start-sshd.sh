#!/bin/sh
# Make a throwaway guest (tools/vmrun.py) an ssh host: bring up the user-mode NIC that
# QEMU forwards a 127.0.0.1 port of the host to (hostfwd ...-:22), and start sshd on it.
#
# Usage: start-sshd.sh DIR HOSTNAME [TIMEOUT_SECONDS]        (default 60)
#
# DIR is a host directory the guest sees (read-only is enough) holding `host_key` (an
# OpenSSH private key) and `authorized_keys` (who may log in as root). sshd runs with
# `UsePAM yes`, so a login gets its login uid from pam_loginuid, as on a real machine.
# Its state lives under /run/kmod-audit-sshd (the guest's own tmpfs), and root's home is
# an empty tmpfs. Prints
# `RESULT sshd_pid=PID` once sshd listens on port 22, and exits 0 leaving it running.
# Exits 1 with a message on stderr when a step fails or sshd does not listen in time.
#
# Never run this on a real machine: it reconfigures the first network interface.
set -u
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

if [ $# -lt 2 ]; then
    echo "usage: start-sshd.sh DIR HOSTNAME [TIMEOUT_SECONDS]" >&2
    exit 2
fi
keys=$1
name=$2
timeout=${3:-60}
state=/run/kmod-audit-sshd

fail() {
    echo "start-sshd.sh: $*" >&2
    exit 1
}

hostname "$name" || fail "cannot set the host name $name"
# Debian's kernel has virtio-net as a module, and no udev runs in the guest to load it.
modprobe virtio_net 2>/dev/null
iface=
for path in /sys/class/net/*; do
    [ "${path##*/}" = lo ] || { iface=${path##*/}; break; }
done
[ -n "$iface" ] || fail "no network interface besides lo (is virtio_net in /lib/modules?)"
ip link set lo up
ip link set "$iface" up || fail "cannot bring up $iface"
# QEMU's user-mode network: the guest is 10.0.2.15, hostfwd delivers there.
ip addr add 10.0.2.15/24 dev "$iface" || fail "cannot give $iface the address 10.0.2.15"
ip route add default via 10.0.2.2 dev "$iface" 2>/dev/null

# The guest's /root is the host's (read-only), with the host's shell start-up files: bash
# reads ~/.bashrc for every ssh command, and a slow one (pyenv init) costs seconds each
# under TCG. A root login here gets an empty home of its own, as on a fresh machine.
mount -t tmpfs -o mode=0700 roothome /root || fail "cannot mount an empty /root"

mkdir -p "$state" /run/sshd || fail "cannot create $state"
chmod 0755 /run/sshd
# sshd refuses a host key that others can read; the shared copy may carry any mode.
cp "$keys/host_key" "$state/host_key" && chmod 0600 "$state/host_key" \
    || fail "cannot copy $keys/host_key"
cp "$keys/authorized_keys" "$state/authorized_keys" && chmod 0644 "$state/authorized_keys" \
    || fail "cannot copy $keys/authorized_keys"
sftp=
for path in /usr/lib/openssh/sftp-server /usr/libexec/openssh/sftp-server; do
    [ -x "$path" ] && { sftp="Subsystem sftp $path"; break; }
done
cat >"$state/sshd_config" <<EOF
Port 22
ListenAddress 0.0.0.0
HostKey $state/host_key
AuthorizedKeysFile $state/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM yes
StrictModes no
PidFile $state/sshd.pid
PrintMotd no
UseDNS no
$sftp
EOF
/usr/sbin/sshd -f "$state/sshd_config" -E "$state/sshd.log" || {
    cat "$state/sshd.log" >&2
    fail "sshd did not start"
}

deadline=$(($(date +%s) + timeout))
while :; do
    pid=$(cat "$state/sshd.pid" 2>/dev/null)
    if [ -n "$pid" ] && grep -q ' 00000000:0016 00000000:0000 0A ' /proc/net/tcp; then
        echo "RESULT sshd_pid=$pid"
        exit 0
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
        cat "$state/sshd.log" >&2
        fail "sshd does not listen on port 22 after ${timeout}s"
    fi
    sleep 0.1
done
