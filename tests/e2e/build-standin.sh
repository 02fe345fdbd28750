#!/usr/bin/env bash
# tests/e2e/build-standin.sh [CACHE_DIR]
#
# Builds a BOOTABLE stand-in for the upstream Raspberry Pi OS trixie arm64 Lite image, from
# Debian packages, for `make e2e` (tests/e2e/run.sh). It is laid out like the upstream image
# (PI-FACTS.md): MBR, `bootfs` FAT32 at sector 16384 with kernel8.img, initramfs8, config.txt,
# cmdline.txt (`root=PARTUUID=<id>-02 ... rootwait resize`) and the NoCloud seed files; `rootfs`
# ext4; fstab by PARTUUID; cloud-init with Raspberry Pi OS's NoCloud settings; empty
# /etc/machine-id. Like Raspberry Pi OS Lite trixie, and unlike earlier stand-ins, so that
# piforge's first-boot paths run on every e2e boot:
#   - iptables, conntrack, socat and ebtables are ABSENT: piforge's package step
#     (piforge-packages.service) installs what a node needs (iptables) on first boot, from the
#     .debs `piforge fetch` put in the card. `piforge fetch` takes them from the base's own apt
#     source, as on Raspberry Pi OS (`debian.sources`, Signed-By a keyring in the base): here
#     a signed repository of Debian's .debs made by apt-mirror.py (apt-mirror/, which run.sh
#     serves on 127.0.0.1 as piforge's --mirror). The guest itself boots with a restricted
#     network and never reaches a repository.
#   - swap is ON: a stand-in for rpi-swap (trixie's swap manager; PI-FACTS.md: zram, off with
#     `[Main] Mechanism=none` in /etc/rpi/swap.conf.d/*.conf) makes a zram swap device at boot
#     unless Mechanism=none; /etc/rpi/swap.conf says Mechanism=zram.
#   - openssh-server is installed WITH host keys in /etc/ssh and ssh.service DISABLED (pi-gen
#     trixie disables ssh: ENABLE_SSH=0; it also deletes the host keys, a base that keeps them
#     is the harder case piforge must handle: it removes them and writes the node's own).
#   - the root filesystem is NOT expanded: its partition is about the size of its contents,
#     and `resize` in cmdline.txt grows it on first boot. Raspberry Pi OS trixie does that in
#     its initramfs (rpi-resize: partition to the end of the card, resize2fs, then drops the
#     token); the stand-in does the same, cheaply, in a unit at the start of the boot
#     (piforge-e2e-resize.service, online resize2fs), before cloud-init and piforge's units.
#     run.sh boots each card on a disk 1 GiB larger than the image, like a bigger SD card.
# Other differences from upstream: Debian's generic arm64 kernel (booted by QEMU's `-M virt`,
# not by Pi firmware), systemd-networkd instead of NetworkManager, ethtool preinstalled, and a
# report unit that runs only when the kernel command line holds `piforge.e2e_report`.
#
# Also fetches Debian's arm64 containerd, runc and containernetworking-plugins .debs (from
# forky: containerd 2.x, the major version the catalog's Kubernetes releases use) for
# tests/e2e/make-e2e-artifacts.sh.
#
# Everything lands in CACHE_DIR (default ${PIFORGE_E2E_CACHE:-$HOME/.cache/piforge-e2e}):
#   debs/                      apt's .deb cache for the stand-in root (reused by mmdebstrap)
#   rootfs-trixie-arm64.tar.zst  the root tree mmdebstrap built (keyed by $ROOTFS_RECIPE)
#   standin-trixie.img.zst     the finished image (keyed by this script's sha256)
#   artifact-debs/             containerd, runc, containernetworking-plugins, busybox-static
#                              (arm64, forky; busybox-static is the e2e's container images)
#   apt-mirror/                www/apt.e2e.piforge.invalid/debian/: trixie main, signed, with
#                              the Debian .debs of iptables and everything it depends on
#                              (recursively, every alternative); gnupg/: its throwaway key
#   standin-build.log          the last build's log, each line with the seconds since its start
#                              (what the README's build times are read from)
#
# Exit status: 0 when the image exists, 1 on a failure, 75 (EX_TEMPFAIL) when it is missing
# and could not be built because a package registry was unreachable.
set -euo pipefail
export LC_ALL=C TZ=UTC PATH="$PATH:/usr/sbin:/sbin"

CACHE=${1:-${PIFORGE_E2E_CACHE:-$HOME/.cache/piforge-e2e}}
mkdir -p "$CACHE"
CACHE=$(readlink -f "$CACHE")
SCRIPT=$(readlink -f "${BASH_SOURCE[0]}")
SCRIPT_SHA=$(cat "$SCRIPT" "$(dirname "$SCRIPT")/report.sh" "$(dirname "$SCRIPT")/apt-mirror.py" | sha256sum | cut -c1-64)
IMG_ZST=$CACHE/standin-trixie.img.zst
ROOTFS_TAR=$CACHE/rootfs-trixie-arm64.tar.zst
MIRROR=${PIFORGE_E2E_MIRROR:-http://deb.debian.org/debian}
SUITE=trixie
DISK_ID=e2e0c0de
P1=16384
BOOT_MIB=512
P2=1064960

# The root's packages: the first apt step; the kernel comes in a second step so the
# initramfs is built once.
# No iptables, conntrack, socat, ebtables: piforge installs what a node needs on first boot.
# fdisk: sfdisk for the first-boot root expansion (Raspberry Pi OS Lite has fdisk and parted).
PACKAGES=systemd,systemd-sysv,udev,dbus,cloud-init,iproute2,kmod,initramfs-tools,e2fsprogs,dosfstools,fdisk,procps,python3,ethtool,ca-certificates,netbase,less,openssh-server
KERNEL_PACKAGES="linux-image-arm64"
# What piforge fetches for the card (piforge's NEEDED_PACKAGES the stand-in lacks): the e2e's
# apt mirror holds it and everything it depends on.
MIRROR_PACKAGES="iptables"
# Left out of the root tree (dpkg path-exclude; the guest never reads them): manual pages,
# translations, and the kernel's drivers for hardware QEMU's virt machine does not have. Less
# to write under qemu-user, a smaller image to compress and decompress on every run.
# (/usr/share/doc stays: e2fsprogs' libraries link their doc directories to each other, and
# dpkg cannot unpack into a link whose target it left out.)
EXCLUDES="/usr/share/man/* /usr/share/info/* /usr/share/locale/* /usr/share/lintian/*
/usr/lib/modules/*/kernel/drivers/gpu/* /usr/lib/modules/*/kernel/drivers/media/*
/usr/lib/modules/*/kernel/drivers/net/wireless/* /usr/lib/modules/*/kernel/sound/*
/usr/lib/modules/*/kernel/drivers/infiniband/* /usr/lib/modules/*/kernel/drivers/staging/*
/usr/lib/modules/*/kernel/drivers/bluetooth/* /usr/lib/modules/*/kernel/net/bluetooth/*
/usr/lib/modules/*/kernel/drivers/iio/*"
ROOTFS_RECIPE="v3 $SUITE $PACKAGES + $KERNEL_PACKAGES; initramfs modules virtio; eatmydata; excludes $(echo "$EXCLUDES" | tr '\n' ' ')"
ARTIFACT_DEBS="containerd runc containernetworking-plugins busybox-static"
ARTIFACT_SUITE=forky

say() { echo "build-standin: $*" >&2; }
die() {
	say "$*"
	exit 1
}
# A registry we could not reach: a different exit code, so run.sh can tell it apart.
unreachable() {
	say "UNREACHABLE: $*"
	exit 75
}

[[ $(id -u) == 0 ]] || die "must run as root (mmdebstrap --arch=arm64 under qemu-user, apt-get)"

up_to_date() {
	[[ -f $IMG_ZST && -f $CACHE/standin.stamp && $(cat "$CACHE/standin.stamp") == "$SCRIPT_SHA" ]] &&
		[[ -f $CACHE/artifact-debs/.done && -f $CACHE/apt-mirror/.done ]] &&
		ls "$CACHE"/artifact-debs/busybox-static_*_arm64.deb >/dev/null 2>&1
}
if up_to_date; then
	say "cached: $IMG_ZST"
	exit 0
fi

exec 9>"$CACHE/.lock"
flock 9
if up_to_date; then exit 0; fi
T0=$SECONDS
# The build's log, every line stamped with the seconds since the start (what the README's
# build times are read from).
LOG=$CACHE/standin-build.log
: >"$LOG"
stamp() { while IFS= read -r l; do printf '%5d %s\n' "$((SECONDS - T0))" "$l"; done; }
say() {
	echo "build-standin: $*" >&2
	printf '%5d build-standin: %s\n' "$((SECONDS - T0))" "$*" >>"$LOG"
}
say "building in $CACHE (load average: $(cut -d' ' -f1-3 /proc/loadavg))"

# ---------------------------------------------------------------------------
# Tools (arch-test: mmdebstrap only Recommends it, and refuses a foreign --arch without it).
# This machine's qemu-utils comes from bookworm-backports, so qemu-system-arm must too.
need_tools() {
	local missing=() t
	for t in qemu-system-aarch64 qemu-aarch64-static mmdebstrap arch-test mkfs.fat mcopy sfdisk mkfs.ext4 debugfs zstd socat gpg; do
		command -v "$t" >/dev/null 2>&1 || missing+=("$t")
	done
	((${#missing[@]} == 0)) && return 0
	say "installing tools (missing: ${missing[*]})"
	local codename
	codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
	local pin=()
	if [[ $codename == bookworm ]]; then
		if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
			cat >/etc/apt/sources.list.d/bookworm-backports.sources <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
		fi
		pin=(-t bookworm-backports)
	fi
	apt-get update -q >/dev/null || unreachable "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pin[@]}" \
		qemu-system-arm qemu-user-static mmdebstrap arch-test dosfstools mtools fdisk e2fsprogs zstd socat gnupg \
		>/dev/null || unreachable "apt-get install of the e2e tools failed"
}
need_tools

# arm64 maintainer scripts run through binfmt_misc + qemu-user.
binfmt() {
	if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
		mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || die "cannot mount binfmt_misc"
	fi
	if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
		local conf=/usr/lib/binfmt.d/qemu-aarch64.conf
		[[ -f $conf ]] || die "$conf is missing (qemu-user-static)"
		grep -v '^#' "$conf" >/proc/sys/fs/binfmt_misc/register || die "registering qemu-aarch64 failed"
	fi
}
binfmt

WORK=$(mktemp -d "$CACHE/.work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# ---------------------------------------------------------------------------
# The artifact .debs (arm64), from a private apt state so the host's apt is untouched.
fetch_artifact_debs() {
	local d=$WORK/apt out=$CACHE/artifact-debs
	[[ -f $out/.done ]] && ls "$out"/busybox-static_*_arm64.deb >/dev/null 2>&1 && return 0
	rm -rf "$out"
	mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/parts" "$d/prefs" "$out"
	: >"$d/status"
	echo "deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR $ARTIFACT_SUITE main" >"$d/sources.list"
	local o=(-o "Dir::State=$d" -o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache"
		-o "Dir::Etc::SourceList=$d/sources.list" -o "Dir::Etc::SourceParts=-"
		-o "Dir::Etc::Parts=$d/parts" -o "Dir::Etc::PreferencesParts=$d/prefs"
		-o "Dir::State::status=$d/status" -o "APT::Architecture=arm64" -o "APT::Architectures=arm64")
	apt-get "${o[@]}" --error-on=any update -q >"$WORK/apt.log" 2>&1 || { cat "$WORK/apt.log" >&2; unreachable "apt-get update ($ARTIFACT_SUITE arm64) failed"; }
	# shellcheck disable=SC2086
	(cd "$out" && apt-get "${o[@]}" download $ARTIFACT_DEBS >"$WORK/apt.log" 2>&1) ||
		{ cat "$WORK/apt.log" >&2; die "apt-get download $ARTIFACT_DEBS failed"; }
	touch "$out/.done"
	say "artifact debs: $(cd "$out" && ls ./*.deb | tr '\n' ' ')"
}
fetch_artifact_debs

# ---------------------------------------------------------------------------
# The apt repository the stand-in's apt source names (apt-mirror.py says what it holds and
# why it is re-signed), which `piforge fetch` reads in run.sh through --mirror on 127.0.0.1:
# www/apt.e2e.piforge.invalid/debian/ (--mirror fetches <mirror>/<host>/<path>); the
# throwaway signing key in gnupg/, its public half the stand-in trusts.
APT_HOST=apt.e2e.piforge.invalid
fetch_apt_mirror() {
	local out=$CACHE/apt-mirror
	[[ -f $out/.done ]] && return 0
	rm -rf "$out" && mkdir -p "$out"
	local t=$SECONDS
	# shellcheck disable=SC2086 # one word per package
	python3 "$(dirname "$SCRIPT")/apt-mirror.py" "$MIRROR" "$SUITE" "$out/www/$APT_HOST/debian" "$out/gnupg" $MIRROR_PACKAGES \
		>>"$LOG" 2>&1 || { tail -n 20 "$LOG" >&2; unreachable "making the apt repository for $MIRROR_PACKAGES failed"; }
	ls "$out/www/$APT_HOST"/debian/pool/main/i/iptables/iptables_*_arm64.deb >/dev/null 2>&1 ||
		die "the apt repository has no iptables .deb"
	[[ -s $out/gnupg/archive-keyring.gpg ]] || die "the apt repository's key was not exported"
	touch "$out/.done"
	say "apt repository: $(find "$out/www" -name '*.deb' | wc -l) .debs, $(du -sh "$out/www" | cut -f1), in $((SECONDS - t)) s"
}

# ---------------------------------------------------------------------------
# The root tree (the slow part: package setup under qemu-user).
build_rootfs() {
	if [[ -f $ROOTFS_TAR && -f $CACHE/rootfs.stamp && $(cat "$CACHE/rootfs.stamp") == "$ROOTFS_RECIPE" ]]; then
		say "cached: $ROOTFS_TAR"
		return 0
	fi
	mkdir -p "$CACHE/debs"
	say "mmdebstrap $SUITE arm64 (15-20 minutes cold, under qemu-user)"
	local t=$SECONDS x dpkgopts=()
	# set -f: the patterns are dpkg's, not for the host's shell to expand.
	set -f
	for x in $EXCLUDES; do dpkgopts+=("--dpkgopt=path-exclude=$x"); done
	set +f
	# eatmydata (mmdebstrap's own hook): dpkg's fsync calls cost much under qemu-user.
	# --verbose: apt's and dpkg's lines, stamped, show where the time goes.
	# shellcheck disable=SC2016
	if ! mmdebstrap --mode=root --arch=arm64 --variant=apt --include="$PACKAGES" --verbose \
		--hook-dir=/usr/share/mmdebstrap/hooks/eatmydata "${dpkgopts[@]}" \
		--skip=essential/unlink --skip=cleanup/apt/cache \
		--setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
		--setup-hook="sync-in '$CACHE/debs' /var/cache/apt/archives/" \
		--customize-hook='printf "virtio_pci\nvirtio_blk\nvirtio_net\next4\nvfat\n" >>"$1"/etc/initramfs-tools/modules' \
		--customize-hook="chroot \"\$1\" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $KERNEL_PACKAGES" \
		--customize-hook="sync-out /var/cache/apt/archives '$CACHE/debs'" \
		--customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb' \
		"$SUITE" "$WORK/rootfs.tar.zst" "$MIRROR" 2>&1 | stamp >"$WORK/mmdebstrap.log"; then
		cat "$WORK/mmdebstrap.log" >>"$LOG"
		tail -n 40 "$WORK/mmdebstrap.log" >&2
		if grep -qE 'Failed to fetch|Could not resolve|Temporary failure|Unable to connect|Connection failed|Release file .* is not valid|apt-get update .*failed' "$WORK/mmdebstrap.log"; then
			unreachable "mmdebstrap could not download packages (log above)"
		fi
		die "mmdebstrap failed (log above)"
	fi
	cat "$WORK/mmdebstrap.log" >>"$LOG"
	mv -f "$WORK/rootfs.tar.zst" "$ROOTFS_TAR"
	echo "$ROOTFS_RECIPE" >"$CACHE/rootfs.stamp"
	say "root tree built in $((SECONDS - t)) s"
}
build_rootfs
fetch_apt_mirror

# ---------------------------------------------------------------------------
# The image: the root tree, Raspberry Pi OS's settings, the report unit; no mounting.
R=$WORK/root B=$WORK/boot
mkdir -p "$R" "$B"
say "image: unpacking the root tree"
tar --zstd -xpf "$ROOTFS_TAR" --numeric-owner --xattrs --xattrs-include='*' -C "$R"

kver=$(ls "$R/boot" | sed -n 's/^vmlinuz-//p' | sort -V | tail -n 1)
[[ -n $kver ]] || die "no kernel in the root tree"
[[ -f $R/boot/initrd.img-$kver ]] || die "no initrd for $kver in the root tree"
# kernel8.img: the uncompressed Image (Debian ships it gzipped; QEMU and the Pi read both).
if gzip -t "$R/boot/vmlinuz-$kver" 2>/dev/null; then
	zcat "$R/boot/vmlinuz-$kver" >"$B/kernel8.img"
else
	cp "$R/boot/vmlinuz-$kver" "$B/kernel8.img"
fi
cp "$R/boot/initrd.img-$kver" "$B/initramfs8"

echo "console=serial0,115200 console=tty1 root=PARTUUID=$DISK_ID-02 rootfstype=ext4 fsck.repair=yes rootwait resize" >"$B/cmdline.txt"
cat >"$B/config.txt" <<'EOF'
# For more options and information see
# http://rptl.io/configtxt
# Some settings may impact device functionality. See link above for details

# Uncomment some or all of these to enable the optional hardware interfaces
#dtparam=i2c_arm=on
#dtparam=i2s=on
#dtparam=spi=on

# Enable audio (loads snd_bcm2835)
dtparam=audio=on

# Automatically load overlays for detected cameras
camera_auto_detect=1

# Automatically load overlays for detected DSI displays
display_auto_detect=1

# Automatically load initramfs files, if found
auto_initramfs=1

# Enable DRM VC4 V3D driver
dtoverlay=vc4-kms-v3d
max_framebuffers=2

# Don't have the firmware create an initial video= setting in cmdline.txt.
# Use the kernel's default instead.
disable_fw_kms_setup=1

# Run in 64-bit mode
arm_64bit=1

# Disable compensation for displays with overscan
disable_overscan=1

# Run as fast as firmware / board allows
arm_boost=1

[cm4]
# Enable host mode on the 2711 built-in XHCI USB controller.
# This line should be removed if the legacy DWC2 controller is required
# (e.g. for USB device mode) or if USB support is not required.
otg_mode=1

[cm5]
dtoverlay=dwc2,dr_mode=host

[all]
EOF
# The 2025-11-24 release's seed files (overwritten by piforge per node).
cat >"$B/user-data" <<'EOF'
#cloud-config
# Stand-in for Raspberry Pi OS's default user-data.
ssh_pwauth: false
EOF
cat >"$B/meta-data" <<'EOF'
dsmode: local
instance_id: rpios-image
EOF
cat >"$B/network-config" <<'EOF'
network:
  version: 2
  ethernets:
    eth0:
      dhcp4: true
      optional: true
EOF

cat >"$R/etc/fstab" <<EOF
proc            /proc           proc    defaults          0       0
PARTUUID=$DISK_ID-01  /boot/firmware  vfat    defaults          0       2
PARTUUID=$DISK_ID-02  /               ext4    defaults,noatime  0       1
EOF
mkdir -p "$R/boot/firmware"
echo raspberrypi >"$R/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n\n127.0.1.1\traspberrypi\n' >"$R/etc/hosts"
: >"$R/etc/machine-id"
chmod 0444 "$R/etc/machine-id"
rm -f "$R/var/lib/dbus/machine-id"
# The ssh host keys openssh-server's postinst made stay (see the top); ssh.service is disabled,
# as pi-gen's stage2 leaves it with ENABLE_SSH=0 (rpi-imager's first-boot script enables it).
ls "$R"/etc/ssh/ssh_host_ed25519_key "$R"/etc/ssh/ssh_host_rsa_key >/dev/null || die "openssh-server made no host keys"
rm -f "$R/etc/systemd/system/multi-user.target.wants/ssh.service" "$R/etc/systemd/system/sshd.service" \
	"$R/etc/systemd/system/sockets.target.wants/ssh.socket"

# apt: one source, like Raspberry Pi OS trixie's debian.sources (deb.debian.org trixie main,
# Signed-By a keyring the base ships), but naming the e2e's repository of Debian's .debs, signed
# with the e2e's throwaway key (apt-mirror.py says why). piforge fetch reads this from the
# image; the guest never reaches it (run.sh boots it with a restricted network and checks
# that apt did not try).
rm -f "$R/etc/apt/sources.list" "$R"/etc/apt/sources.list.d/*
install -m 0644 "$CACHE/apt-mirror/gnupg/archive-keyring.gpg" "$R/usr/share/keyrings/piforge-e2e-archive-keyring.gpg"
cat >"$R/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: http://$APT_HOST/debian/
Suites: $SUITE
Components: main
Signed-By: /usr/share/keyrings/piforge-e2e-archive-keyring.gpg
EOF
# No package lists: a guest that ran `apt-get update` would have some (report.sh checks).
rm -rf "$R"/var/lib/apt/lists/* && mkdir -p "$R/var/lib/apt/lists/partial"

# Swap as rpi-swap makes it on Raspberry Pi OS trixie (a stand-in; see the top).
mkdir -p "$R/etc/rpi/swap.conf.d" "$R/usr/lib/systemd/system-generators"
printf '# e2e stand-in for rpi-swap'"'"'s settings.\n[Main]\nMechanism=zram\n' >"$R/etc/rpi/swap.conf"
cat >"$R/usr/lib/systemd/system-generators/piforge-e2e-rpi-swap-generator" <<'EOF'
#!/bin/sh
# piforge e2e STAND-IN for Raspberry Pi OS trixie's rpi-swap generator: Mechanism= from
# /etc/rpi/swap.conf, then /etc/rpi/swap.conf.d/*.conf in order (the last one wins); unless it
# is `none`, a zram swap device (the file part of `zram+file` is left out).
# SWAP_ROOT: another root, for checking an image from the host.
root=${SWAP_ROOT:-}
out=$1
m=zram
for f in "$root/etc/rpi/swap.conf" "$root"/etc/rpi/swap.conf.d/*.conf; do
	[ -f "$f" ] || continue
	v=$(sed -n 's/^[[:space:]]*Mechanism[[:space:]]*=[[:space:]]*//p' "$f" | tail -n 1)
	[ -n "$v" ] && m=$v
done
[ "$m" = none ] && exit 0
cat >"$out/piforge-e2e-zram0.service" <<UNIT
[Unit]
Description=e2e stand-in for rpi-swap: make /dev/zram0 a swap device (Mechanism=$m)
DefaultDependencies=no
Before=dev-zram0.swap

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'modprobe zram num_devices=1 && echo 256M >/sys/block/zram0/disksize && mkswap /dev/zram0'
UNIT
cat >"$out/dev-zram0.swap" <<UNIT
[Unit]
Description=e2e stand-in for rpi-swap: zram swap
Requires=piforge-e2e-zram0.service
After=piforge-e2e-zram0.service

[Swap]
What=/dev/zram0
Priority=100
UNIT
mkdir -p "$out/swap.target.wants"
ln -sf ../dev-zram0.swap "$out/swap.target.wants/dev-zram0.swap"
EOF
chmod 0755 "$R/usr/lib/systemd/system-generators/piforge-e2e-rpi-swap-generator"

# The first-boot root expansion (see the top): `resize` on the kernel command line grows the
# root partition to the end of the disk and the filesystem with it, then leaves cmdline.txt
# without the token, as Raspberry Pi OS does once.
mkdir -p "$R/usr/local/lib/piforge-e2e"
cat >"$R/usr/local/lib/piforge-e2e/resize-root" <<'EOF'
#!/bin/sh
# piforge e2e STAND-IN for Raspberry Pi OS trixie's first-boot root expansion.
set -eu
root=$(findmnt -n -o SOURCE /)
part=${root#/dev/}
disk=/dev/$(lsblk -n -o PKNAME "$root" | head -n 1)
n=$(cat "/sys/class/block/$part/partition")
echo "resize: growing partition $n of $disk ($root) to the end of the disk"
echo ', +' | sfdisk --no-reread --no-tell-kernel -q -N "$n" "$disk"
partx -u -n "$n" "$disk"
resize2fs "$root"
sed -i 's/ resize\( \|$\)/\1/' /boot/firmware/cmdline.txt
sync
EOF
chmod 0755 "$R/usr/local/lib/piforge-e2e/resize-root"
cat >"$R/etc/systemd/system/piforge-e2e-resize.service" <<'EOF'
[Unit]
Description=piforge e2e stand-in: grow the root filesystem on first boot (cmdline.txt `resize`)
DefaultDependencies=no
ConditionKernelCommandLine=resize
RequiresMountsFor=/ /boot/firmware
After=systemd-remount-fs.service
Before=sysinit.target cloud-init-local.service shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/lib/piforge-e2e/resize-root

[Install]
WantedBy=sysinit.target
EOF
mkdir -p "$R/etc/systemd/system/sysinit.target.wants"
ln -sf /etc/systemd/system/piforge-e2e-resize.service "$R/etc/systemd/system/sysinit.target.wants/piforge-e2e-resize.service"
# Keep /boot small: the kernel lives on the boot partition, as on a Pi.
rm -f "$R/boot/vmlinuz-$kver" "$R/boot/initrd.img-$kver"

# cloud-init as Raspberry Pi OS configures it.
cat >"$R/etc/cloud/cloud.cfg.d/99_raspberry-pi.cfg" <<'EOF'
# configure cloud-init with NoCloud
datasource_list: [ NoCloud, None ]
datasource:
  NoCloud:
    seedfrom: file:///boot/firmware/
EOF
mkdir -p "$R/etc/systemd/system/cloud-init-local.service.d"
cat >"$R/etc/systemd/system/cloud-init-local.service.d/10-boot-firmware.conf" <<'EOF'
# The NoCloud seed is on the boot partition: do not look before it is mounted.
[Unit]
RequiresMountsFor=/boot/firmware
EOF
# systemd-networkd renders cloud-init's network-config (Raspberry Pi OS uses NetworkManager).
mkdir -p "$R/etc/systemd/system/multi-user.target.wants" "$R/etc/systemd/system/sockets.target.wants" \
	"$R/etc/systemd/system/network-online.target.wants"
ln -sf /usr/lib/systemd/system/systemd-networkd.service "$R/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
ln -sf /usr/lib/systemd/system/systemd-networkd.socket "$R/etc/systemd/system/sockets.target.wants/systemd-networkd.socket"
ln -sf /usr/lib/systemd/system/systemd-networkd-wait-online.service "$R/etc/systemd/system/network-online.target.wants/systemd-networkd-wait-online.service"

# The e2e report: runs only with `piforge.e2e_report` on the kernel command line.
mkdir -p "$R/usr/local/lib/piforge-e2e"
install -m 0755 "$(dirname "$SCRIPT")/report.sh" "$R/usr/local/lib/piforge-e2e/report"
cat >"$R/etc/systemd/system/piforge-e2e-report.service" <<'EOF'
[Unit]
Description=piforge e2e: report this node's state on the serial console, then power off
ConditionKernelCommandLine=piforge.e2e_report
DefaultDependencies=no
# DefaultDependencies=no: multi-user.target would otherwise be ordered after this unit (a cycle).
After=sysinit.target basic.target multi-user.target cloud-init.target piforge-kubeadm.service containerd.service kubelet.service
Conflicts=shutdown.target
Before=shutdown.target

[Service]
Type=oneshot
ExecStart=/usr/local/lib/piforge-e2e/report
StandardOutput=tty
StandardError=journal+console
TTYPath=/dev/ttyAMA0
TimeoutStartSec=900

[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/piforge-e2e-report.service "$R/etc/systemd/system/multi-user.target.wants/piforge-e2e-report.service"

# ---------------------------------------------------------------------------
# Filesystems and the partition table.
say "image: filesystems"
root_kib=$(du -sk --apparent-size "$R" | cut -f1)
root_mib=$(((root_kib * 12 / 10 / 1024 + 200 + 3) / 4 * 4))
ROOT_SECT=$((root_mib * 2048))
BOOT_SECT=$((BOOT_MIB * 2048))
IMG=$WORK/standin-trixie.img
truncate -s $(((P2 + ROOT_SECT) * 512)) "$IMG"
sfdisk -q --no-reread --no-tell-kernel "$IMG" <<EOF >/dev/null
label: dos
label-id: 0x$DISK_ID
unit: sectors

start=$P1, size=$BOOT_SECT, type=c
start=$P2, size=$ROOT_SECT, type=83
EOF
mkfs.fat -F 32 -S 512 -s 8 -h "$P1" -n bootfs --offset "$P1" "$IMG" $((BOOT_SECT / 2)) >"$WORK/mkfs.log" 2>&1 ||
	{ cat "$WORK/mkfs.log" >&2; die "mkfs.fat failed"; }
export MTOOLS_SKIP_CHECK=1
mcopy -o -i "$IMG@@$((P1 * 512))" "$B"/* ::/
truncate -s "${root_mib}M" "$WORK/root.ext4"
mkfs.ext4 -q -F -L rootfs -O '^huge_file,metadata_csum_seed,orphan_file' -E root_owner=0:0 -d "$R" "$WORK/root.ext4"
e2fsck -fn "$WORK/root.ext4" >/dev/null 2>&1 || die "e2fsck -fn failed on the new root filesystem"
dd if="$WORK/root.ext4" of="$IMG" bs=4M oflag=seek_bytes seek=$((P2 * 512)) conv=notrunc,sparse status=none
rm -f "$WORK/root.ext4"

say "image: compressing"
zstd -q -T0 -3 -f "$IMG" -o "$WORK/standin-trixie.img.zst"
mv -f "$WORK/standin-trixie.img.zst" "$IMG_ZST"
echo "$SCRIPT_SHA" >"$CACHE/standin.stamp"
say "built $IMG_ZST ($(du -h "$IMG_ZST" | cut -f1), kernel $kver) in $((SECONDS - T0)) s"
