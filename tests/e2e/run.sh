#!/usr/bin/env bash
# tests/e2e/run.sh: `make e2e`. Boots the node images piforge builds, under QEMU (TCG), and
# checks that each node comes up configured.
#
#  1. tests/e2e/build-standin.sh: a bootable stand-in for Raspberry Pi OS trixie arm64 Lite
#     (cached in $PIFORGE_E2E_CACHE, default ~/.cache/piforge-e2e).
#  2. tests/e2e/make-e2e-artifacts.sh: release artifacts with REAL arm64 containerd, runc and CNI
#     plugins (Debian's, repacked into the upstream layout) and STAND-IN kubeadm, kubelet and
#     kubectl scripts that only record how they were called: Debian packages no kubeadm, so
#     this test proves piforge's first-boot unit runs `kubeadm init`/`join` with the generated
#     configuration; it does not form a real cluster (that needs `piforge fetch`).
#  3. piforge build of a two-node spec: a control plane with a static address, a DHCP worker.
#  4. Each node image (a sparse copy) boots under qemu-system-aarch64 -M virt, with the kernel,
#     initrd and command line from its own boot partition plus `piforge.e2e_report`, which
#     starts the stand-in's report unit: it prints `E2E key=value` lines and powers off.
#  5. Assertions on the report and on the image afterwards (debugfs, mtools, e2fsck -fn).
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
BOOT_TIMEOUT=${PIFORGE_E2E_BOOT_TIMEOUT:-900}
K8S=1.34.11
PIFORGE=$REPO/target/release/piforge
T0=$SECONDS
FAILS=0
PASSES=0
declare -A TIMES

say() { echo "e2e: $*"; }
tick() { TIMES[$1]=$2; say "time $1: $2 s"; }
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
}

# ---------------------------------------------------------------------------
# 1. The stand-in (infrastructure: SKIPPED only when it is missing and cannot be built).
t=$SECONDS
bash "$HERE/build-standin.sh" "$CACHE"
rc=$?
if ((rc != 0)); then
	if [[ -f $CACHE/standin-trixie.img.zst && -f $CACHE/artifact-debs/.done ]]; then
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
# 2-3. piforge, the artifacts, the spec, the build.
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
  - name: e2e-w-1
    role: worker
    profile: profiles/e2e.yaml
EOF
t=$SECONDS
PIFORGE_CACHE=$OUT/cache "$PIFORGE" build --spec "$S/cluster.yaml" --out "$OUT/dist" \
	--artifacts "$OUT/artifacts" --allow-unpinned --cache-dir "$OUT/cache" >"$OUT/logs/build.txt" 2>&1 ||
	{ cat "$OUT/logs/build.txt"; die "piforge build failed"; }
tick piforge_build $((SECONDS - t))
rm -f "$OUT/standin-trixie.img"
rm -rf "$OUT/cache"

# ---------------------------------------------------------------------------
# 4. Booting.

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
	cmdline="$cmdline net.ifnames=0 piforge.e2e_report"
	echo "$cmdline" >"$d/cmdline.used"
	rm -f "$d/disk.img"
	cp --sparse=always "$img" "$d/disk.img"
	: >"$log"
	qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 2048 \
		-display none -monitor none -serial "file:$log" \
		-qmp "unix:$d/qmp.sock,server=on,wait=off" \
		-kernel "$d/kernel" -initrd "$d/initrd" -append "$cmdline" \
		-drive "if=none,id=d0,file=$d/disk.img,format=raw,cache=unsafe" -device virtio-blk-pci,drive=d0 \
		-netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile= \
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
expect() { # expect NODE WHAT ACTUAL EXPECTED-REGEX
	if [[ $3 =~ $4 ]]; then pass "$1: $2 ($3)"; else fail "$1: $2: got '$3', want /$4/"; fi
}

check_node() {
	local node=$1 role=$2 addr=$3 d=$OUT/run/$1 img=$OUT/run/$1/disk.img
	local p1 p2
	p1=$(part_start "$img" 1) p2=$(part_start "$img" 2)
	local root="$img?offset=$((p2 * 512))" fat="$img@@$((p1 * 512))"
	# The report, from the root filesystem (complete even when kernel messages interleave on the
	# serial console), else from the serial log.
	if ! debugfs -R 'cat /var/log/piforge-e2e/report.txt' "$root" >"$OUT/logs/$node-report.txt" 2>/dev/null ||
		! grep -q '^E2E end' "$OUT/logs/$node-report.txt"; then
		grep -a '^E2E ' "$OUT/logs/$node-serial.log" | tr -d '\r' >"$OUT/logs/$node-report.txt"
	fi
	if ! grep -q '^E2E end' "$OUT/logs/$node-report.txt"; then
		fail "$node: no complete report (see $OUT/logs/$node-serial.log)"
		return
	fi
	expect "$node" "cloud-init finished" "$(rget "$node" cloud_init_status)" '^done$'
	expect "$node" "cloud-init errors" "$(rget "$node" cloud_init_errors)" '^0$'
	expect "$node" "cloud-init datasource: NoCloud seeded from /boot/firmware" "$(rget "$node" cloud_init_datasource)" 'NoCloud.*/boot/firmware'
	expect "$node" "hostname set by cloud-init" "$(rget "$node" hostname)" "^$node\$"
	if [[ -n $addr ]]; then
		expect "$node" "static address on eth0" "$(rget "$node" eth0_inet)" "(^| )${addr//./\\.}( |\$)"
		expect "$node" "static address is not a DHCP lease" "$(rget "$node" eth0_dynamic)" '^0$'
	else
		expect "$node" "DHCP lease on eth0" "$(rget "$node" eth0_inet)" '^10\.0\.2\.[0-9]+/24$'
		expect "$node" "eth0 address is dynamic" "$(rget "$node" eth0_dynamic)" '^1$'
	fi
	expect "$node" "default route via 10.0.2.2" "$(rget "$node" default_route)" 'via 10\.0\.2\.2 dev eth0'
	expect "$node" "containerd.service active" "$(rget "$node" containerd_active)" '^active$'
	expect "$node" "containerd runs piforge's binary" "$(rget "$node" containerd_exe)" '^/usr/local/bin/containerd$'
	expect "$node" "containerd config has SystemdCgroup = true" "$(rget "$node" containerd_systemd_cgroup)" '^[1-9]'
	expect "$node" "ctr version answers (server)" "$(rget "$node" ctr_server_version)" '^2\.'
	expect "$node" "kubelet.service enabled" "$(rget "$node" kubelet_enabled)" '^enabled$'
	expect "$node" "kubelet.service (stand-in) active" "$(rget "$node" kubelet_active)" '^active$'
	expect "$node" "piforge-kubeadm phase done" "$(rget "$node" kubeadm_phase)" '^done$'
	if [[ $role == init ]]; then
		expect "$node" "kubeadm init with the generated config" "$(rget "$node" kubeadm_call)" '^init --config /etc/piforge/kubeadm\.yaml --skip-token-print$'
		expect "$node" "kubectl applied the flannel manifest" "$(rget "$node" kubectl_calls)" '^[1-9]'
	else
		expect "$node" "kubeadm join with the generated config" "$(rget "$node" kubeadm_call)" '^join --config /etc/piforge/kubeadm\.yaml$'
	fi
	expect "$node" "overlay and br_netfilter loaded" "$(rget "$node" modules_loaded)" '^br_netfilter overlay$'
	expect "$node" "net.ipv4.ip_forward = 1" "$(rget "$node" ip_forward)" '^1$'
	expect "$node" "no swap active" "$(rget "$node" swap_active)" '^0$'
	expect "$node" "memory cgroup controller" "$(rget "$node" cgroup_controllers)" '(^| )memory( |$)'
	expect "$node" "no failed units" "$(rget "$node" failed_units)" '^$'
	expect "$node" "/boot/firmware mounted" "$(rget "$node" boot_firmware_mounted)" '^/dev/vda1$'
	# From outside, after the shutdown.
	local before after
	before=$(debugfs -R 'cat /etc/machine-id' "$OUT/dist/$node.img?offset=$((p2 * 512))" 2>/dev/null)
	after=$(debugfs -R 'cat /etc/machine-id' "$root" 2>/dev/null)
	expect "$node" "machine-id empty in the built image" "${before:-<empty>}" '^<empty>$'
	expect "$node" "machine-id generated on this boot (image = report)" "$after" "^$(rget "$node" machine_id)\$"
	expect "$node" "machine-id is 32 hex digits" "$after" '^[0-9a-f]{32}$'
	MID[$node]=$after
	local kcfg
	kcfg=$(debugfs -R "cat /var/log/piforge-e2e/kubeadm-$([[ $role == init ]] && echo init || echo join)-config.yaml" "$root" 2>/dev/null)
	if [[ $role == init ]]; then
		expect "$node" "kubeadm got an InitConfiguration" "$(grep -c '^kind: InitConfiguration' <<<"$kcfg")" '^1$'
	else
		expect "$node" "kubeadm got a JoinConfiguration" "$(grep -c '^kind: JoinConfiguration' <<<"$kcfg")" '^1$'
	fi
	expect "$node" "kubeadm config names the node" "$(grep -c -E "name: \"?$node\"?\$" <<<"$kcfg")" '^[1-9]'
	expect "$node" "cloud-init runcmd from the node profile ran" \
		"$(debugfs -R 'cat /var/log/piforge-e2e/profile-runcmd' "$root" 2>/dev/null)" "^runcmd ran on $node\$"
	local st
	st=$(mtype -i "$fat" ::piforge-status.txt 2>/dev/null | tr -d '\r')
	expect "$node" "piforge-status.txt on the boot partition says done" "$(sed -n 's/^phase: //p' <<<"$st")" '^done$'
	# The node's own SSH host key (secrets/hosts/<node>/) survived the first boot: cloud-init
	# neither deleted nor regenerated it, and no other host key was made beside it.
	local want have
	want=$(cut -d' ' -f1,2 "$S/secrets/hosts/$node/ssh_host_ed25519_key.pub" 2>/dev/null)
	have=$(debugfs -R 'cat /etc/ssh/ssh_host_ed25519_key.pub' "$root" 2>/dev/null | cut -d' ' -f1,2)
	local same="differs: ${have:-<none>} vs ${want:-<none in secrets>}"
	[[ -n $want && $have == "$want" ]] && same=same
	expect "$node" "the host key after boot is the node's own from secrets/hosts" "$same" '^same$'
	expect "$node" "only the ed25519 host key pair in /etc/ssh after boot" \
		"$(debugfs -R 'ls /etc/ssh' "$root" 2>/dev/null | tr -s ' \t' '\n' | grep -c '^ssh_host_')" '^2$'
	expect "$node" "cmdline.txt has cgroup_enable=memory and no cgroup_memory=1" \
		"$(mtype -i "$fat" ::cmdline.txt 2>/dev/null | tr -d '\r' | grep -o 'cgroup_[a-z]*=[a-z0-9]*' | tr '\n' ' ')" '^cgroup_enable=memory $'
	local fsck
	fsck=$(e2fsck -fn "$root" 2>&1)
	if (($? == 0)); then pass "$node: root filesystem e2fsck -fn clean after shutdown"; else
		fail "$node: e2fsck -fn after shutdown"
		echo "$fsck" | tail -n 20
	fi
}

declare -A MID
NODES=("e2e-cp-1:init:10.0.2.15/24" "e2e-w-1:join:")
for spec in "${NODES[@]}"; do
	IFS=: read -r node role addr <<<"$spec"
	if boot "$node"; then
		check_node "$node" "$role" "$addr"
	else
		fail "$node: did not boot to its report and power off"
	fi
	tick "boot_$node" "${BOOT_S[$node]:-timeout}"
	[[ -n ${LOGIN[$node]:-} ]] && tick "login_prompt_$node" "${LOGIN[$node]}"
done
if [[ -n ${MID[e2e-cp-1]:-} && -n ${MID[e2e-w-1]:-} ]]; then
	if [[ ${MID[e2e-cp-1]} != "${MID[e2e-w-1]}" ]]; then pass "machine-ids differ between the nodes"; else
		fail "both nodes have machine-id ${MID[e2e-cp-1]}"
	fi
fi

tick total $((SECONDS - T0))
if ((FAILS)); then
	say "FAILED: $FAILS check(s); serial logs and reports in $OUT/logs"
	for spec in "${NODES[@]}"; do
		node=${spec%%:*}
		say "last 60 lines of $OUT/logs/$node-serial.log:"
		tail -n 60 "$OUT/logs/$node-serial.log" 2>/dev/null | sed 's/^/  | /'
	done
	echo "e2e: $PASSES passed, $FAILS failed"
	exit 1
fi
say "all checks passed (kubeadm, kubelet and kubectl were stand-ins; containerd, runc, CNI plugins real)"
echo "e2e: $PASSES passed, 0 failed"
rm -rf "$OUT/run"
