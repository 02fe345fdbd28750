#!/bin/bash
# piforge e2e report, installed in the stand-in image as /usr/local/lib/piforge-e2e/report and
# run by piforge-e2e-report.service only when the kernel command line holds
# `piforge.e2e_report`. Waits (bounded) for cloud-init and piforge's first-boot unit, prints
# `E2E key=value` lines on the serial console (and keeps them in
# /var/log/piforge-e2e/report.txt for reading from the image afterwards), then powers off.
export LC_ALL=C PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p /var/log/piforge-e2e
REPORT=/var/log/piforge-e2e/report.txt
: >"$REPORT"
e() { echo "E2E $*" | tee -a "$REPORT"; }
one() { tr '\n' ' ' | sed 's/ *$//'; }
STATUS=/boot/firmware/piforge-status.txt

e "begin uptime_s=$(cut -d. -f1 /proc/uptime)"
# cloud-init: at most 10 minutes.
timeout 600 cloud-init status --wait >/dev/null 2>&1
e "cloud_init_wait_done_s=$(cut -d. -f1 /proc/uptime)"
# piforge's first-boot unit: at most 5 minutes for phase "done".
for _ in $(seq 300); do
	grep -q '^phase: done' "$STATUS" 2>/dev/null && break
	sleep 1
done
e "kubeadm_wait_done_s=$(cut -d. -f1 /proc/uptime)"

e "hostname=$(hostname)"
e "cloud_init_status=$(cloud-init status 2>/dev/null | sed -n 's/^status: //p')"
python3 - <<'PY' | while IFS= read -r l; do e "$l"; done
import json
try:
    r = json.load(open("/run/cloud-init/result.json"))["v1"]
    print("cloud_init_datasource=" + str(r.get("datasource")))
    print("cloud_init_errors=%d" % len(r.get("errors", [])))
    for x in r.get("errors", []):
        print("cloud_init_error=" + str(x).replace("\n", " ")[:300])
    rec = r.get("recoverable_errors", {}) or {}
    print("cloud_init_recoverable=%d" % sum(len(v) for v in rec.values()))
    for k, v in rec.items():
        for x in v:
            print("cloud_init_recoverable_%s=%s" % (k, str(x).replace("\n", " ")[:300]))
except Exception as ex:
    print("cloud_init_result_error=" + str(ex))
PY
e "eth0_inet=$(ip -4 -o addr show dev eth0 2>/dev/null | awk '{print $4}' | one)"
e "eth0_dynamic=$(ip -4 -o addr show dev eth0 2>/dev/null | grep -c dynamic)"
e "default_route=$(ip -4 route show default 2>/dev/null | head -n 1)"
e "networkd_files=$(find /etc/systemd/network/ /run/systemd/network/ -name '*.network' 2>/dev/null | wc -l)"
e "containerd_active=$(systemctl is-active containerd.service)"
pid=$(systemctl show -p MainPID --value containerd.service)
e "containerd_exe=$(readlink "/proc/$pid/exe" 2>/dev/null)"
e "containerd_systemd_cgroup=$(grep -c '^[[:space:]]*SystemdCgroup = true' /etc/containerd/config.toml 2>/dev/null)"
e "ctr_server_version=$(timeout 60 ctr version 2>/dev/null | awk '/^Server:/{s=1} s && $1=="Version:" {print $2; exit}')"
e "runc_version=$(runc --version 2>/dev/null | head -n 1)"
e "kubelet_enabled=$(systemctl is-enabled kubelet.service 2>/dev/null)"
e "kubelet_active=$(systemctl is-active kubelet.service)"
e "kubeadm_unit_result=$(systemctl show -p Result --value piforge-kubeadm.service)"
e "kubeadm_phase=$(sed -n 's/^phase: //p' "$STATUS" 2>/dev/null)"
e "kubeadm_calls=$(grep -c ' kubeadm ' /var/log/piforge-e2e/kubeadm.log 2>/dev/null)"
while IFS= read -r l; do e "kubeadm_call=${l#* kubeadm }"; done < <(grep ' kubeadm ' /var/log/piforge-e2e/kubeadm.log 2>/dev/null)
e "kubectl_calls=$(grep -c ' kubectl ' /var/log/piforge-e2e/kubectl.log 2>/dev/null)"
e "modules_loaded=$(lsmod | awk '$1=="overlay"||$1=="br_netfilter"{print $1}' | sort | one)"
e "ip_forward=$(sysctl -n net.ipv4.ip_forward)"
e "bridge_nf_call_iptables=$(sysctl -n net.bridge.bridge-nf-call-iptables 2>/dev/null)"
e "swap_active=$(tail -n +2 /proc/swaps | wc -l)"
e "cgroup_controllers=$(cat /sys/fs/cgroup/cgroup.controllers)"
e "machine_id=$(cat /etc/machine-id)"
e "machine_id_log=$(journalctl -b -o cat _PID=1 2>/dev/null | grep -i -m1 'machine.id' )"
e "status_file=$(test -f "$STATUS" && echo present || echo missing)"
e "boot_firmware_mounted=$(findmnt -n -o SOURCE /boot/firmware)"
e "failed_units=$(systemctl --failed --plain --no-legend 2>/dev/null | awk '{print $1}' | one)"
e "cmdline=$(cat /proc/cmdline)"
# The package step: the stand-in lacks iptables; piforge-packages.service installs it from the
# .debs in the card (dpkg), with no network; apt must not have run.
e "packages_status=$(cat /var/lib/piforge/packages-status 2>/dev/null)"
e "packages_list=$(sed 's/#.*//' /etc/piforge/first-boot-packages 2>/dev/null | one)"
e "packages_card_debs=$(sed 's/#.*//' /etc/piforge/first-boot-debs 2>/dev/null | awk 'NF { print $1 }' | one)"
e "packages_debs_left=$(find /var/lib/piforge/debs -name '*.deb' 2>/dev/null | wc -l)"
e "packages_unit_result=$(systemctl show -p Result --value piforge-packages.service)"
e "packages_installed=$(dpkg-query -W -f='${Package}=${db:Status-Abbrev}\n' iptables conntrack socat ebtables 2>/dev/null | tr -d ' ' | sort | one)"
e "packages_from_card=$(journalctl -b -o cat -u piforge-packages.service 2>/dev/null | grep -c 'done (from the card)')"
e "packages_apt_lines=$(journalctl -b -o cat -u piforge-packages.service 2>/dev/null | grep -c -i -E 'apt-get|falling back')"
e "apt_lists=$(find /var/lib/apt/lists -maxdepth 1 -type f ! -name lock 2>/dev/null | wc -l)"
e "dpkg_log_iptables=$(grep -c ' install iptables:' /var/log/dpkg.log 2>/dev/null)"
e "iptables_version=$(iptables --version 2>/dev/null)"
# Container images: piforge-images.service imported the card's archives into containerd's
# k8s.io namespace with the pinned label; every one and its labels, as ctr lists them.
e "images_unit_result=$(systemctl show -p Result --value piforge-images.service)"
e "images_status=$(cat /var/lib/piforge/images-status 2>/dev/null)"
e "images_import_seconds=$(cat /var/lib/piforge/images-import-seconds 2>/dev/null)"
e "images_archives_left=$(find /var/lib/piforge/images -name '*.tar' 2>/dev/null | wc -l)"
e "images_card_list=$(sed 's/#.*//' /etc/piforge/images.list 2>/dev/null | awk 'NF { print $2 }' | sort | one)"
ctr -n k8s.io images ls 2>/dev/null | awk 'NR > 1 { print $1, $NF }' | while IFS= read -r l; do e "image=$l"; done
e "images_unit_before_kubeadm=$(systemctl show -p ActiveEnterTimestampMonotonic --value piforge-images.service) $(systemctl show -p ExecMainStartTimestampMonotonic --value piforge-kubeadm.service)"
e "containerd_pulls=$(journalctl -b -o cat -u containerd.service 2>/dev/null | grep -c -E 'PullImage|fetch failed|pulling')"
# Every kubeadm and kubectl call, in order (the stand-ins' shared log).
while IFS= read -r l; do e "call=$l"; done </var/log/piforge-e2e/calls.log
e "rejoin_credentials_left=$(find /run/piforge -name 'rejoin*' 2>/dev/null | wc -l)"
e "status_replaces=$(sed -n 's/^replaces: //p' "$STATUS" 2>/dev/null)"
while IFS= read -r l; do e "kubectl_note=$l"; done < <(grep -v ' kubectl ' /var/log/piforge-e2e/kubectl.log 2>/dev/null)
# Swap: the stand-in's rpi-swap makes dev-zram0.swap unless Mechanism=none.
e "swap_units=$(systemctl list-units --all --type swap --plain --no-legend 2>/dev/null | awk '{print $1}' | one)"
# The root filesystem grown on first boot (the stand-in's resize unit).
e "resize_unit_result=$(systemctl show -p Result --value piforge-e2e-resize.service)"
e "resize_unit_active=$(systemctl is-active piforge-e2e-resize.service)"
e "root_size_kb=$(df -Pk / | awk 'NR == 2 { print $2 }')"
e "cmdline_txt=$(tr -d '\r' </boot/firmware/cmdline.txt 2>/dev/null | head -n 1)"
# sshd, from inside (run.sh compares the key from outside too).
e "ssh_enabled=$(systemctl is-enabled ssh.service 2>/dev/null)"
e "ssh_active=$(systemctl is-active ssh.service)"
e "ssh_listen=$(ss -Hltn 'sport = :22' 2>/dev/null | awk '{print $4}' | sort | one)"
e "ssh_fp=$(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub 2>/dev/null | awk '{print $2}')"
# kube-vip's static pod: the kubeconfig it mounts (hostPath) now.
KV=/etc/kubernetes/manifests/kube-vip.yaml
e "kube_vip_manifest=$(test -f "$KV" && echo present || echo absent)"
e "kube_vip_kubeconfig=$(sed -n 's/^ *path: //p' "$KV" 2>/dev/null | one)"
while IFS= read -r l; do e "kubeadm_note=$l"; done < <(grep -v ' kubeadm ' /var/log/piforge-e2e/kubeadm.log 2>/dev/null)
# The host runs ssh-keyscan through the forwarded port from the start of the boot until sshd
# answers, then says so on guest port 2222 (its second forwarded port). sshd does not log a
# keyscan's connection under restrict=on (measured), so that message is what this waits for
# before the power-off, at most 240 s (run.sh fails the boot's keyscan checks when it got no
# answer). Session 4's wait of 20 s for sshd's log was too short on some machine (CI).
t_wait=$(cut -d. -f1 /proc/uptime)
told=$(timeout 250 python3 - <<'PY' 2>/dev/null
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 2222))
s.listen(1)
s.settimeout(240)
try:
    while True:
        c, _ = s.accept()
        c.settimeout(5)
        try:
            line = c.recv(64)
        except OSError:
            line = b""
        if line.startswith(b"keyscan-done"):
            c.sendall(b"ok\n")
            c.close()
            print("yes")
            break
        c.close()
except socket.timeout:
    print("no")
PY
)
e "host_keyscan_done=${told:-no} after $(($(cut -d. -f1 /proc/uptime) - t_wait)) s"
e "ssh_host_connection=$(journalctl -b -o cat -u ssh.service 2>/dev/null | grep -c '10\.0\.2\.2')"
e "end uptime_s=$(cut -d. -f1 /proc/uptime)"
sync
systemctl --no-block poweroff
