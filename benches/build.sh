#!/usr/bin/env bash
# build: the cost of one more node, against the floors, in one run (`make bench-build`).
#
# From the same 2 GiB image (1.1 GB of data; benches/customize.sh makes it), alternating,
# REPS repetitions each (median):
#   - `piforge build` of 1 and of 10 nodes (one control plane, the rest workers), raw outputs
#     on the work directory's filesystem, against `cp --sparse=always` of the image per extra
#     node (the floor without reflinks);
#   - the same on a loop-mounted XFS with reflink=1 (as root; xfsprogs installed when
#     missing), where each node's copy of its role image is a reflink: 10 nodes against 1;
#   - each of those built again with nothing changed, the nodes' digests remembered
#     (digest_memo.rs; every other build here forgets them first), into an empty output
#     directory ("again unchanged") and into the one the build before wrote ("in place": the
#     nodes keep its files, build/unchanged.rs; every other build here forgets the cache's
#     record of them);
#   - 1 node from the image compressed with xz, cold (empty piforge cache, the input's and the
#     artifacts' pages evicted from the page cache), cached, and built again with nothing
#     changed (its digests remembered, digest_memo.rs: every other build here forgets them
#     first), against `xz -dc -T0 image.img.xz > /dev/null` (its input evicted too);
#   - peak RSS of each build (GNU time's %M).
#
#   benches/build.sh [WORKDIR]   (default: target/bench)
#   IMAGE=mixed benches/build.sh   the same from benches/formats.sh's 2 GiB image holding ~400 MB
#                                  of compressible files (its .xz is minutes, not an hour, to
#                                  make on a small machine)
#   PIFORGE_BIN=path benches/build.sh   measure that binary (e.g. another branch's) instead of
#                                  this tree's target/release/piforge
#   COMPARE_BIN=path benches/build.sh   measure that binary too, alternating with the first in
#                                  every repetition (before/after in one run: the machine's load
#                                  changes between runs); each line names the binary
#   SKIP_REFLINK=1 benches/build.sh   leaves out the XFS reflink part
#   ONLY_XZ=1 benches/build.sh     only the .xz input part (issue 13's goal: 1 node cold at most
#                                  1.3x `xz -dc -T0`, cached at most 0.3x; the node image's
#                                  SHA-256 alone, at openssl's speed, is printed as the floor under
#                                  the cached build)
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(realpath -m "${1:-target/bench}")
reps=${REPS:-3}
if [[ ${IMAGE:-} == mixed ]]; then
    [[ -s $work/mixed-2g.img ]] || IMAGE=mixed ONLY_IMAGE=1 bash benches/formats.sh "$work" >/dev/null
    img=$work/mixed-2g.img
else
    [[ -s $work/root-2g.img ]] || bash benches/customize.sh "$work" >/dev/null
    img=$work/root-2g.img
fi
if [[ -n ${PIFORGE_BIN:-} ]]; then
    piforge=$(realpath "$PIFORGE_BIN")
else
    cargo build --release --quiet
    piforge=$PWD/target/release/piforge
fi
bins=("$piforge")
[[ -z ${COMPARE_BIN:-} ]] || bins+=("$(realpath "$COMPARE_BIN")")
only_xz=${ONLY_XZ:-0}
[[ $only_xz != 1 || ${SKIP_XZ:-0} != 1 ]] || { echo "ONLY_XZ=1 and SKIP_XZ=1 leave nothing to measure" >&2; exit 1; }
# label BIN: how the output names a binary (A, B in the order given), the paths printed once.
label() { if [[ $1 == "${bins[0]}" ]]; then echo A; else echo B; fi; }
for b in "${bins[@]}"; do echo "binary $(label "$b"): $b" >&2; done
arts=$work/build-artifacts
k8s=1.34.11
[[ -d $arts ]] || bash tests/fixtures/make-artifacts.sh "$arts" "$k8s"
# SKIP_XZ=1 leaves out the xz part (compressing the 1.1 GB input once takes minutes).
if [[ ${SKIP_XZ:-0} != 1 && ! -s $img.xz ]]; then
    echo "making $img.xz (once)..." >&2
    xz -T0 -1 -k -c "$img" > "$img.xz.tmp" && mv "$img.xz.tmp" "$img.xz"
fi
timebin=/usr/bin/time
[[ -x $timebin ]] || { echo "GNU time (/usr/bin/time, Debian package time) is needed for peak RSS" >&2; exit 1; }

spec() { # spec DIR NODES IMAGE
    mkdir -p "$1"
    {
        printf 'name: bench\nimage:\n  source: %s\nkubernetes:\n  version: "%s"\n' "$3" "$k8s"
        printf 'network:\n  gateway: 192.168.7.1\n  dns: [192.168.7.1]\n'
        printf 'ssh_authorized_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGyFQ2JzvZ1bq0cJ5i6L3yq0u8ZP0eGq5u3y2Yc8kq9X b@x"]\nnodes:\n'
        printf '  - name: cp-1\n    role: control-plane\n    address: 192.168.7.10/24\n'
        for i in $(seq 2 "$2"); do printf '  - name: w-%d\n    role: worker\n' "$i"; done
    } > "$1/cluster.yaml"
}
spec "$work/b1" 1 "$img"
spec "$work/b10" 10 "$img"
[[ ${SKIP_XZ:-0} == 1 ]] || spec "$work/bxz" 1 "$img.xz"

rss_file=$(mktemp)
trap 'rm -f "$rss_file"' EXIT
# secs CMD...: wall seconds of CMD (its output discarded).
secs() { local t; t=$( { TIMEFORMAT='%R'; time "$@" > /dev/null 2>&1; } 2>&1 ); echo "$t"; }
# build DIR OUT [CACHE]; its peak RSS (KiB) is appended to $rss_file. $bin is the binary
# (default: the first). A one-node build's digests remembered from the build before (the
# cache's nodes/, digest_memo.rs) are forgotten first, so that every measured build hashes its
# images, unless REMEMBER=1 (the rebuild of a node that did not change, measured apart).
build() {
    [[ ${REMEMBER:-0} == 1 ]] || rm -rf "${3:-$work/cache}/nodes"
    [[ ${KEEP:-0} == 1 ]] || rm -rf "${3:-$work/cache}/outputs"
    PIFORGE_CACHE=${3:-$work/cache} "$timebin" -a -o "$rss_file" -f '%M' \
        "${bin:-$piforge}" build --spec "$1/cluster.yaml" --out "$2" --artifacts "$arts" --allow-unpinned
}
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
# evict FILE...: drops the files' pages from the page cache (written back first), so that the
# next read comes from the disk. Per file, not the whole cache (/proc/sys/vm/drop_caches is
# read-only in containers): coreutils documents `dd iflag=nocache count=0` for this.
evict() {
    local f
    for f in "$@"; do
        [[ -f $f ]] || continue
        sync -f "$f"
        dd if="$f" iflag=nocache count=0 status=none
    done
}
# cold_inputs: the xz input and every artifact file (the cold build's cache is new and empty).
cold_inputs() { evict "$img.xz"; while IFS= read -r -d '' f; do evict "$f"; done < <(find "$arts" -type f -print0); }
cpfloor() { cp --sparse=always "$img" "$work/cp-floor.img"; sync -f "$work/cp-floor.img"; rm -f "$work/cp-floor.img"; }

# Warm-up: secrets and the lock are made once per spec directory, not per measured build.
for d in b1 b10 bxz; do
    [[ -f $work/$d/cluster.yaml && ( $d != bxz || ${SKIP_XZ:-0} != 1 ) ]] || continue
    [[ $only_xz != 1 || $d == bxz ]] || continue
    rm -rf "$work/$d/dist"; build "$work/$d" "$work/$d/dist" > /dev/null 2>&1
done

if [[ $only_xz == 1 ]]; then
    echo "raw and reflink: SKIPPED (ONLY_XZ=1)"
else
declare -A one ten one_again ten_again one_kept ten_kept
cpf=()
# again DIR OUT: the build just made, made again with nothing changed (its digests remembered).
again() { rm -rf "$2"; REMEMBER=1 secs build "$1" "$2"; }
# inplace DIR OUT: the same, into the output directory the build before wrote (its files kept).
inplace() { REMEMBER=1 KEEP=1 secs build "$1" "$2"; }
for i in $(seq "$reps"); do
    c=$(secs cpfloor); cpf+=("$c")
    for bin in "${bins[@]}"; do
        rm -rf "$work/b1/dist" "$work/b10/dist"
        a=$(secs build "$work/b1" "$work/b1/dist"); ra=$(again "$work/b1" "$work/b1/dist")
        ka=$(inplace "$work/b1" "$work/b1/dist")
        b=$(secs build "$work/b10" "$work/b10/dist"); rb=$(again "$work/b10" "$work/b10/dist")
        kb=$(inplace "$work/b10" "$work/b10/dist")
        one[$bin]+=" $a" ten[$bin]+=" $b" one_again[$bin]+=" $ra" ten_again[$bin]+=" $rb"
        one_kept[$bin]+=" $ka" ten_kept[$bin]+=" $kb"
        echo "rep $i (raw, $(stat -f -c %T "$work"), $(label "$bin")): 1 node ${a}s, 10 nodes ${b}s, cp --sparse=always ${c}s; again unchanged: 1 node ${ra}s, 10 nodes ${rb}s; in place: 1 node ${ka}s, 10 nodes ${kb}s (load $(cut -d' ' -f1 /proc/loadavg))"
    done
done
mcp=$(median "${cpf[@]}")
for bin in "${bins[@]}"; do
    # shellcheck disable=SC2086 # the lists are space-separated numbers
    m1=$(median ${one[$bin]}) m10=$(median ${ten[$bin]})
    per=$(awk -v a="$m1" -v b="$m10" 'BEGIN { printf "%.2f", (b - a) / 9 }')
    echo "raw ($(label "$bin")): 1 node ${m1}s, 10 nodes ${m10}s, ratio 10/1 $(ratio "$m10" "$m1"); per extra node ${per}s = $(ratio "$per" "$mcp")x cp --sparse=always (${mcp}s)"
    # shellcheck disable=SC2086 # the lists are space-separated numbers
    a1=$(median ${one_again[$bin]}) a10=$(median ${ten_again[$bin]})
    echo "raw, built again unchanged ($(label "$bin")): 1 node ${a1}s, 10 nodes ${a10}s, ratio 10/1 $(ratio "$a10" "$a1")"
    # shellcheck disable=SC2086 # the lists are space-separated numbers
    k1=$(median ${one_kept[$bin]}) k10=$(median ${ten_kept[$bin]})
    echo "raw, built again unchanged in place ($(label "$bin")): 1 node ${k1}s, 10 nodes ${k10}s"
done
echo "10 images: $(du -sk "$work/b10/dist" | cut -f1) KiB allocated"

# Reflinks: a loop-mounted XFS with reflink=1 (root only), every binary alternating.
mnt=$work/xfs
if [[ ${SKIP_REFLINK:-0} == 1 ]]; then
    echo "reflink: SKIPPED (SKIP_REFLINK=1)"
elif [[ $(id -u) != 0 ]]; then
    echo "reflink: SKIPPED (not root: cannot loop-mount an XFS with reflink=1)"
elif ! command -v mkfs.xfs > /dev/null && ! { apt-get install -y -qq xfsprogs > /dev/null 2>&1 && command -v mkfs.xfs > /dev/null; }; then
    echo "reflink: SKIPPED (mkfs.xfs missing and xfsprogs could not be installed)"
else
    mkdir -p "$mnt"
    mountpoint -q "$mnt" || {
        rm -f "$work/xfs.img"; truncate -s 12G "$work/xfs.img"
        mkfs.xfs -q -m reflink=1 "$work/xfs.img"
        mount -o loop "$work/xfs.img" "$mnt"
    }
    trap 'umount "$mnt" 2>/dev/null || true; rm -f "$rss_file"' EXIT
    declare -A r1 r10 r1_again r10_again r1_kept r10_kept
    for i in $(seq "$reps"); do
        for bin in "${bins[@]}"; do
            rm -rf "$mnt/b1" "$mnt/b10"
            a=$(secs build "$work/b1" "$mnt/b1"); ra=$(again "$work/b1" "$mnt/b1")
            ka=$(inplace "$work/b1" "$mnt/b1")
            b=$(secs build "$work/b10" "$mnt/b10"); rb=$(again "$work/b10" "$mnt/b10")
            kb=$(inplace "$work/b10" "$mnt/b10")
            r1[$bin]+="$a " r10[$bin]+="$b " r1_again[$bin]+="$ra " r10_again[$bin]+="$rb "
            r1_kept[$bin]+="$ka " r10_kept[$bin]+="$kb "
            echo "rep $i (xfs reflink=1, $(label "$bin")): 1 node ${a}s, 10 nodes ${b}s; again unchanged: 1 node ${ra}s, 10 nodes ${rb}s; in place: 1 node ${ka}s, 10 nodes ${kb}s (load $(cut -d' ' -f1 /proc/loadavg))"
        done
    done
    for bin in "${bins[@]}"; do
        # shellcheck disable=SC2086 # the lists are words on purpose
        x1=$(median ${r1[$bin]}) x10=$(median ${r10[$bin]})
        echo "reflink ($(label "$bin")): 1 node ${x1}s, 10 nodes ${x10}s, ratio 10/1 $(ratio "$x10" "$x1")"
        # shellcheck disable=SC2086 # the lists are words on purpose
        a1=$(median ${r1_again[$bin]}) a10=$(median ${r10_again[$bin]})
        echo "reflink, built again unchanged ($(label "$bin")): 1 node ${a1}s, 10 nodes ${a10}s, ratio 10/1 $(ratio "$a10" "$a1")"
        # shellcheck disable=SC2086 # the lists are words on purpose
        k1=$(median ${r1_kept[$bin]}) k10=$(median ${r10_kept[$bin]})
        echo "reflink, built again unchanged in place ($(label "$bin")): 1 node ${k1}s, 10 nodes ${k10}s"
    done
    echo "10 images (last build): $(du -sk "$mnt/b10" | cut -f1) KiB by du (shared extents counted per file), xfs used $(df -k --output=used "$mnt" | tail -1) KiB"
    rm -rf "$mnt/b1" "$mnt/b10"
fi
fi

# One node from the .xz: cold (fresh cache, page cache dropped) and cached, against xz -dc.
if [[ ${SKIP_XZ:-0} == 1 ]]; then
    echo "xz input: SKIPPED (SKIP_XZ=1)"
else
xzs=()
declare -A colds warms sames
for i in $(seq "$reps"); do
    for bin in "${bins[@]}"; do
        # xz -dc right before each binary's builds: the ratio is taken against its neighbour.
        cold_inputs; x=$(secs sh -c "xz -dc -T0 '$img.xz' > /dev/null")
        rm -rf "$work/cache-cold" "$work/bxz/dist"; cold_inputs
        c=$(secs build "$work/bxz" "$work/bxz/dist" "$work/cache-cold")
        rm -rf "$work/bxz/dist"
        w=$(secs build "$work/bxz" "$work/bxz/dist" "$work/cache-cold")
        # The same node built again, nothing changed: its digests remembered (binaries
        # without digest_memo.rs hash it again).
        rm -rf "$work/bxz/dist"
        r=$(REMEMBER=1 secs build "$work/bxz" "$work/bxz/dist" "$work/cache-cold")
        rm -rf "$work/bxz/dist"
        xzs+=("$x") colds[$bin]+=" $c" warms[$bin]+=" $w" sames[$bin]+=" $r"
        echo "rep $i (xz input, $(label "$bin")): xz -dc -T0 ${x}s, 1 node cold ${c}s ($(ratio "$c" "$x")x), cached ${w}s ($(ratio "$w" "$x")x), again unchanged ${r}s ($(ratio "$r" "$x")x) (load $(cut -d' ' -f1 /proc/loadavg))"
    done
done
mx=$(median "${xzs[@]}")
# The floor under the cached build: the node image's SHA-256 (SHA256SUMS), every byte of it,
# holes included, on one core, at the speed `openssl speed` measures for SHA-256 on 1 MiB
# blocks (hashing only: reading the image, even cached, costs more).
if command -v openssl > /dev/null; then
    rate=$(openssl speed -evp sha256 -bytes 1048576 -seconds 2 2>/dev/null | awk '/^sha256/ { sub(/k$/, "", $2); print $2 * 1000 }')
    if [[ -n $rate ]]; then
        sh256=$(awk -v b="$(stat -c %s "$img")" -v r="$rate" 'BEGIN { printf "%.3f", b / r }')
        echo "floor: SHA-256 of the $(stat -c %s "$img")-byte image at $(awk -v r="$rate" 'BEGIN { printf "%.2f", r / 1e9 }') GB/s (openssl speed) ${sh256}s = $(ratio "$sh256" "$mx")x xz -dc -T0"
    fi
fi
for bin in "${bins[@]}"; do
    # shellcheck disable=SC2086 # the lists are space-separated numbers
    mc=$(median ${colds[$bin]}) mw=$(median ${warms[$bin]}) ms=$(median ${sames[$bin]})
    echo "xz input ($(label "$bin")): xz -dc -T0 ${mx}s; 1 node cold ${mc}s ($(ratio "$mc" "$mx")x), cached ${mw}s ($(ratio "$mw" "$mx")x), built again unchanged ${ms}s ($(ratio "$ms" "$mx")x)"
done
fi
rm -rf "$work/cache-cold" "$work/b1/dist" "$work/b10/dist" "$work/bxz/dist"

echo "peak RSS of any build: $(( $(grep -E '^[0-9]+$' "$rss_file" | sort -n | tail -1) / 1024 )) MiB"
echo "image: $(stat -c %s "$img") bytes, $(du -k "$img" | cut -f1) KiB allocated${SKIP_XZ:+}$([[ -s $img.xz ]] && echo "; xz $(stat -c %s "$img.xz") bytes")"
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(free -g | awk '/^Mem:/ { print $2 }') GiB, load $(cut -d' ' -f1-3 /proc/loadavg), work dir on $(stat -f -c %T "$work")"
