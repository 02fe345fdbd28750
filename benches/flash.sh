#!/usr/bin/env bash
# flash: writing one node image (2 GiB, about 1.1 GiB mapped: the customize benchmark's input
# built into a node) to a regular file and to a loop device, in one run, alternating:
#   dd if=IMG of=T bs=4M conv=fsync      the whole raw image, no verify
#   bmaptool copy IMG T                  mapped blocks only (bmap beside IMG), checks the
#                                        source against the bmap, no read-back
#   piforge flash IMG T --yes --force    mapped blocks only, first MiB last, then read back
#                                        (page cache dropped / O_DIRECT) and compared
#   piforge flash ... --no-verify        the same, no read-back: its whole process's wall time
#                                        (reading the .bmap, checking the device included) is
#                                        the fair comparison with bmaptool copy's
#   piforge flash ... --max-gap G        for each G in $GAPS (default "0 1048576"): mapped
#                                        ranges at most G bytes apart written as one (0,
#                                        piforge's default, writes each range alone)
# Goals (issue 14): piforge's write at most bmaptool copy's time; its verify at most its write.
#
#   FRAGMENTED=1 benches/flash.sh   instead of the node image: a 1 GiB image of 4096 pieces of
#       64 KiB (random data) with gaps of 4-508 KiB of holes between them, its .bmap made by
#       `bmaptool create` (a foreign map of many small ranges, as bmaptool makes of a
#       downloaded image): where joining close ranges matters.
#
#   benches/flash.sh [WORKDIR]   (default: target/bench; root and losetup needed for the
#                                 loop device; REPS=3 by default)
#   IMAGE=path/to.img benches/flash.sh   (another base image to build the node from)
#   BASELINE=path/to/piforge benches/flash.sh   (also runs that binary, --no-verify, in the
#                                 same reps: an earlier piforge, for before/after numbers)
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(realpath -m "${1:-target/bench}")
reps=${REPS:-3}
# piforge's --max-gap values to run (bytes; 1048576 is the default, 0 joins nothing).
gaps=${GAPS:-0 1048576}
mkdir -p "$work"
fixtures=${PIFORGE_FIXTURES:-target/fixtures}
[[ ${FRAGMENTED:-} == 1 ]] || bash tests/fixtures/make-fixtures.sh "$fixtures" >/dev/null
cargo build --release --quiet
piforge=$PWD/target/release/piforge
export PIFORGE_CACHE=$work/cache
command -v bmaptool >/dev/null || { echo "bmaptool (bmap-tools) is needed" >&2; exit 1; }
command -v losetup >/dev/null || { echo "losetup is needed (and root)" >&2; exit 1; }

fw=$work/flash
mkdir -p "$fw"
# The base: benches/customize.sh's 2 GiB input (made the same way when missing).
base=${IMAGE:-$work/root-2g.img}
if [[ ${FRAGMENTED:-} == 1 ]]; then
    img=$fw/frag.img
    if [[ ! -s $img.bmap ]]; then
        python3 - "$img" <<'PY'
import os, random, sys
random.seed(14)
with open(sys.argv[1], "wb") as f:
    f.truncate(1 << 30)
    at = 0
    for _ in range(4096):
        f.seek(at)
        f.write(os.urandom(64 << 10))
        at += (64 << 10) + random.randrange(1, 128) * 4096
        if at + (64 << 10) > 1 << 30:
            break
PY
        bmaptool -q create -o "$img.bmap" "$img"
    fi
elif [[ ! -s $base ]]; then
    echo "making $base (once)..." >&2
    fill=$work/fill
    rm -rf "$fill" && mkdir -p "$fill/usr/lib/bench"
    for i in $(seq -w 1 22); do
        head -c $((50 << 20)) /dev/urandom > "$fill/usr/lib/bench/lib$i.so"
    done
    "$piforge" customize "$fixtures/trixie.img" -o "$base.tmp" --grow 2G --root-overlay "$fill" >/dev/null
    rm -rf "$fill"
    mv "$base.tmp" "$base"
fi

# One node image with its .bmap.
if [[ ${FRAGMENTED:-} != 1 ]]; then
arts=$work/build-artifacts
[[ -d $arts ]] || bash tests/fixtures/make-artifacts.sh "$arts" 1.34.11 >/dev/null
{
    printf 'name: bench\nimage:\n  source: %s\nkubernetes:\n  version: "1.34.11"\nnetwork:\n  gateway: 192.168.7.1\n  dns: [192.168.7.1]\n' "$base"
    printf 'ssh_authorized_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGyFQ2JzvZ1bq0cJ5i6L3yq0u8ZP0eGq5u3y2Yc8kq9X b@x"]\nnodes:\n'
    printf '  - name: cp-1\n    role: control-plane\n    address: 192.168.7.10/24\n'
} > "$fw/cluster.yaml"
img=$fw/dist/cp-1.img
if [[ ! -s $img || ! -s $img.bmap ]]; then
    "$piforge" build --spec "$fw/cluster.yaml" --out "$fw/dist" --artifacts "$arts" --allow-unpinned >/dev/null 2>"$fw/build.err" ||
        { cat "$fw/build.err" >&2; exit 1; }
fi
fi
size=$(stat -c %s "$img")
mapped=$(sed -n 's/.*<MappedBlocksCount> *\([0-9]*\) *<.*/\1/p' "$img.bmap")
echo "image: $img, $size bytes, $((mapped * 4096)) bytes mapped ($mapped blocks, $(grep -c '<Range' "$img.bmap") ranges)"
cat "$img" > /dev/null # in the page cache for every tool alike

secs() { # wall seconds of a command that must succeed; its stdout in $work/flash/last.out
    local t0 t1
    t0=$(date +%s.%N)
    "$@" > "$fw/last.out" 2> "$fw/last.err" || { cat "$fw/last.err" >&2; exit 1; }
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'
}

file_target=$fw/target.img
loop_backing=$fw/loop.img
truncate -s 0 "$loop_backing" && truncate -s $((size + (64 << 20))) "$loop_backing"
loop=$(losetup -f --show "$loop_backing")
trap 'losetup -d "$loop"; rm -f "$loop_backing" "$file_target"' EXIT

declare -A times
add() { times[$1]="${times[$1]:-} $2"; }
for rep in $(seq "$reps"); do
    for kind in file loop; do
        if [[ $kind == file ]]; then t=$file_target; else t=$loop; fi
        # The file target is made anew for each tool; sync so that freeing the last one's
        # blocks is not charged to the next.
        fresh() { [[ $kind == file ]] && rm -f "$file_target"; sync; }
        fresh; d=$(secs dd if="$img" of="$t" bs=4M conv=fsync status=none)
        fresh; b=$(secs bmaptool -q copy "$img" "$t")
        line="rep $rep $kind: dd ${d}s, bmaptool copy ${b}s"
        add "$kind-dd" "$d"; add "$kind-bmaptool" "$b"
        fresh; n=$(secs "$piforge" flash "$img" "$t" --yes --force --no-verify)
        add "$kind-nv" "$n"; line="$line, piforge --no-verify ${n}s"
        if [[ -n ${BASELINE:-} ]]; then
            fresh; n=$(secs "$BASELINE" flash "$img" "$t" --yes --force --no-verify)
            add "$kind-base" "$n"; line="$line, baseline --no-verify ${n}s"
        fi
        for g in $gaps; do
            fresh; p=$(secs "$piforge" flash "$img" "$t" --yes --force --max-gap "$g")
            # "T: wrote X of a Y image in W s (...); verified in V s"
            w=$(sed -n 's/.* image in \([0-9.]*\) s .*/\1/p' "$fw/last.out")
            v=$(sed -n 's/.*verified in \([0-9.]*\) s.*/\1/p' "$fw/last.out")
            add "$kind-$g" "$p"; add "$kind-$g-write" "$w"; add "$kind-$g-verify" "$v"
            line="$line, piforge --max-gap $g ${p}s (write ${w}s, verify ${v}s)"
        done
        echo "$line, load $(cut -d' ' -f1 /proc/loadavg)"
    done
done
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
for kind in file loop; do
    # shellcheck disable=SC2086
    line="median $kind: dd $(median ${times[$kind-dd]})s, bmaptool copy $(median ${times[$kind-bmaptool]})s"
    # shellcheck disable=SC2086
    line="$line, piforge --no-verify $(median ${times[$kind-nv]})s"
    # shellcheck disable=SC2086
    [[ -z ${BASELINE:-} ]] || line="$line, baseline --no-verify $(median ${times[$kind-base]})s"
    for g in $gaps; do
        # shellcheck disable=SC2086
        line="$line, piforge --max-gap $g $(median ${times[$kind-$g]})s (write $(median ${times[$kind-$g-write]})s, verify $(median ${times[$kind-$g-verify]})s)"
    done
    echo "$line"
done
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(free -g | awk '/^Mem:/ {print $2}') GiB, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
