#!/usr/bin/env bash
# xz decompression: piforge's decoder against `xz -dc -T0`, on the same ~1 GiB multi-block
# .img.xz, in the same run, 3 repetitions each. Prints MB/s (of decompressed output) and the ratio.
#
#   benches/decompress.sh [WORKDIR]     (default: target/bench; the input is made once and kept)
#
# The input looks like an OS image: runs of real binaries from /usr/lib between runs of zeros,
# compressed as `xz -T2 -6 --block-size=24MiB` (what `xz -T0 -6` does: blocks of 3x the dictionary).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-target/bench}
reps=${REPS:-3}
mkdir -p "$work"
img_xz=$work/os-1g.img.xz

if [[ ! -s $img_xz ]]; then
    echo "making $img_xz (once; a few minutes)..." >&2
    set +o pipefail # `head -c` ends the `cat` early
    binaries() {
        find /usr/lib /usr/bin /usr/share -type f -size +16k -print0 2>/dev/null | sort -z |
            xargs -0 cat 2>/dev/null | head -c "$1"
    }
    zeros() { head -c "$1" /dev/zero; }
    {
        zeros $((4 << 20))      # partition gap
        binaries $((64 << 20))  # boot partition
        zeros $((60 << 20))
        binaries $((448 << 20)) # root filesystem data
        zeros $((448 << 20))    # free space
    } | xz -T2 -6 --block-size=24MiB > "$img_xz.tmp"
    set -o pipefail
    [[ $(xz --robot -l "$img_xz.tmp" | awk -F'\t' '/^totals/ {print $5}') == $((1 << 30)) ]]
    mv "$img_xz.tmp" "$img_xz"
fi

cargo build --release --quiet --example decompress
load0=$(cut -d" " -f1-3 /proc/loadavg)
bin=target/release/examples/decompress

size=$(xz --robot -l "$img_xz" | awk -F'\t' '/^totals/ {print $5}')
blocks=$(xz --robot -l "$img_xz" | awk -F'\t' '/^totals/ {print $3}')
echo "input: $img_xz, $(stat -c %s "$img_xz") bytes compressed, $size decompressed, $blocks blocks"

# Runs a command with its output thrown away; prints "MB/s cpu-seconds" (MB of decompressed image
# per wall-clock second; user+system CPU time).
measure() {
    local t
    t=$( { TIMEFORMAT='%R %U %S'; time "$@" > /dev/null; } 2>&1 )
    awk -v size="$size" '{ printf "%.1f %.2f\n", size / $1 / 1e6, $2 + $3 }' <<< "$t"
}
piforge=() xz=()
for i in $(seq "$reps"); do
    read -r p pcpu < <(measure "$bin" decode "$img_xz")
    read -r x xcpu < <(measure xz -dc -T0 "$img_xz")
    piforge+=("$p") xz+=("$x")
    echo "rep $i: piforge $p MB/s (${pcpu}s CPU), xz -dc -T0 $x MB/s (${xcpu}s CPU)"
done
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
p=$(median "${piforge[@]}") x=$(median "${xz[@]}")
echo "median: piforge $p MB/s, xz -dc -T0 $x MB/s, ratio $(awk -v p="$p" -v x="$x" 'BEGIN { printf "%.2f", p / x }')"

cache=$(mktemp -d "$work/cache.XXXXXX")
open=$("$bin" open "$img_xz" "$cache")
echo "open_image (sha256 + decode + sparse write + fsync): $open, $(du -k "$cache"/images/*.img | cut -f1) KiB allocated"
rm -rf "$cache"
echo "sha256 of the input: $("$bin" sha256 "$img_xz")"
echo "load average before/after: $load0 / $(cut -d" " -f1-3 /proc/loadavg)"
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(xz --version | head -1)"
