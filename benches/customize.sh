#!/usr/bin/env bash
# customize: `piforge customize` adding 400 MB of files to a 2 GiB image, against the floor a
# tool of this kind cannot beat: `cp --sparse=always` of the input plus writing 400 MB to a new
# file. Same run, alternating, REPS repetitions each. Goal (issue 3): piforge within 1.5x.
#
#   benches/customize.sh [WORKDIR]    (default: target/bench; the 2 GiB input is made once)
#
# The input is the trixie-shaped fixture grown to a 2 GiB root partition holding ~1.1 GB of
# files (so the copy has real data to move); the overlay is 400 MB in 40 files of incompressible
# bytes, like the Kubernetes payload (kubelet, containerd, CNI plugins are 10-100 MB each).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(realpath -m "${1:-target/bench}")
reps=${REPS:-3}
mkdir -p "$work"
fixtures=${PIFORGE_FIXTURES:-target/fixtures}
bash tests/fixtures/make-fixtures.sh "$fixtures" >/dev/null
cargo build --release --quiet
piforge=$PWD/target/release/piforge
export PIFORGE_CACHE=$work/cache

input=$work/root-2g.img
payload=$work/payload-400m
if [[ ! -s $input ]]; then
    echo "making $input (once)..." >&2
    fill=$work/fill
    rm -rf "$fill" && mkdir -p "$fill/usr/lib/bench"
    for i in $(seq -w 1 22); do
        head -c $((50 << 20)) /dev/urandom > "$fill/usr/lib/bench/lib$i.so"
    done
    "$piforge" customize "$fixtures/trixie.img" -o "$input.tmp" --grow 2G --root-overlay "$fill" >/dev/null
    rm -rf "$fill"
    mv "$input.tmp" "$input"
fi
if [[ ! -d $payload ]]; then
    mkdir -p "$payload.tmp/usr/local/bin"
    for i in $(seq -w 1 40); do
        head -c 10000000 /dev/urandom > "$payload.tmp/usr/local/bin/tool$i"
    done
    mv "$payload.tmp" "$payload"
fi
echo "input: $input, $(stat -c %s "$input") bytes, $(du -k "$input" | cut -f1) KiB allocated"
echo "payload: $(du -sb "$payload" | cut -f1) bytes in $(find "$payload" -type f | wc -l) files"

secs() { local t; t=$( { TIMEFORMAT='%R'; time "$@" > /dev/null; } 2>&1 ); echo "$t"; }
baseline() {
    cp --sparse=always "$input" "$work/cp.img"
    cat "$payload"/usr/local/bin/* > "$work/payload.bin"
    sync -f "$work/cp.img"
}
ours() {
    "$piforge" customize "$input" -o "$work/out.img" --root-overlay "$payload" --grow off
}
b=() p=()
for i in $(seq "$reps"); do
    rm -f "$work/cp.img" "$work/payload.bin" "$work/out.img"
    tb=$(secs baseline)
    tp=$(secs ours)
    b+=("$tb") p+=("$tp")
    echo "rep $i: cp --sparse + write 400 MB ${tb}s, piforge customize ${tp}s"
done
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
mb=$(median "${b[@]}") mp=$(median "${p[@]}")
echo "median: baseline ${mb}s, piforge ${mp}s, ratio $(awk -v p="$mp" -v b="$mb" 'BEGIN { printf "%.2f", p / b }') (goal <= 1.5)"
# The root partition's offset from sfdisk (an oracle independent of piforge): the last one.
off=$(sfdisk -J "$work/out.img" | python3 -c 'import json,sys; t=json.load(sys.stdin)["partitiontable"]; print(t["partitions"][-1]["start"]*t.get("sectorsize",512))')
e2fsck -fn "$work/out.img?offset=$off" >/dev/null && echo "e2fsck -fn on the output: clean"
rm -f "$work/cp.img" "$work/payload.bin" "$work/out.img"
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(free -g | awk '/Mem:/ {print $2}') GiB, load $(cut -d' ' -f1-3 /proc/loadavg)"
