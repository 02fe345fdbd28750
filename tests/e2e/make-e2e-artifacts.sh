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
#   - the release's container images (kubeadm's list, flannel's, kube-vip's) under their
#     real references, as OCI image layouts in OUTDIR/images/ (make-e2e-images.py): real
#     linux/arm64 images holding Debian's static busybox (DEBDIR), which the stand-in's real
#     containerd imports on first boot.
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
# shellcheck disable=SC2046 # one word per plugin file name (no spaces)
(cd "$work/cni" && tarit . "$cni" $(ls | sed 's|^|./|'))


# The release's container images, under their real references, as OCI image layouts in
# images/ (make-e2e-images.py: busybox-static from DEBDIR in each), for --artifacts.
bb=$(ls "$debs"/busybox-static_*_arm64.deb 2>/dev/null | head -n 1)
[[ -n $bb ]] || { echo "make-e2e-artifacts.sh: no busybox-static_*_arm64.deb in $debs" >&2; exit 1; }
python3 "$here/make-e2e-images.py" "$out" "$bb" "$here/../../artifacts.toml" "$k8s" >"$work/images.txt" ||
	{ echo "make-e2e-artifacts.sh: make-e2e-images.py failed" >&2; exit 1; }

cat >"$out/kubeadm" <<'SH'
#!/bin/sh
# piforge e2e STAND-IN for kubeadm (Debian has no kubeadm package; a real `kubeadm init`
# needs the real binary). Records its arguments and its --config file in
# /var/log/piforge-e2e/ (kubeadm.log, and calls.log shared with the kubectl stand-in, in
# order), and:
# - for `init`/`join`: notes what kubeadm's preflight would pull (an image of the card's
#   /etc/piforge/images.list containerd's k8s.io namespace lacks; the real kubeadm pulls
#   those with imagePullPolicy IfNotPresent), writes the kubeconfig files the first-boot
#   script looks for;
# - for `kubeconfig user` (the reimage cleanup's short-lived credentials): a real client
#   certificate for --client-name and --org, signed with the card's CA by openssl, in a
#   kubeconfig on standard output, as kubeadm prints it.
log=/var/log/piforge-e2e
mkdir -p "$log"
# printf, not echo: dash's echo would turn a "\n" in an argument into a line break.
printf '%s kubeadm %s\n' "$(date -u +%FT%TZ)" "$*" >>"$log/kubeadm.log"
printf 'kubeadm %s\n' "$*" >>"$log/calls.log"
cfg= prev= client= org= server=
for a in "$@"; do
	[ "$prev" = --config ] && cfg=$a
	[ "$prev" = --client-name ] && client=$a
	[ "$prev" = --org ] && org=$a
	case $a in --config=*) cfg=${a#--config=} ;; esac
	prev=$a
done
if [ "$1" = kubeconfig ] && [ "$2" = user ]; then
	pki=$(sed -n 's/^certificatesDir: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$cfg" 2>/dev/null)
	pki=${pki:-/etc/kubernetes/pki}
	server=$(sed -n 's/^controlPlaneEndpoint: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$cfg" 2>/dev/null)
	t=$(mktemp -d) || exit 1
	openssl ecparam -name prime256v1 -genkey -noout -out "$t/key" 2>/dev/null &&
		openssl req -new -key "$t/key" -subj "/O=$org/CN=$client" -out "$t/csr" 2>/dev/null &&
		openssl x509 -req -in "$t/csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -days 1 \
			-set_serial 1 -out "$t/crt" 2>/dev/null || {
		echo "stand-in kubeadm: cannot make the client certificate with $pki/ca.key" >&2
		rm -rf "$t"
		exit 1
	}
	cat <<EOF
apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
    server: https://$server
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: $client
  name: $client@kubernetes
current-context: $client@kubernetes
users:
- name: $client
  user:
    client-certificate-data: $(base64 -w0 "$t/crt")
    client-key-data: $(base64 -w0 "$t/key")
EOF
	rm -rf "$t"
	exit 0
fi
if [ -n "$cfg" ]; then cp "$cfg" "$log/kubeadm-$1-config.yaml"; fi
# kube-vip's static pod as kubeadm finds it: the kubeconfig it mounts must be super-admin.conf
# at init (Kubernetes 1.29+, kube-vip issue #684) and admin.conf on a joining control plane.
kv=/etc/kubernetes/manifests/kube-vip.yaml
if [ -f "$kv" ]; then
	echo "kube-vip kubeconfig at $1: $(sed -n 's/^ *path: //p' "$kv" | tr '\n' ' ')" >>"$log/kubeadm.log"
fi
# What preflight would pull: the card's images containerd does not have.
images_missing() {
	have=$(ctr -n k8s.io images ls -q 2>/dev/null)
	n=0 miss=
	while read -r file ref _; do
		case $file in '' | '#'*) continue ;; esac
		n=$((n + 1))
		printf '%s\n' "$have" | grep -qxF "$ref" || miss="$miss $ref"
	done </etc/piforge/images.list
	echo "images at $1: $n in the card's list, missing:${miss:- none}" >>"$log/kubeadm.log"
}
case $1 in init | join) [ -f /etc/piforge/images.list ] && images_missing "$1" ;; esac
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
# piforge e2e STAND-IN for kubectl (no Debian package): records its arguments (kubectl.log,
# and calls.log shared with the kubeadm stand-in, in order) and the manifest of
# `apply -f FILE`; answers the calls a reimaged control plane's first-boot script makes to
# remove its old self, as a cluster that still holds the old card would:
#   get node NAME -o jsonpath=...Ready...   "False" (the old card is off: NotReady)
#   get pods -l component=etcd ...          the etcd pods of this node and of e2e-cp-2
#   exec POD -- etcdctl ... member list     the old member (this node's name and address,
#                                           from /etc/piforge/rejoin) and e2e-cp-2's
#   exec POD -- etcdctl --endpoints URL endpoint health   fails for the old member's URL
#   exec POD -- etcdctl ... member remove ID, delete node NAME   succeed
# With --kubeconfig, the client certificate in it is checked against the card's CA (openssl)
# and its subject recorded, once per file.
log=/var/log/piforge-e2e
mkdir -p "$log"
# printf, not echo: dash's echo would turn the "\n" of a jsonpath into a line break.
printf '%s kubectl %s\n' "$(date -u +%FT%TZ)" "$*" >>"$log/kubectl.log"
printf 'kubectl %s\n' "$*" >>"$log/calls.log"
prev= kubeconfig= endpoint= args=
for a in "$@"; do
	if [ "$prev" = -f ] && [ -f "$a" ]; then cp "$a" "$log/kubectl-applied.yaml"; fi
	[ "$prev" = --kubeconfig ] && kubeconfig=$a
	[ "$prev" = --endpoints ] && endpoint=$a
	prev=$a
done
args=" $* "
if [ -n "$kubeconfig" ] && grep -q 'client-certificate-data:' "$kubeconfig" 2>/dev/null &&
	! grep -qxF "$kubeconfig" "$log/kubectl-credentials-checked" 2>/dev/null; then
	echo "$kubeconfig" >>"$log/kubectl-credentials-checked"
	crt=$(mktemp)
	sed -n 's/^ *client-certificate-data: //p' "$kubeconfig" | base64 -d >"$crt" 2>/dev/null
	v=$(openssl verify -CAfile /etc/kubernetes/pki/ca.crt "$crt" 2>&1 | tail -n 1)
	s=$(openssl x509 -in "$crt" -noout -subject -nameopt compat 2>/dev/null)
	echo "credentials $kubeconfig: $s; verify: $v; mode $(stat -c %a "$kubeconfig")" >>"$log/kubectl.log"
	rm -f "$crt"
fi
node=$(hostname)
address=$(sed -n 's/^address=//p' /etc/piforge/rejoin 2>/dev/null | head -n 1)
case $args in
*" get node "*"Ready"*) printf 'False' ;;
*" get pods "*"component=etcd"*) printf 'etcd-%s %s\netcd-e2e-cp-2 e2e-cp-2\n' "$node" "$node" ;;
*" exec "*" etcdctl "*" member list "*)
	echo "8e9e05c52164694d, started, $node, https://$address:2380, https://$address:2379, false"
	echo "2d1b6a4ac5ce7f0b, started, e2e-cp-2, https://10.0.2.16:2380, https://10.0.2.16:2379, false"
	;;
*" exec "*" etcdctl "*" endpoint health "*)
	if [ "$endpoint" = "https://$address:2379" ]; then
		echo "$endpoint is unhealthy: failed to commit proposal: context deadline exceeded" >&2
		exit 1
	fi
	echo "$endpoint is healthy: successfully committed proposal"
	;;
*" exec "*" etcdctl "*" member remove "*) echo "Member removed from cluster" ;;
*" delete node "*) echo "node deleted" ;;
esac
exit 0
SH
chmod 0755 "$out/kubeadm" "$out/kubelet" "$out/kubectl"
touch -d @1704067200 "$out"/*
