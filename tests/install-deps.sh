#!/usr/bin/env bash
# install-deps.sh: install the Debian packages piforge's tests and fixtures need.
#
# Does nothing (fast) when they are all installed. As root, installs the
# missing ones (apt-get update only then). As a normal user, prints one line
# naming the missing packages and exits 1.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

PKGS=(e2fsprogs libext2fs-dev dosfstools mtools fdisk gdisk bmap-tools cloud-init
	xz-utils zstd gzip zip unzip attr openssl pkg-config shellcheck python3-yaml
	systemd openssh-client netplan.io gpgv gnupg dpkg-dev bsdutils mount xfsprogs time)

# Without dpkg (not Debian): probe a command each package provides.
probe() {
	case $1 in
	e2fsprogs) command -v mkfs.ext4 && command -v debugfs && command -v e2fsck ;;
	libext2fs-dev) pkg-config --exists ext2fs ;;
	dosfstools) command -v mkfs.vfat && command -v fsck.vfat ;;
	mtools) command -v mcopy ;;
	openssh-client) command -v ssh-keygen ;;
	netplan.io) command -v netplan ;;
	bsdutils) command -v script ;;
	fdisk) command -v sfdisk ;;
	gdisk) command -v sgdisk ;;
	bmap-tools) command -v bmaptool ;;
	mount) command -v losetup && command -v mount ;;
	xfsprogs) command -v mkfs.xfs ;;
	time) test -x /usr/bin/time ;;
	cloud-init) command -v cloud-init ;;
	xz-utils) command -v xz ;;
	attr) command -v setfattr ;;
	python3-yaml) python3 -c 'import yaml' ;;
	systemd) command -v systemd-analyze ;;
	gnupg) command -v gpg ;;
	dpkg-dev) command -v dpkg-scanpackages ;;
	*) command -v "$1" ;;
	esac >/dev/null 2>&1
}

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
	status=$(dpkg-query -W -f='${Package} ${Status}\n' "${PKGS[@]}" 2>/dev/null || true)
	for p in "${PKGS[@]}"; do
		grep -qx "$p install ok installed" <<<"$status" || missing+=("$p")
	done
else
	for p in "${PKGS[@]}"; do probe "$p" || missing+=("$p"); done
fi

# The tests run `python3` from PATH, which may be another Python than Debian's (pyenv):
# python3-yaml serves only Debian's, so that one gets PyYAML from PyPI when it lacks it.
pyyaml() {
	python3 -c 'import yaml' >/dev/null 2>&1 && return 0
	if [[ $(id -u) -ne 0 ]]; then
		echo "install-deps.sh: $(command -v python3) has no PyYAML (python3 -m pip install pyyaml)" >&2
		return 1
	fi
	python3 -m pip install -q pyyaml
}

# SPDX's own validator for the build's SBOM (`pyspdxtools -i FILE`), from PyPI: Debian packages
# none. Debian's own python3 refuses pip without --break-system-packages (PEP 668).
spdx_tools() {
	command -v pyspdxtools >/dev/null 2>&1 && return 0
	if [[ $(id -u) -ne 0 ]]; then
		echo "install-deps.sh: no pyspdxtools (python3 -m pip install spdx-tools)" >&2
		return 1
	fi
	python3 -m pip install -q spdx-tools 2>/dev/null ||
		python3 -m pip install -q --break-system-packages spdx-tools
}

if ((${#missing[@]} == 0)); then
	pyyaml
	spdx_tools
	exit
fi

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
	echo "install-deps.sh: missing packages: ${missing[*]} (as root: apt-get install ${missing[*]})" >&2
	exit 1
fi

echo "install-deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y --no-install-recommends "${missing[@]}"
pyyaml
spdx_tools
