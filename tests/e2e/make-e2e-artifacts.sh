#!/usr/bin/env bash
# tests/e2e/make-e2e-artifacts.sh OUTDIR KUBERNETES_VERSION DEBDIR
#
# Release artifacts for `make e2e`, named and laid out exactly like the upstream arm64 release
# files (tests/fixtures/make-artifacts.sh makes the names), holding:
#   - REAL arm64 binaries repacked from Debian's packages in DEBDIR (built by
#     build-standin.sh): containerd, containerd-shim-runc-v2, ctr -> containerd-static-*.tar.gz
#     (bin/); runc -> runc.arm64; containernetworking-plugins -> cni-plugins-*.tgz (./bridge ...)
#   - STAND-IN scripts for kubeadm, kubelet and kubectl, which have no Debian package: they
#     record their arguments and configuration files in /var/log/piforge-e2e/ on the node.
#     A real `kubeadm init` needs the real binaries (`piforge fetch`); the e2e test proves
#     that piforge's first-boot unit calls kubeadm as designed, not that a cluster forms.
#   - crictl and the flannel manifest stay make-artifacts.sh's stand-ins.
set -euo pipefail
out=$1 k8s=$2 debs=$3
here=$(dirname "$(readlink -f "$0")")
bash "$here/../fixtures/make-artifacts.sh" "$out" "$k8s"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for p in containerd runc containernetworking-plugins; do
	deb=$(ls "$debs"/${p}_*_arm64.deb 2>/dev/null | head -n 1)
	[[ -n $deb ]] || { echo "make-e2e-artifacts.sh: no ${p}_*_arm64.deb in $debs" >&2; exit 1; }
	dpkg-deb -x "$deb" "$work/x"
done
x=$work/x
tarit() { tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@1704067200 -C "$1" -cf - "${@:3}" | gzip -n >"$2"; }
# containerd-static-<v>-linux-arm64.tar.gz with bin/
ctd=$(ls "$out"/containerd-static-*-linux-arm64.tar.gz)
mkdir -p "$work/containerd/bin"
for b in containerd containerd-shim-runc-v2 ctr; do install -m 0755 "$x/usr/bin/$b" "$work/containerd/bin/$b"; done
tarit "$work/containerd" "$ctd" bin
# runc.arm64
install -m 0755 "$x/usr/sbin/runc" "$out/runc.arm64"
# cni-plugins-linux-arm64-v<v>.tgz with ./bridge ...
cni=$(ls "$out"/cni-plugins-linux-arm64-v*.tgz)
mkdir -p "$work/cni"
# Only the plugins the upstream tarball has (Debian adds its own, such as cni-bridge-fp,
# which the catalog's member list rightly refuses).
for b in bandwidth bridge dhcp dummy firewall host-device host-local ipvlan loopback macvlan \
	portmap ptp sbr static tap tuning vlan vrf; do
	[[ -f $x/usr/lib/cni/$b ]] && install -m 0755 "$x/usr/lib/cni/$b" "$work/cni/$b"
done
[[ -f $work/cni/bridge && -f $work/cni/host-local && -f $work/cni/loopback ]] ||
	{ echo "make-e2e-artifacts.sh: Debian's CNI plugins lack bridge/host-local/loopback" >&2; exit 1; }
(cd "$work/cni" && tarit . "$cni" $(ls | sed 's|^|./|'))

cat >"$out/kubeadm" <<'SH'
#!/bin/sh
# piforge e2e STAND-IN for kubeadm (Debian has no kubeadm package; a real `kubeadm init`
# needs the real binary). Records its arguments and its --config file in
# /var/log/piforge-e2e/, and for `init`/`join` writes the kubeconfig files the first-boot
# script looks for.
log=/var/log/piforge-e2e
mkdir -p "$log"
echo "$(date -u +%FT%TZ) kubeadm $*" >>"$log/kubeadm.log"
cfg= prev=
for a in "$@"; do
	[ "$prev" = --config ] && cfg=$a
	case $a in --config=*) cfg=${a#--config=} ;; esac
	prev=$a
done
if [ -n "$cfg" ]; then cp "$cfg" "$log/kubeadm-$1-config.yaml"; fi
# kube-vip's static pod as kubeadm finds it: the kubeconfig it mounts must be super-admin.conf
# at init (Kubernetes 1.29+, kube-vip issue #684) and admin.conf on a joining control plane.
kv=/etc/kubernetes/manifests/kube-vip.yaml
if [ -f "$kv" ]; then
	echo "kube-vip kubeconfig at $1: $(sed -n 's/^ *path: //p' "$kv" | tr '\n' ' ')" >>"$log/kubeadm.log"
fi
case $1 in
init)
	[ -f /etc/kubernetes/pki/ca.key ] && echo "ca.key present at init" >>"$log/kubeadm.log"
	[ -S /run/containerd/containerd.sock ] && echo "containerd socket present at init" >>"$log/kubeadm.log"
	mkdir -p /etc/kubernetes
	echo "# piforge e2e stand-in: written by the kubeadm stand-in (init)" >/etc/kubernetes/admin.conf
	echo "# piforge e2e stand-in: written by the kubeadm stand-in (init)" >/etc/kubernetes/kubelet.conf
	echo "stand-in kubeadm: init recorded (no cluster was formed)"
	;;
join)
	[ -S /run/containerd/containerd.sock ] && echo "containerd socket present at join" >>"$log/kubeadm.log"
	mkdir -p /etc/kubernetes
	echo "# piforge e2e stand-in: written by the kubeadm stand-in (join)" >/etc/kubernetes/kubelet.conf
	# A JoinConfiguration with a controlPlane section is `kubeadm join --control-plane`, which
	# writes admin.conf too.
	if [ -n "$cfg" ] && grep -q '^controlPlane:' "$cfg"; then
		echo "join as a control plane (controlPlane in the config)" >>"$log/kubeadm.log"
		[ -f /etc/kubernetes/pki/ca.key ] && echo "ca.key present at join" >>"$log/kubeadm.log"
		echo "# piforge e2e stand-in: written by the kubeadm stand-in (join --control-plane)" >/etc/kubernetes/admin.conf
	fi
	echo "stand-in kubeadm: join recorded (no cluster was joined)"
	;;
version) echo "kubeadm version: piforge e2e stand-in" ;;
esac
exit 0
SH
cat >"$out/kubelet" <<'SH'
#!/bin/sh
# piforge e2e STAND-IN for kubelet (no Debian package): records its arguments, then stays up
# so kubelet.service is active.
mkdir -p /var/log/piforge-e2e
echo "$(date -u +%FT%TZ) kubelet $*" >>/var/log/piforge-e2e/kubelet.log
exec sleep infinity
SH
cat >"$out/kubectl" <<'SH'
#!/bin/sh
# piforge e2e STAND-IN for kubectl (no Debian package): records its arguments and the
# manifest of `apply -f FILE`.
log=/var/log/piforge-e2e
mkdir -p "$log"
echo "$(date -u +%FT%TZ) kubectl $*" >>"$log/kubectl.log"
prev=
for a in "$@"; do
	if [ "$prev" = -f ] && [ -f "$a" ]; then cp "$a" "$log/kubectl-applied.yaml"; fi
	prev=$a
done
exit 0
SH
chmod 0755 "$out/kubeadm" "$out/kubelet" "$out/kubectl"
touch -d @1704067200 "$out"/*
