#!/usr/bin/env bash
# tests/e2e/run.sh: `make e2e`. Boots the node images piforge builds, under QEMU (TCG), and
# checks that each node comes up configured, offline.
#
#  1. tests/e2e/build-standin.sh: a bootable stand-in for Raspberry Pi OS trixie arm64 Lite
#     (cached in $PIFORGE_E2E_CACHE, default ~/.cache/piforge-e2e), with Debian's apt source
#     and without iptables, and a copy of the part of that repository piforge needs.
#  2. tests/e2e/make-e2e-artifacts.sh: release artifacts with REAL arm64 containerd, runc and CNI
#     plugins (Debian's, repacked into the upstream layout), the release's container images
#     under their real references (OCI layouts of real arm64 images holding Debian's static
#     busybox), and STAND-IN kubeadm, kubelet and kubectl scripts that record how they were
#     called (and answer what a reimaged control plane asks the cluster): Debian packages no
#     kubeadm, so this test proves piforge's first-boot unit runs `kubeadm init`/`join` with
#     the generated configuration; it does not form a real cluster (that needs `piforge fetch`).
#  3. piforge fetch of a spec with a VIP (kube-vip), two control planes and a DHCP worker: the
#     release files and images from the artifacts directory, the OS packages (iptables, which
#     the stand-in lacks) from the stand-in's own apt source through --mirror, served on
#     127.0.0.1 from the cached copy (InRelease as Debian signed it). Then piforge build, and
#     `build --node e2e-cp-1` again, as after losing that card: with e2e-cp-2 in the spec and
#     cluster-state saying the cluster exists, the reimaged card must join as a control plane.
#     `piforge check` judges every card; e2e-cp-2 and the worker are checked in their images,
#     not booted.
#  4. Two boots, one after the other: e2e-cp-1 (kubeadm init, the VIP's kube-vip with
#     super-admin.conf), then the reimaged e2e-cp-1 (the old node's etcd member and Node
#     removed through the stand-in kubectl with a short-lived certificate, then kubeadm join
#     with a controlPlane section). Each image (a sparse copy, 1 GiB larger, like a bigger SD
#     card: the stand-in grows its root into it on first boot) boots under
#     qemu-system-aarch64 -M virt, with the kernel, initrd and command line from its own boot
#     partition plus `piforge.e2e_report`, which starts the stand-in's report unit: it prints
#     `E2E key=value` lines and powers off. The network is QEMU user networking with
#     restrict=on (no packet leaves for the host or beyond), only the guest's port 22 forwarded
#     to the host, where ssh-keyscan reads the host key sshd serves; every packet is recorded
#     (filter-dump) and read afterwards (pcap-summary.py).
#  5. Assertions on the report, the keyscan, the packet record and the image afterwards
#     (debugfs, mtools, e2fsck -fn).
#
# Exit status: 0 all passed, or SKIPPED (the stand-in is not cached and a package registry is
# unreachable, so it cannot be built); 1 a failure. A boot that times out is retried once; the
# last 60 lines of the serial log of a failing boot are printed, and the logs kept in $OUT/logs.
set -uo pipefail
export LC_ALL=C TZ=UTC PATH="$PATH:/usr/sbin:/sbin" MTOOLS_SKIP_CHECK=1
HERE=$(dirname "$(readlink -f "$0")")
REPO=$(readlink -f "$HERE/../..")
CACHE=${PIFORGE_E2E_CACHE:-$HOME/.cache/piforge-e2e}
OUT=${PIFORGE_E2E_OUT:-$REPO/target/e2e}
# A boot on a loaded machine (2 shared cores, TCG) takes minutes; the kernel command line also
# raises systemd's device timeout (90 s by default) so a slow disk does not mean emergency mode.
BOOT_TIMEOUT=${PIFORGE_E2E_BOOT_TIMEOUT:-1200}
DEVICE_TIMEOUT=600
K8S=1.34.11
PIFORGE=$REPO/target/release/piforge
T0=$SECONDS
FAILS=0
PASSES=0
TIMES=()
FAILED=()

say() { echo "e2e: $*"; }
tick() {
	TIMES+=("$1=$2")
	say "time $1: $2 s"
}
die() {
	say "ERROR: $*"
	exit 1
}
pass() {
	PASSES=$((PASSES + 1))
	say "PASS $*"
}
fail() {
	say "FAIL $*"
	FAILS=$((FAILS + 1))
	FAILED+=("$*")
}
expect() { # expect NODE WHAT ACTUAL EXPECTED-REGEX
	if [[ $3 =~ $4 ]]; then pass "$1: $2 ($3)"; else fail "$1: $2: got '$3', want /$4/"; fi
}
# lit TEXT: TEXT as an extended regex that matches it literally (a host key's SHA256
# fingerprint is base64: its `+` is a quantifier in a regex, and failed CI once, at random).
lit() { sed 's/[][\\.^$*+?(){}|]/\\&/g' <<<"$1"; }

# ---------------------------------------------------------------------------
# 1. The stand-in (infrastructure: SKIPPED only when it is missing and cannot be built).
t=$SECONDS
bash "$HERE/build-standin.sh" "$CACHE"
rc=$?
if ((rc != 0)); then
	if [[ -f $CACHE/standin-trixie.img.zst && -f $CACHE/artifact-debs/.done && -f $CACHE/apt-mirror/.done ]]; then
		say "WARNING: the stand-in could not be rebuilt (exit $rc); using the cached one"
	elif ((rc == 75)); then
		echo "=================================================================="
		echo "e2e SKIPPED: the stand-in image is not cached in $CACHE and could not"
		echo "be built (a package registry is unreachable). Nothing was tested."
		echo "=================================================================="
		exit 0
	else
		die "build-standin.sh failed (exit $rc)"
	fi
fi
tick standin $((SECONDS - t))

# ---------------------------------------------------------------------------
# 2-3. piforge, the artifacts, the spec, fetch, the builds.
t=$SECONDS
(cd "$REPO" && cargo build --release -q) || die "cargo build failed"
tick cargo_build $((SECONDS - t))

rm -rf "$OUT" && mkdir -p "$OUT/logs" "$OUT/run" "$OUT/spec/profiles"
t=$SECONDS
zstd -q -d -f "$CACHE/standin-trixie.img.zst" -o "$OUT/standin-trixie.img" || die "zstd -d failed"
tick decompress $((SECONDS - t))
bash "$HERE/make-e2e-artifacts.sh" "$OUT/artifacts" "$K8S" "$CACHE/artifact-debs" || die "make-e2e-artifacts.sh failed"

S=$OUT/spec
cat >"$S/profiles/e2e.yaml" <<'EOF'
#cloud-config
write_files:
  - path: /etc/piforge-e2e-profile
    permissions: "0644"
    content: |
      written by the e2e node profile
runcmd:
  - [sh, -c, 'mkdir -p /var/log/piforge-e2e && echo "runcmd ran on $(hostname)" > /var/log/piforge-e2e/profile-runcmd']
EOF
# A real key pair of the test's own (piforge refuses a key that is not a whole one).
rm -f "$S/e2e_key" "$S/e2e_key.pub"
ssh-keygen -q -t ed25519 -N '' -C e2e@piforge -f "$S/e2e_key" || die "ssh-keygen failed"
cat >"$S/cluster.yaml" <<EOF
name: e2e
image:
  source: $OUT/standin-trixie.img
kubernetes:
  version: "$K8S"
  # A VIP served by kube-vip (static pod on every control plane); the endpoint is 10.0.2.9:6443.
  vip: 10.0.2.9
  pod_subnet: 10.244.0.0/16
  service_subnet: 10.96.0.0/12
  token_ttl: 24h
  cni: flannel
# QEMU user-mode networking: 10.0.2.0/24, gateway 10.0.2.2, DNS 10.0.2.3.
network:
  interface: eth0
  gateway: 10.0.2.2
  dns: [10.0.2.3]
user: pi
ssh_authorized_keys:
  - $(cat "$S/e2e_key.pub")
timezone: Etc/UTC
nodes:
  - name: e2e-cp-1
    role: control-plane
    address: 10.0.2.15/24
    profile: profiles/e2e.yaml
  # Built, not booted: with it in the spec, a rebuilt e2e-cp-1 joins instead of running init.
  - name: e2e-cp-2
    role: control-plane
    address: 10.0.2.16/24
  # Built and checked in its image, not booted.
  - name: e2e-w-1
    role: worker
    profile: profiles/e2e.yaml
EOF

# The stand-in's apt source (http://apt.e2e.piforge.invalid/debian trixie main) as piforge's
# --mirror serves it: <mirror>/apt.e2e.piforge.invalid/debian/..., from the signed repository
# build-standin.sh made (apt-mirror.py), on 127.0.0.1 by Python's http.server; its log shows
# what was fetched.
python3 -c '
import functools, http.server, os, sys
h = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), h)
open(sys.argv[2] + ".tmp", "w").write(str(s.server_address[1]))
os.rename(sys.argv[2] + ".tmp", sys.argv[2])
s.serve_forever()' "$CACHE/apt-mirror/www" "$OUT/run/mirror.port" 2>"$OUT/logs/apt-mirror-http.log" &
MIRROR_PID=$!
trap 'kill "$MIRROR_PID" 2>/dev/null' EXIT
for _ in $(seq 50); do [[ -s $OUT/run/mirror.port ]] && break; sleep 0.2; done
MIRROR_PORT=$(cat "$OUT/run/mirror.port" 2>/dev/null)
[[ -n $MIRROR_PORT ]] || die "the apt mirror's HTTP server did not start (see $OUT/logs/apt-mirror-http.log)"

t=$SECONDS
PIFORGE_CACHE=$OUT/cache "$PIFORGE" fetch --spec "$S/cluster.yaml" --artifacts "$OUT/artifacts" --allow-unpinned \
	--mirror "http://127.0.0.1:$MIRROR_PORT" --cache-dir "$OUT/cache" >"$OUT/logs/fetch.txt" 2>&1 ||
	{ cat "$OUT/logs/fetch.txt"; die "piforge fetch failed"; }
tick piforge_fetch $((SECONDS - t))
kill "$MIRROR_PID" 2>/dev/null
expect fetch "InRelease fetched from the stand-in's apt source (through the mirror)" \
	"$(grep -c '"GET /apt\.e2e\.piforge\.invalid/debian/dists/trixie/InRelease HTTP/1\.[01]" 200' "$OUT/logs/apt-mirror-http.log")" '^[1-9]'
expect fetch "iptables .deb fetched" \
	"$(grep -c '"GET /apt\.e2e\.piforge\.invalid/debian/pool/main/i/iptables/iptables_[^ ]*_arm64\.deb HTTP/1\.[01]" 200' "$OUT/logs/apt-mirror-http.log")" '^1$'
expect fetch "the lock pins iptables as a [[deb]]" "$(grep -c '^name = "iptables"$' "$S/piforge.lock")" '^1$'
expect fetch "the lock pins the 10 images (kubeadm's 7, flannel's 2, kube-vip)" "$(grep -c '^\[\[image\]\]$' "$S/piforge.lock")" '^10$'
expect fetch "fetch says the packages were verified against the base's apt sources" \
	"$(grep -c '^OS packages iptables: [0-9]* \.debs .* verified against the base image'"'"'s apt sources' "$OUT/logs/fetch.txt")" '^1$'

t=$SECONDS
PIFORGE_CACHE=$OUT/cache "$PIFORGE" build --spec "$S/cluster.yaml" --out "$OUT/dist" \
	--artifacts "$OUT/artifacts" --cache-dir "$OUT/cache" >"$OUT/logs/build.txt" 2>&1 ||
	{ cat "$OUT/logs/build.txt"; die "piforge build failed"; }
tick piforge_build $((SECONDS - t))
expect build "no warning about an image or a package missing from the cards" \
	"$(grep -i 'warning' "$OUT/logs/build.txt" | grep -c -i -E 'image|package|\.deb|pull|apt')" '^0$'
# The first control plane's card lost and rebuilt: cluster-state (secrets/) says the cluster
# exists and e2e-cp-2 is another control plane, so this card must join, with a new token.
REIMAGE_TOKEN=e2erei.$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
t=$SECONDS
PIFORGE_CACHE=$OUT/cache "$PIFORGE" build --spec "$S/cluster.yaml" --out "$OUT/dist-reimage" --node e2e-cp-1 \
	--token-file - --artifacts "$OUT/artifacts" --cache-dir "$OUT/cache" \
	<<<"$REIMAGE_TOKEN" >"$OUT/logs/build-reimage.txt" 2>&1 ||
	{ cat "$OUT/logs/build-reimage.txt"; die "piforge build --node e2e-cp-1 (reimage) failed"; }
tick piforge_build_reimage $((SECONDS - t))
mv "$OUT/dist-reimage/e2e-cp-1.img" "$OUT/dist/e2e-cp-1-reimage.img" || die "the reimage build wrote no e2e-cp-1.img"

# piforge check on every card: nothing fails; it names the offline paths.
for img in "$OUT"/dist/*.img; do
	key=$(basename "$img" .img)
	PIFORGE_CACHE=$OUT/cache "$PIFORGE" --quiet check --cache-dir "$OUT/cache" "$img" >"$OUT/logs/check-$key.txt" 2>&1
	rc=$?
	expect "$key" "piforge check passes (exit $rc; $(grep -c '^FAIL' "$OUT/logs/check-$key.txt") FAIL)" "$rc" '^0$'
	expect "$key" "check: images in the card (offline)" "$(grep -o 'images: [0-9]* in card (offline)' "$OUT/logs/check-$key.txt")" '^images: [0-9]+ in card \(offline\)$'
	expect "$key" "check: packages from the card's .debs (no network)" \
		"$(grep -c "installed on first boot from the card's [0-9]* \.debs" "$OUT/logs/check-$key.txt")" '^1$'
done
# Kept until the swap check below; removed then.
CACHE_IMG=$OUT/standin-trixie.img
rm -rf "$OUT/cache"

# ---------------------------------------------------------------------------
# 4. Booting.

# free_port: a TCP port nobody listens on now, for the guest's forwarded ssh port.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# tell_guest PORT: says "keyscan-done" to the report's listener (guest port 2222) through the
# forwarded PORT; succeeds only when the guest answered "ok" (QEMU accepts a forwarded
# connection even when nothing listens in the guest, so the answer is what counts).
tell_guest() {
	python3 - "$1" <<'PY'
import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3)
    s.settimeout(3)
    s.sendall(b"keyscan-done\n")
    answer = s.recv(16)
except OSError:
    sys.exit(1)
if not answer.startswith(b"ok"):
    sys.exit(1)
print("ok")
PY
}

# part_start IMG N: the start sector of partition N.
part_start() { sfdisk -d "$1" 2>/dev/null | sed -n "s|^$1$2 : start= *\([0-9]*\),.*|\1|p"; }

# boot_once NODE IMG LOG: 0 when the guest powered itself off, 2 on a timeout, 1 otherwise.
boot_once() {
	local node=$1 img=$2 log=$3 d=$OUT/run/$1
	rm -rf "$d" && mkdir -p "$d"
	local p1
	p1=$(part_start "$img" 1)
	[[ -n $p1 ]] || { say "$node: no partition 1 in $img"; return 1; }
	local fat="$img@@$((p1 * 512))"
	mcopy -n -i "$fat" ::kernel8.img "$d/kernel" && mcopy -n -i "$fat" ::initramfs8 "$d/initrd" &&
		mcopy -n -i "$fat" ::cmdline.txt "$d/cmdline.txt" || { say "$node: cannot read the boot files"; return 1; }
	local cmdline
	cmdline=$(head -n 1 "$d/cmdline.txt" | tr -d '\r')
	cmdline=$(sed -e 's/console=serial0,115200/console=ttyAMA0,115200/' -e 's/ *console=tty1//' <<<"$cmdline")
	cmdline="$cmdline net.ifnames=0 systemd.default_device_timeout_sec=$DEVICE_TIMEOUT piforge.e2e_report"
	echo "$cmdline" >"$d/cmdline.used"
	rm -f "$d/disk.img"
	cp --sparse=always "$img" "$d/disk.img"
	# A card larger than the image: the stand-in grows its root into the rest on first boot.
	truncate -s +1G "$d/disk.img"
	local ssh_port signal_port
	ssh_port=$(free_port) signal_port=$(free_port)
	: >"$log"
	qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 2048 \
		-display none -monitor none -serial "file:$log" \
		-qmp "unix:$d/qmp.sock,server=on,wait=off" \
		-kernel "$d/kernel" -initrd "$d/initrd" -append "$cmdline" \
		-drive "if=none,id=d0,file=$d/disk.img,format=raw,cache=unsafe" -device virtio-blk-pci,drive=d0 \
		-netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$ssh_port-:22,hostfwd=tcp:127.0.0.1:$signal_port-:2222" \
		-object "filter-dump,id=dump0,netdev=n0,file=$d/net.pcap" \
		-device virtio-net-pci,netdev=n0,romfile= \
		-no-reboot >"$d/qemu.out" 2>&1 &
	local qpid=$! start=$SECONDS
	while kill -0 "$qpid" 2>/dev/null; do
		if ((SECONDS - start > BOOT_TIMEOUT)); then
			say "$node: no power-off after $BOOT_TIMEOUT s: system_powerdown"
			printf '{"execute":"qmp_capabilities"}\n{"execute":"system_powerdown"}\n' |
				timeout 5 socat - "UNIX-CONNECT:$d/qmp.sock" >/dev/null 2>&1 ||
				printf '{"execute":"qmp_capabilities"}\n{"execute":"system_powerdown"}\n' |
				timeout 5 python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(sys.stdin.buffer.read()); import time; time.sleep(1)' "$d/qmp.sock" 2>/dev/null
			local w=0
			while kill -0 "$qpid" 2>/dev/null && ((w < 90)); do sleep 1; w=$((w + 1)); done
			kill "$qpid" 2>/dev/null
			wait "$qpid" 2>/dev/null
			return 2
		fi
		# Progress marks, once each.
		if [[ -z ${LOGIN[$node]:-} ]] && grep -q 'login:' "$log" 2>/dev/null; then
			LOGIN[$node]=$((SECONDS - start))
			say "$node: login prompt after ${LOGIN[$node]} s"
		fi
		# sshd's host key, from outside, through the forwarded port: tried from the start of the
		# boot (not from the login prompt: on a fast machine the report may start first), then
		# the guest's report is told through a second forwarded port that the keyscan is done
		# (it waits for that, bounded, before it powers off).
		if [[ ! -s $d/keyscan ]]; then
			ssh-keyscan -T 5 -t ed25519 -p "$ssh_port" 127.0.0.1 >"$d/keyscan" 2>>"$d/keyscan.err" ||
				: >"$d/keyscan"
			[[ -s $d/keyscan ]] && say "$node: ssh-keyscan answered after $((SECONDS - start)) s"
		fi
		if [[ -s $d/keyscan && ! -s $d/told ]] && tell_guest "$signal_port" >"$d/told" 2>>"$d/keyscan.err"; then
			say "$node: told the guest's report the keyscan is done after $((SECONDS - start)) s"
		fi
		sleep 2
	done
	wait "$qpid"
	local rc=$?
	BOOT_S[$node]=$((SECONDS - start))
	if ((rc != 0)); then
		say "$node: qemu exited with status $rc"
		cat "$d/qemu.out"
		return 1
	fi
	return 0
}

declare -A LOGIN BOOT_S
# boot NODE: boots dist/NODE.img (a copy); retried once on a timeout.
boot() {
	local node=$1 try rc
	for try in 1 2; do
		local log=$OUT/logs/$node-serial-$try.log
		say "$node: booting (try $try, timeout $BOOT_TIMEOUT s)"
		boot_once "$node" "$OUT/dist/$node.img" "$log"
		rc=$?
		ln -sf "$(basename "$log")" "$OUT/logs/$node-serial.log"
		if ((rc == 0)); then
			say "$node: powered off after ${BOOT_S[$node]} s"
			return 0
		fi
		say "$node: boot failed (rc $rc); last 60 lines of $log:"
		tail -n 60 "$log" | sed 's/^/  | /'
		((rc == 2)) || return 1
	done
	return 1
}


# ---------------------------------------------------------------------------
# 5. Assertions.

# rget NODE KEY: the value of the first `E2E KEY=` line of the node's report.
rget() { sed -n "s/^E2E $2=//p" "$OUT/logs/$1-report.txt" | head -n 1 | tr -d '\r'; }
# rget_all NODE KEY: the values of every `E2E KEY=` line, one a line.
rget_all() { sed -n "s/^E2E $2=//p" "$OUT/logs/$1-report.txt" | tr -d '\r'; }

# root_of IMG: debugfs's spec of IMG's root filesystem; fat_of IMG: mtools' of its boot one.
root_of() { echo "$1?offset=$(($(part_start "$1" 2) * 512))"; }
fat_of() { echo "$1@@$(($(part_start "$1" 1) * 512))"; }
# ext4 block count of partition 2 of IMG.
root_blocks() { debugfs -R stats "$(root_of "$1")" 2>/dev/null | sed -n 's/^Block count: *//p'; }
# swap_units IMG: the units the stand-in's rpi-swap generator makes for IMG's /etc/rpi.
swap_units() {
	local w
	w=$(mktemp -d "$OUT/run/swap.XXXXXX")
	mkdir -p "$w/root/etc" "$w/root/gen" "$w/out"
	debugfs -R "rdump /etc/rpi $w/root/etc" "$(root_of "$1")" >/dev/null 2>&1
	debugfs -R "dump /usr/lib/systemd/system-generators/piforge-e2e-rpi-swap-generator $w/root/gen/g" \
		"$(root_of "$1")" >/dev/null 2>&1
	if [[ -s $w/root/gen/g ]]; then
		SWAP_ROOT=$w/root sh "$w/root/gen/g" "$w/out" && (cd "$w/out" && find . -name '*.swap' -printf '%f\n' | sort -u | tr '\n' ' ')
	else
		echo "no-generator"
	fi
	rm -rf "$w"
}
# keyscan_fp FILE: the fingerprint of the ed25519 key in an ssh-keyscan output.
keyscan_fp() { [[ -s $1 ]] && grep -v '^#' "$1" | awk '{print $2, $3}' | ssh-keygen -lf - 2>/dev/null | awk '{print $2}'; }
# card_images IMG: the references the card's /etc/piforge/images.list names, sorted, on a line.
card_images() {
	debugfs -R 'cat /etc/piforge/images.list' "$(root_of "$1")" 2>/dev/null | sed 's/#.*//' |
		awk 'NF { print $2 }' | sort | tr '\n' ' ' | sed 's/ $//'
}

# static_node KEY ROLE: a card that is built, not booted (e2e-cp-2, the worker), read in its
# image: what the booted control planes show at run time, as far as an image can show it.
static_node() {
	local key=$1 role=$2 img=$OUT/dist/$1.img
	local root fat kcfg
	root=$(root_of "$img") fat=$(fat_of "$img")
	kcfg=$(debugfs -R 'cat /etc/piforge/kubeadm.yaml' "$root" 2>/dev/null)
	expect "$key" "kubeadm gets a JoinConfiguration" "$(grep -c '^kind: JoinConfiguration' <<<"$kcfg")" '^1$'
	expect "$key" "joins through the VIP" "$(grep -c 'apiServerEndpoint: "\?10\.0\.2\.9:6443"\?$' <<<"$kcfg")" '^1$'
	expect "$key" "kubeadm config names the node" "$(grep -c -E "name: \"?$key\"?\$" <<<"$kcfg")" '^[1-9]'
	expect "$key" "the card holds the .debs of iptables" \
		"$(debugfs -R 'ls /var/lib/piforge/debs' "$root" 2>/dev/null | tr -s ' \t' '\n' | grep -c '^iptables_.*_arm64\.deb$')" '^1$'
	expect "$key" "the card's first-boot packages: iptables" \
		"$(debugfs -R 'cat /etc/piforge/first-boot-packages' "$root" 2>/dev/null | sed 's/#.*//' | tr -s ' \n' ' ' | sed 's/^ *//; s/ *$//')" '^iptables$'
	if [[ $role == worker ]]; then
		expect "$key" "a worker's JoinConfiguration has no controlPlane section" "$(grep -c '^controlPlane:' <<<"$kcfg")" '^0$'
		expect "$key" "no kube-vip manifest on a worker" \
			"$(debugfs -R 'stat /etc/kubernetes/manifests/kube-vip.yaml' "$root" 2>&1 | grep -c 'File not found')" '^1$'
		expect "$key" "no CA key on a worker" \
			"$(debugfs -R 'stat /etc/kubernetes/pki/ca.key' "$root" 2>&1 | grep -c 'File not found')" '^1$'
		expect "$key" "network-config: DHCP on eth0" \
			"$(mtype -i "$fat" ::network-config 2>/dev/null | tr -d '\r' | grep -c 'dhcp4: true')" '^[1-9]'
		expect "$key" "a worker carries kube-proxy, pause, CoreDNS and flannel's images, no control-plane one" \
			"$(card_images "$img")" '^ghcr\.io/flannel-io/flannel-cni-plugin:v1\.7\.1-flannel1 ghcr\.io/flannel-io/flannel:v0\.28\.4 registry\.k8s\.io/coredns/coredns:v1\.12\.1 registry\.k8s\.io/kube-proxy:v1\.34\.11 registry\.k8s\.io/pause:3\.10\.1$'
	else
		expect "$key" "a control plane added later joins with a controlPlane section" "$(grep -c '^controlPlane:' <<<"$kcfg")" '^1$'
		expect "$key" "kube-vip manifest in the image mounts admin.conf" \
			"$(debugfs -R 'cat /etc/kubernetes/manifests/kube-vip.yaml' "$root" 2>/dev/null | sed -n 's/^ *path: //p' | tr '\n' ' ' | sed 's/ $//')" '^/etc/kubernetes/admin\.conf$'
		expect "$key" "a control plane carries all 10 images" "$(card_images "$img" | wc -w)" '^10$'
	fi
}

# check_node KEY ROLE ADDRESS HOSTNAME: KEY names the image (dist/KEY.img) and the logs;
# ROLE is init, or join-cp (the reimaged first control plane joining).
check_node() {
	local key=$1 role=$2 addr=$3 node=$4 d=$OUT/run/$1 img=$OUT/run/$1/disk.img
	local root fat built_root built_fat
	root=$(root_of "$img") fat=$(fat_of "$img")
	built_root=$(root_of "$OUT/dist/$key.img") built_fat=$(fat_of "$OUT/dist/$key.img")
	# The report, from the root filesystem (complete even when kernel messages interleave on the
	# serial console), else from the serial log.
	if ! debugfs -R 'cat /var/log/piforge-e2e/report.txt' "$root" >"$OUT/logs/$key-report.txt" 2>/dev/null ||
		! grep -q '^E2E end' "$OUT/logs/$key-report.txt"; then
		grep -a '^E2E ' "$OUT/logs/$key-serial.log" | tr -d '\r' >"$OUT/logs/$key-report.txt"
	fi
	if ! grep -q '^E2E end' "$OUT/logs/$key-report.txt"; then
		fail "$key: no complete report (see $OUT/logs/$key-serial.log)"
		return
	fi
	expect "$key" "cloud-init finished" "$(rget "$key" cloud_init_status)" '^done$'
	expect "$key" "cloud-init errors" "$(rget "$key" cloud_init_errors)" '^0$'
	expect "$key" "cloud-init datasource: NoCloud seeded from /boot/firmware" "$(rget "$key" cloud_init_datasource)" 'NoCloud.*/boot/firmware'
	expect "$key" "hostname set by cloud-init" "$(rget "$key" hostname)" "^$node\$"
	expect "$key" "static address on eth0" "$(rget "$key" eth0_inet)" "(^| )${addr//./\\.}( |\$)"
	expect "$key" "static address is not a DHCP lease" "$(rget "$key" eth0_dynamic)" '^0$'
	expect "$key" "default route via 10.0.2.2" "$(rget "$key" default_route)" 'via 10\.0\.2\.2 dev eth0'
	expect "$key" "containerd.service active" "$(rget "$key" containerd_active)" '^active$'
	expect "$key" "containerd runs piforge's binary" "$(rget "$key" containerd_exe)" '^/usr/local/bin/containerd$'
	expect "$key" "containerd config has SystemdCgroup = true" "$(rget "$key" containerd_systemd_cgroup)" '^[1-9]'
	expect "$key" "ctr version answers (server)" "$(rget "$key" ctr_server_version)" '^2\.'
	expect "$key" "kubelet.service enabled" "$(rget "$key" kubelet_enabled)" '^enabled$'
	expect "$key" "kubelet.service (stand-in) active" "$(rget "$key" kubelet_active)" '^active$'
	expect "$key" "piforge-kubeadm phase done" "$(rget "$key" kubeadm_phase)" '^done$'
	local calls
	calls=$(rget_all "$key" call)
	if [[ $role == init ]]; then
		expect "$key" "kubeadm init with the generated config, called once" "$(grep '^kubeadm ' <<<"$calls" | tr '\n' ';')" '^kubeadm init --config /etc/piforge/kubeadm\.yaml --skip-token-print;$'
		expect "$key" "kubectl applied the flannel manifest" "$(grep -c '^kubectl --kubeconfig /etc/kubernetes/admin\.conf apply -f ' <<<"$calls")" '^1$'
	else
		expect "$key" "kubeadm: the cleanup's credentials, then join with the generated config" \
			"$(grep '^kubeadm ' <<<"$calls" | tr '\n' ';')" \
			"^kubeadm kubeconfig user --config /run/piforge/rejoin-kubeadm\\.yaml --client-name piforge-rejoin:$node --org system:masters --validity-period 1h;kubeadm join --config /etc/piforge/kubeadm\\.yaml;\$"
	fi
	expect "$key" "kubeadm found every image of the card in containerd (preflight pulls nothing)" \
		"$(rget_all "$key" kubeadm_note | grep '^images at ')" "^images at (init|join): 10 in the card's list, missing: none\$"
	expect "$key" "overlay and br_netfilter loaded" "$(rget "$key" modules_loaded)" '^br_netfilter overlay$'
	expect "$key" "net.ipv4.ip_forward = 1" "$(rget "$key" ip_forward)" '^1$'
	expect "$key" "no swap active" "$(rget "$key" swap_active)" '^0$'
	expect "$key" "no swap unit (the stand-in's rpi-swap made none: Mechanism=none)" "$(rget "$key" swap_units)" '^$'
	expect "$key" "the stand-in's rpi-swap generator makes no swap for the built image" "$(swap_units "$OUT/dist/$key.img")" '^$'
	expect "$key" "memory cgroup controller" "$(rget "$key" cgroup_controllers)" '(^| )memory( |$)'
	expect "$key" "no failed units" "$(rget "$key" failed_units)" '^$'
	expect "$key" "/boot/firmware mounted" "$(rget "$key" boot_firmware_mounted)" '^/dev/vda1$'
	# From outside, after the shutdown.
	local before after
	before=$(debugfs -R 'cat /etc/machine-id' "$built_root" 2>/dev/null)
	after=$(debugfs -R 'cat /etc/machine-id' "$root" 2>/dev/null)
	expect "$key" "machine-id empty in the built image" "${before:-<empty>}" '^<empty>$'
	expect "$key" "machine-id generated on this boot (image = report)" "$after" "^$(rget "$key" machine_id)\$"
	expect "$key" "machine-id is 32 hex digits" "$after" '^[0-9a-f]{32}$'
	MID[$key]=$after
	local kcfg
	kcfg=$(debugfs -R "cat /var/log/piforge-e2e/kubeadm-$([[ $role == init ]] && echo init || echo join)-config.yaml" "$root" 2>/dev/null)
	if [[ $role == init ]]; then
		expect "$key" "kubeadm got an InitConfiguration" "$(grep -c '^kind: InitConfiguration' <<<"$kcfg")" '^1$'
		expect "$key" "the endpoint is the VIP" "$(grep -c '^controlPlaneEndpoint: "\?10\.0\.2\.9:6443"\?$' <<<"$kcfg")" '^1$'
	else
		expect "$key" "kubeadm got a JoinConfiguration" "$(grep -c '^kind: JoinConfiguration' <<<"$kcfg")" '^1$'
		expect "$key" "joins through the VIP" "$(grep -c 'apiServerEndpoint: "\?10\.0\.2\.9:6443"\?$' <<<"$kcfg")" '^1$'
		# The reimaged first control plane: `kubeadm join --control-plane` (a controlPlane
		# section in the JoinConfiguration), never init, with the token of the rebuild.
		expect "$key" "the JoinConfiguration has a controlPlane section (join --control-plane)" \
			"$(grep -c '^controlPlane:' <<<"$kcfg")" '^1$'
		expect "$key" "the stand-in kubeadm joined as a control plane, with the CA key in place" \
			"$(grep -c -e '^join as a control plane' -e '^ca.key present at join' <<<"$(rget_all "$key" kubeadm_note)")" '^2$'
		expect "$key" "kubeadm init never ran" "$(grep -c '^kubeadm init' <<<"$calls")" '^0$'
		expect "$key" "the join uses the token given to the rebuild (count)" "$(grep -c "token: \"\?$REIMAGE_TOKEN\"\?\$" <<<"$kcfg")" '^1$'
		# The reimage cleanup, in order, before the join: a one-hour system:masters certificate
		# from the card's CA, then through the first API server of /etc/piforge/rejoin (the VIP):
		# the old Node is not Ready; etcd pods; member list in e2e-cp-2's pod (not the old
		# node's); the old member's client URL is dead; member remove of its ID; delete node.
		local rest="kubectl --kubeconfig /run/piforge/rejoin.conf --server https://10.0.2.9:6443 --request-timeout 20s"
		local tls="--cacert /etc/kubernetes/pki/etcd/ca.crt --cert /etc/kubernetes/pki/etcd/server.crt --key /etc/kubernetes/pki/etcd/server.key"
		local want
		want=$(printf '%s\n' \
			"kubeadm kubeconfig user --config /run/piforge/rejoin-kubeadm.yaml --client-name piforge-rejoin:$node --org system:masters --validity-period 1h" \
			"$rest get node $node --ignore-not-found -o jsonpath={.status.conditions[?(@.type==\"Ready\")].status}" \
			"$rest get pods -n kube-system -l component=etcd --field-selector status.phase=Running -o jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName}{\"\\n\"}{end}" \
			"$rest exec -n kube-system etcd-e2e-cp-2 -- etcdctl --endpoints https://127.0.0.1:2379 $tls member list" \
			"$rest exec -n kube-system etcd-e2e-cp-2 -- etcdctl --endpoints https://${addr%/*}:2379 $tls endpoint health" \
			"$rest exec -n kube-system etcd-e2e-cp-2 -- etcdctl --endpoints https://127.0.0.1:2379 $tls member remove 8e9e05c52164694d" \
			"$rest delete node $node --ignore-not-found" \
			"kubeadm join --config /etc/piforge/kubeadm.yaml")
		if [[ $calls == "$want" ]]; then
			pass "$key: reimage cleanup: the stand-in kubectl/kubeadm were called exactly as a real cluster needs, in order (7 calls, then join)"
		else
			fail "$key: reimage cleanup calls differ; got:"
			printf '  | %s\n' "${calls//$'\n'/$'\n'  | }"
			printf '  want:\n'
			printf '  | %s\n' "${want//$'\n'/$'\n'  | }"
		fi
		expect "$key" "the cleanup's certificate: signed by the card's CA, O=system:masters, CN=piforge-rejoin:$node, kubeconfig 0600" \
			"$(rget_all "$key" kubectl_note | grep '^credentials /run/piforge/rejoin.conf:')" \
			"O ?= ?system:masters.*CN ?= ?piforge-rejoin:$node.*verify: .*: OK; mode 600\$"
		expect "$key" "the cleanup's credentials are gone after the step" "$(rget "$key" rejoin_credentials_left)" '^0$'
		expect "$key" "piforge-status.txt names the node the card replaces" "$(rget "$key" status_replaces)" "^the node $node the cluster already had\$"
		expect "$key" "the card's rejoin file lists the VIP first" \
			"$(debugfs -R 'cat /etc/piforge/rejoin' "$built_root" 2>/dev/null | sed -n 's/^servers=//p')" '^10\.0\.2\.9:6443( |$)'
	fi
	expect "$key" "kubeadm config names the node" "$(grep -c -E "name: \"?$node\"?\$" <<<"$kcfg")" '^[1-9]'
	expect "$key" "cloud-init runcmd from the node profile ran" \
		"$(debugfs -R 'cat /var/log/piforge-e2e/profile-runcmd' "$root" 2>/dev/null)" "^runcmd ran on $node\$"
	local st
	st=$(mtype -i "$fat" ::piforge-status.txt 2>/dev/null | tr -d '\r')
	expect "$key" "piforge-status.txt on the boot partition says done" "$(sed -n 's/^phase: //p' <<<"$st")" '^done$'
	expect "$key" "piforge-status.txt: packages ok" "$(sed -n 's/^packages: //p' <<<"$st")" '^ok$'
	expect "$key" "piforge-status.txt: images imported" "$(sed -n 's/^images: //p' <<<"$st")" '^ok: 10 images imported in [0-9]+s$'
	# The node's own SSH host key (secrets/hosts/<node>/) survived the first boot: cloud-init
	# neither deleted nor regenerated it, and no other host key was made beside it.
	local want_key have_key
	want_key=$(cut -d' ' -f1,2 "$S/secrets/hosts/$node/ssh_host_ed25519_key.pub" 2>/dev/null)
	have_key=$(debugfs -R 'cat /etc/ssh/ssh_host_ed25519_key.pub' "$root" 2>/dev/null | cut -d' ' -f1,2)
	local same="differs: ${have_key:-<none>} vs ${want_key:-<none in secrets>}"
	[[ -n $want_key && $have_key == "$want_key" ]] && same=same
	expect "$key" "the host key after boot is the node's own from secrets/hosts" "$same" '^same$'
	expect "$key" "only the ed25519 host key pair in /etc/ssh after boot" \
		"$(debugfs -R 'ls /etc/ssh' "$root" 2>/dev/null | tr -s ' \t' '\n' | grep -c '^ssh_host_')" '^2$'
	expect "$key" "cmdline.txt has cgroup_enable=memory and no cgroup_memory=1" \
		"$(mtype -i "$fat" ::cmdline.txt 2>/dev/null | tr -d '\r' | grep -o 'cgroup_[a-z]*=[a-z0-9]*' | tr '\n' ' ')" '^cgroup_enable=memory $'
	# The package step, offline: the stand-in lacks iptables; piforge-packages.service installed
	# it on this boot from the card's .debs with dpkg, and apt never ran.
	expect "$key" "the card lists the tool the stand-in lacks for first boot" "$(rget "$key" packages_list)" '^ *iptables *$'
	expect "$key" "the card lists its .debs (iptables and the libraries the base lacks)" "$(rget "$key" packages_card_debs)" '(^| )iptables_[^ ]*_arm64\.deb( |$)'
	expect "$key" "piforge-packages says ok" "$(rget "$key" packages_status)" '^ok$'
	expect "$key" "installed from the card (journal: done (from the card))" "$(rget "$key" packages_from_card)" '^1$'
	expect "$key" "the card's .debs deleted after the install" "$(rget "$key" packages_debs_left)" '^0$'
	expect "$key" "iptables installed (dpkg); conntrack, socat, ebtables not needed" "$(rget "$key" packages_installed)" '^([a-z]+=u[a-z] )*iptables=ii( [a-z]+=u[a-z])*$'
	expect "$key" "dpkg's log: iptables installed on this boot" "$(rget "$key" dpkg_log_iptables)" '^[1-9]'
	expect "$key" "iptables runs" "$(rget "$key" iptables_version)" '^iptables v1\.'
	expect "$key" "apt not run: no apt-get or fallback in the package step's journal" "$(rget "$key" packages_apt_lines)" '^0$'
	expect "$key" "apt not run: no package lists in /var/lib/apt/lists" "$(rget "$key" apt_lists)" '^0$'
	# The container images: the card's archives imported into containerd's k8s.io namespace,
	# each pinned, before kubeadm ran; no pull attempted.
	local card_list ctr_list missing_pin=
	card_list=$(card_images "$OUT/dist/$key.img")
	expect "$key" "the card lists the 10 images of a control plane with a VIP" "$(wc -w <<<"$card_list")" '^10$'
	expect "$key" "the card's list in the booted node is the built one" "$(rget "$key" images_card_list)" "^${card_list//./\\.}\$"
	ctr_list=$(rget_all "$key" image)
	local ref
	for ref in $card_list; do
		grep -qE "^${ref//./\\.} ([^ ]*,)?io\.cri-containerd\.pinned=pinned(,|$)" <<<"$ctr_list" || missing_pin="$missing_pin $ref"
	done
	expect "$key" "ctr -n k8s.io images ls lists every image of the card with io.cri-containerd.pinned=pinned" "${missing_pin:-all $(wc -w <<<"$card_list")}" '^all 10$'
	expect "$key" "piforge-images.service succeeded" "$(rget "$key" images_unit_result)" '^success$'
	expect "$key" "piforge-images status" "$(rget "$key" images_status)" '^ok: 10 images imported in [0-9]+s$'
	expect "$key" "the archives are deleted after the import" "$(rget "$key" images_archives_left)" '^0$'
	local imp_done kadm_start
	read -r imp_done kadm_start <<<"$(rget "$key" images_unit_before_kubeadm)"
	local order=no
	[[ -n $imp_done && -n $kadm_start ]] && ((imp_done > 0 && imp_done <= kadm_start)) && order=yes
	expect "$key" "the import ended before piforge-kubeadm started ($imp_done <= $kadm_start us)" "$order" '^yes$'
	expect "$key" "containerd pulled nothing" "$(rget "$key" containerd_pulls)" '^0$'
	IMPORT_S[$key]=$(rget "$key" images_import_seconds)
	# The network: restrict=on, and what the guest sent (filter-dump's record).
	local net
	net=$(python3 "$HERE/pcap-summary.py" "$d/net.pcap" 2>&1)
	printf '%s\n' "$net" >"$OUT/logs/$key-net.txt"
	expect "$key" "the packet record saw sshd's banner go to the host's ssh-keyscan (it records)" "$(sed -n 's/^ssh_banners //p' <<<"$net")" '^[1-9]'
	expect "$key" "the report heard from the host that its keyscan was done, before powering off" "$(rget "$key" host_keyscan_done)" '^yes after '

	expect "$key" "no connection attempted to a web port (apt, registries: 80, 443)" "$(grep -c -E '^syn [0-9.]+:(80|443)$' <<<"$net")" '^0$'
	expect "$key" "no DNS question for an apt or registry host" \
		"$(grep '^dns ' <<<"$net" | grep -c -i -E 'debian|raspberrypi|ubuntu|k8s\.io|ghcr\.io|docker|quay|gcr\.io|pkg\.dev')" '^0$'
	expect "$key" "no TCP connection attempted out of the guest at all" "$(grep -c '^syn ' <<<"$net")" '^0$'
	# The root filesystem grew on first boot, as Raspberry Pi OS's does (`resize`).
	local blocks_before blocks_after
	blocks_before=$(root_blocks "$OUT/dist/$key.img") blocks_after=$(root_blocks "$img")
	expect "$key" "cmdline.txt of the built image asks for the resize" \
		"$(mtype -i "$built_fat" ::cmdline.txt 2>/dev/null | tr -d '\r' | grep -c ' resize\( \|$\)')" '^1$'
	expect "$key" "the resize unit ran" "$(rget "$key" resize_unit_result)/$(rget "$key" resize_unit_active)" '^success/active$'
	local grown=no
	[[ -n $blocks_before && -n $blocks_after ]] && ((blocks_after > blocks_before + 200000)) && grown=yes
	expect "$key" "root filesystem grew into the larger disk ($blocks_before -> $blocks_after blocks)" "$grown" '^yes$'
	expect "$key" "cmdline.txt has no resize after the first boot" "$(rget "$key" cmdline_txt)" '^[^ ].* rootwait( |$)'
	expect "$key" "cmdline.txt has no resize after the first boot (token)" "$(rget "$key" cmdline_txt | grep -c ' resize\( \|$\)')" '^0$'
	# sshd: enabled by piforge on a base that ships it disabled, listening, serving the node's
	# own host key; the fingerprint read from outside (ssh-keyscan through QEMU's hostfwd).
	local want_fp
	want_fp=$(ssh-keygen -lf "$S/secrets/hosts/$node/ssh_host_ed25519_key.pub" 2>/dev/null | awk '{print $2}')
	local want_re
	want_re=$(lit "${want_fp:-no-fingerprint-in-secrets}")
	expect "$key" "ssh.service enabled and active" "$(rget "$key" ssh_enabled)/$(rget "$key" ssh_active)" '^enabled/active$'
	expect "$key" "sshd listens on port 22" "$(rget "$key" ssh_listen)" '(^| )(0\.0\.0\.0|\*|\[::\]):22( |$)'
	expect "$key" "host key fingerprint inside = secrets/hosts ($want_fp)" "$(rget "$key" ssh_fp)" "^$want_re\$"
	expect "$key" "host key fingerprint from outside (ssh-keyscan via hostfwd) = secrets/hosts" \
		"$(keyscan_fp "$d/keyscan")" "^$want_re\$"
	# kube-vip's static pod on control planes: super-admin.conf on the init node until init is
	# done (also what kubeadm saw), admin.conf afterwards and on joining control planes.
	local kv_built
	kv_built=$(debugfs -R 'cat /etc/kubernetes/manifests/kube-vip.yaml' "$built_root" 2>/dev/null |
		sed -n 's/^ *path: //p' | tr '\n' ' ' | sed 's/ $//')
	if [[ $role == init ]]; then
		expect "$key" "kube-vip manifest in the image mounts super-admin.conf" "$kv_built" '^/etc/kubernetes/super-admin\.conf$'
		expect "$key" "kube-vip mounted super-admin.conf when kubeadm init ran" \
			"$(rget_all "$key" kubeadm_note | grep '^kube-vip kubeconfig at init:')" 'at init: /etc/kubernetes/super-admin\.conf *$'
	else
		expect "$key" "kube-vip manifest in the image mounts admin.conf" "$kv_built" '^/etc/kubernetes/admin\.conf$'
		expect "$key" "kube-vip manifest in place with admin.conf when kubeadm join ran" \
			"$(rget_all "$key" kubeadm_note | grep '^kube-vip kubeconfig at join:')" 'at join: /etc/kubernetes/admin\.conf *$'
	fi
	expect "$key" "kube-vip manifest in /etc/kubernetes/manifests after the boot: admin.conf" \
		"$(rget "$key" kube_vip_manifest) $(rget "$key" kube_vip_kubeconfig)" '^present /etc/kubernetes/admin\.conf$'
	local fsck
	fsck=$(e2fsck -fn "$root" 2>&1)
	if (($? == 0)); then pass "$key: root filesystem e2fsck -fn clean after shutdown"; else
		fail "$key: e2fsck -fn after shutdown"
		echo "$fsck" | tail -n 20
	fi
}

# The base itself: the stand-in's rpi-swap makes a zram swap (what piforge must turn off).
expect standin "the stand-in's rpi-swap generator makes a zram swap for the base" "$(swap_units "$CACHE_IMG")" '^dev-zram0\.swap $'
rm -f "$CACHE_IMG"

# The cards that are built, not booted.
static_node e2e-w-1 worker
static_node e2e-cp-2 control-plane

declare -A MID IMPORT_S
# Two boots (KEY:ROLE:ADDRESS:HOSTNAME): the first control plane, then its reimaged card.
NODES=("e2e-cp-1:init:10.0.2.15/24:e2e-cp-1" "e2e-cp-1-reimage:join-cp:10.0.2.15/24:e2e-cp-1")
for spec in "${NODES[@]}"; do
	IFS=: read -r key role addr node <<<"$spec"
	if boot "$key"; then
		check_node "$key" "$role" "$addr" "$node"
	else
		fail "$key: did not boot to its report and power off"
	fi
	tick "boot_$key" "${BOOT_S[$key]:-timeout}"
	[[ -n ${LOGIN[$key]:-} ]] && tick "login_prompt_$key" "${LOGIN[$key]}"
	[[ -n ${IMPORT_S[$key]:-} ]] && tick "image_import_$key" "${IMPORT_S[$key]}"
done
if [[ -n ${MID[e2e-cp-1]:-} && -n ${MID[e2e-cp-1-reimage]:-} ]]; then
	expect e2e-cp-1 "the reimaged card made a machine-id of its own" \
		"$([[ ${MID[e2e-cp-1]} != "${MID[e2e-cp-1-reimage]}" ]] && echo differs || echo "same: ${MID[e2e-cp-1]}")" '^differs$'
fi

tick total $((SECONDS - T0))
say "times (s): ${TIMES[*]}; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
if ((FAILS)); then
	say "FAILED: $FAILS check(s); serial logs and reports in $OUT/logs"
	for spec in "${NODES[@]}"; do
		node=${spec%%:*}
		say "last 60 lines of $OUT/logs/$node-serial.log:"
		tail -n 60 "$OUT/logs/$node-serial.log" 2>/dev/null | sed 's/^/  | /'
	done
	# Last, so a log's tail shows them.
	say "the $FAILS failed check(s):"
	printf '  FAIL %s\n' "${FAILED[@]}"
	echo "e2e: $PASSES passed, $FAILS failed"
	exit 1
fi
say "all checks passed (kubeadm, kubelet and kubectl were stand-ins; containerd, runc, CNI plugins real)"
echo "e2e: $PASSES passed, 0 failed"
rm -rf "$OUT/run"
