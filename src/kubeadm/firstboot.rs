//! The unit and script that put a node into the cluster on its first boot, unattended.
//!
//! Retrying: the script loops by itself, with a backoff of 10 s doubling to 5 minutes; a
//! failed kubeadm attempt is cleaned up with `kubeadm reset` and tried again. The unit is
//! `Type=exec` with `Restart=on-failure` (for a crash of the script itself), not oneshot: a
//! oneshot that loops would hold `multi-user.target` back until the cluster formed, since a
//! target waits for the units it wants. Both directives load on systemd 252 (bookworm) and 257
//! (trixie); `systemd-analyze verify` on 252 accepts `Type=oneshot` with `Restart=on-failure`
//! too, and refuses only `Restart=always`/`on-success` for oneshot.
//!
//! State, in `/var/lib/piforge` (root only): `kubeadm-started` while kubeadm may have left
//! half a node behind, `cni-pending` after `kubeadm init` until Flannel is applied, and `pki/`,
//! a copy of the pre-placed CA, because `kubeadm reset` deletes `/etc/kubernetes/pki`. The
//! unit runs while the node has no `kubelet.conf`, or while either marker says a step was cut
//! short by a reboot; a node joined by hand is left alone.

use super::{Cni, Role};

pub const FIRST_BOOT_UNIT_NAME: &str = "piforge-kubeadm.service";
pub const FIRST_BOOT_SCRIPT_PATH: &str = "/usr/local/lib/piforge/kubeadm-first-boot";
/// The Flannel manifest the first control plane applies (see `patch_flannel`).
pub const FLANNEL_MANIFEST_PATH: &str = "/usr/local/share/piforge/kube-flannel.yml";
/// The progress report on the boot partition, readable from any computer.
pub const STATUS_PATH: &str = "/boot/firmware/piforge-status.txt";

const UNIT: &str = "\
[Unit]
Description=piforge: form or join the Kubernetes cluster on first boot
Documentation=file:/usr/local/lib/piforge/kubeadm-first-boot
Wants=network-online.target
After=network-online.target containerd.service
Requires=containerd.service
# Run on a node that is not in a cluster yet, or to finish a step a reboot cut short.
ConditionPathExists=|!/etc/kubernetes/kubelet.conf
ConditionPathExists=|/var/lib/piforge/kubeadm-started
ConditionPathExists=|/var/lib/piforge/cni-pending
# The script retries by itself; a crash of the script is restarted forever.
StartLimitIntervalSec=0

[Service]
# Not oneshot: the script loops until the node is in the cluster, and a oneshot that long
# would hold multi-user.target back. Restart= covers a crash of the script itself.
Type=exec
ExecStart=/usr/local/lib/piforge/kubeadm-first-boot
Restart=on-failure
RestartSec=30
SyslogIdentifier=piforge-kubeadm

[Install]
WantedBy=multi-user.target
";

/// The `piforge-kubeadm.service` unit (see the module docs for why it is not oneshot).
pub fn first_boot_unit() -> &'static str {
    UNIT
}

/// Shell functions shared by every role; kept apart so tests can run them alone.
pub(super) const FUNCTIONS: &str = r#"say() { echo "piforge-kubeadm: $*"; }

# Drops the lines of a join command and masks anything shaped like a bootstrap token, so
# kubeadm's output reaches neither the journal nor the boot partition with a secret in it.
redact() {
    sed -E -e '/--token|--discovery-token|--certificate-key/d' \
        -e 's/[a-z0-9]{6}\.[a-z0-9]{16}/<token>/g'
}

# Writes the progress report to the boot partition: phase, attempt, the last error line
# (already redacted), the cgroup controllers and the time. Nothing from the kubeadm config.
status() {
    phase=$1
    [ -d "$R/boot/firmware" ] || return 0
    controllers=$(cat "$R/sys/fs/cgroup/cgroup.controllers" 2>/dev/null) ||
        controllers="(none: /sys/fs/cgroup is not cgroup v2)"
    case " $controllers " in
    *" memory "*) memory_note= ;;
    *) memory_note="no memory controller: add cgroup_enable=memory to cmdline.txt" ;;
    esac
    {
        echo "piforge first boot of $(uname -n) ($ROLE)"
        echo "phase: $phase"
        echo "attempt: $attempt"
        echo "last error: ${last_error:-none}"
        echo "next attempt: ${next_attempt:-none}"
        echo "cgroup controllers: $controllers"
        if [ -n "$memory_note" ]; then echo "warning: $memory_note"; fi
        echo "time: $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
    } >"$STATUS.tmp" 2>/dev/null || return 0
    mv -f "$STATUS.tmp" "$STATUS" 2>/dev/null || true
    sync 2>/dev/null || true
}

# Runs a command with its output redacted into the journal; on failure keeps its last
# error-looking line in $last_error. Returns the command's status.
run() {
    rm -f "$RUN/rc"
    { "$@" 2>&1 || echo "$?" >"$RUN/rc"; } | redact | tee "$RUN/output"
    rc=0
    if [ -f "$RUN/rc" ]; then rc=$(cat "$RUN/rc"); fi
    if [ "$rc" -ne 0 ]; then
        last_error=$(grep -i -E 'error|fail|fatal|timed out|refused|unable' "$RUN/output" |
            tail -n 1 | sed 's/^[[:space:]]*//' | cut -c 1-300) || last_error=
        if [ -z "$last_error" ]; then last_error="$1 exited with status $rc"; fi
    fi
    rm -f "$RUN/output"
    return "$rc"
}

# Sleeps $delay seconds, then doubles it up to $MAX_DELAY.
back_off() {
    sleep "$delay"
    delay=$((delay * 2))
    if [ "$delay" -gt "$MAX_DELAY" ]; then delay=$MAX_DELAY; fi
}

# kubeadm reset deletes /etc/kubernetes/pki, and with it the CA piforge placed there: keep a
# copy from before the first attempt until the node is in the cluster.
save_pki() {
    if [ -d "$STATE/pki" ] || [ ! -f "$PKI/ca.key" ]; then return 0; fi
    rm -rf "$STATE/pki.tmp"
    cp -a "$PKI" "$STATE/pki.tmp"
    mv "$STATE/pki.tmp" "$STATE/pki"
}

restore_pki() {
    if [ -d "$STATE/pki" ]; then
        mkdir -p "$PKI"
        cp -a "$STATE/pki/." "$PKI/"
    fi
}

# Undoes a failed kubeadm attempt so the next one starts clean; keeps $last_error.
reset_node() {
    saved_error=$last_error
    say "cleaning up the failed attempt (kubeadm reset)"
    run kubeadm reset --force || say "kubeadm reset failed; trying again anyway"
    last_error=$saved_error
}

wait_for_containerd() {
    status waiting-for-containerd
    waited=0
    while [ ! -S "$CONTAINERD_SOCK" ]; do
        waited=$((waited + 1))
        if [ "$waited" -gt 300 ]; then
            last_error="containerd's socket $CONTAINERD_SOCK did not appear in 5 minutes"
            return 1
        fi
        sleep 1
    done
}
"#;

/// The script `/usr/local/lib/piforge/kubeadm-first-boot` for a node of `role`: it waits for
/// containerd, runs `kubeadm init` (first control plane) or `kubeadm join` with
/// `/etc/piforge/kubeadm.yaml` until it succeeds, then on the first control plane applies
/// Flannel when `cni` is [`Cni::Flannel`]. After every step it writes the phase to
/// `/boot/firmware/piforge-status.txt`. It holds no secret: the token is only in the config.
pub fn first_boot_script(role: Role, cni: Cni) -> String {
    let (role_name, phase, command) = match role {
        Role::InitControlPlane => (
            "init-control-plane",
            "kubeadm-init",
            // The token is in the config; --skip-token-print keeps it out of the join command
            // kubeadm prints at the end (redact would drop that line anyway).
            r#"kubeadm init --config "$CONFIG" --skip-token-print"#,
        ),
        Role::JoinControlPlane => (
            "join-control-plane",
            "kubeadm-join",
            r#"kubeadm join --config "$CONFIG""#,
        ),
        Role::Worker => (
            "worker",
            "kubeadm-join",
            r#"kubeadm join --config "$CONFIG""#,
        ),
    };
    // Only the first control plane applies the CNI; the others get it from the cluster.
    let cni = match (role, cni) {
        (Role::InitControlPlane, Cni::Flannel) => "flannel",
        _ => "none",
    };
    format!(
        r#"#!/bin/sh
# piforge: put this node ({role_name}) into the Kubernetes cluster on first boot.
# Run by piforge-kubeadm.service until it succeeds; see /boot/firmware/piforge-status.txt.
# The bootstrap token is only in /etc/piforge/kubeadm.yaml: this script never reads it, and
# kubeadm's output is redacted before it reaches the journal or the status file.
set -eu

ROLE={role_name}
CNI={cni}
# Another root for tests; empty on a node.
R=${{PIFORGE_ROOT:-}}
CONFIG=$R/etc/piforge/kubeadm.yaml
STATUS=$R{status}
STATE=$R/var/lib/piforge
RUN=$R/run/piforge
PKI=$R/etc/kubernetes/pki
KUBELET_CONF=$R/etc/kubernetes/kubelet.conf
ADMIN_CONF=$R/etc/kubernetes/admin.conf
FLANNEL=$R{flannel}
CONTAINERD_SOCK=$R/run/containerd/containerd.sock
MAX_DELAY=300
PATH=${{R:+$R/usr/local/bin:}}/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
umask 077

{FUNCTIONS}
mkdir -p "$STATE" "$RUN"
attempt=0
last_error=
next_attempt=

if [ -f "$STATE/cni-pending" ]; then
    say "kubeadm finished on an earlier boot; applying the CNI"
elif [ -f "$STATE/kubeadm-started" ]; then
    say "an earlier attempt was cut short; cleaning up before the next one"
    reset_node
elif [ -f "$KUBELET_CONF" ]; then
    say "$KUBELET_CONF exists: this node is already in a cluster, nothing to do"
    status "done"
    exit 0
fi

if [ ! -f "$STATE/cni-pending" ]; then
    save_pki
    : >"$STATE/kubeadm-started"
    delay=10
    while :; do
        attempt=$((attempt + 1))
        next_attempt=
        if wait_for_containerd; then
            restore_pki
            status {phase}
            say "attempt $attempt: {verb}"
            if run {command}; then
                break
            fi
            next_attempt="in ${{delay}}s"
            status failed
            reset_node
        else
            next_attempt="in ${{delay}}s"
            status failed
        fi
        say "attempt $attempt failed: $last_error; next attempt in ${{delay}}s"
        back_off
    done
    last_error=
    next_attempt=
    if [ "$CNI" = flannel ]; then : >"$STATE/cni-pending"; fi
    rm -f "$STATE/kubeadm-started"
fi

if [ -f "$STATE/cni-pending" ]; then
    status cni
    delay=10
    until run kubectl --kubeconfig "$ADMIN_CONF" apply -f "$FLANNEL"; do
        next_attempt="in ${{delay}}s"
        status cni
        say "applying $FLANNEL failed: $last_error; next attempt in ${{delay}}s"
        back_off
    done
    rm -f "$STATE/cni-pending"
fi

rm -rf "$STATE/pki"
last_error=
next_attempt=
status "done"
say "done: this node is in the cluster"
"#,
        verb = command.split(" --").next().unwrap_or(command),
        status = STATUS_PATH,
        flannel = FLANNEL_MANIFEST_PATH,
    )
}
