#!/usr/bin/env bash
# formats: `piforge build --format xz` of a 1-node and a 10-node cluster (one control plane,
# the rest workers) from the same 2 GiB image (benches/customize.sh's input: ~1.1 GB of
# incompressible files), same run, alternating. Node images differ by a few kilobytes, so the
# 10-node build compresses the shared chunks once and copies them into every other node's
# file. Goal (issue 13): 10 nodes at most 2x the wall time of 1 node. Also: the same 1-node
# build in zst, and `xz -T0 -6` of one node image as the reference for the ratio and speed.
#
#   benches/formats.sh [WORKDIR]   (default: target/bench; REPS=1 by default: minutes per rep)
#   IMAGE=path/to.img benches/formats.sh   (another input, e.g. the 120 MB trixie fixture)
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(realpath -m "${1:-target/bench}")
reps=${REPS:-1}
image=${IMAGE:-$work/root-2g.img}
[[ -n ${IMAGE:-} || -s $image ]] || bash benches/customize.sh "$work" >/dev/null
cargo build --release --quiet
piforge=$PWD/target/release/piforge
arts=$work/build-artifacts
[[ -d $arts ]] || bash tests/fixtures/make-artifacts.sh "$arts" 1.34.11
spec() { # spec DIR NODES
    mkdir -p "$1"
    {
        printf 'name: bench\nimage:\n  source: %s\nkubernetes:\n  version: "1.34.11"\nnetwork:\n  gateway: 192.168.7.1\n  dns: [192.168.7.1]\n' "$image"
        printf 'ssh_authorized_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGyFQ2JzvZ1bq0cJ5i6L3yq0u8ZP0eGq5u3y2Yc8kq9X b@x"]\nnodes:\n'
        printf '  - name: cp-1\n    role: control-plane\n    address: 192.168.7.10/24\n'
        for i in $(seq 2 "$2"); do printf '  - name: w-%d\n    role: worker\n' "$i"; done
    } > "$1/cluster.yaml"
}
spec "$work/f1" 1
spec "$work/f10" 10
secs() { # wall seconds of a command that must succeed
    local t0 t1
    t0=$(date +%s.%N)
    "$@" > /dev/null 2> "$work/formats.err" || { cat "$work/formats.err" >&2; exit 1; }
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'
}
run() { # run DIR FORMAT
    PIFORGE_CACHE=$work/cache "$piforge" build --spec "$1/cluster.yaml" --out "$1/dist" \
        --artifacts "$arts" --allow-unpinned --format "$2"
}
one=() ten=()
for i in $(seq "$reps"); do
    rm -rf "$work/f1/dist" "$work/f10/dist"
    a=$(secs run "$work/f1" xz) b=$(secs run "$work/f10" xz)
    one+=("$a") ten+=("$b")
    echo "rep $i: xz: 1 node ${a}s, 10 nodes ${b}s"
done
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
m1=$(median "${one[@]}") m10=$(median "${ten[@]}")
echo "xz median: 1 node ${m1}s, 10 nodes ${m10}s, ratio 10/1 $(awk -v a="$m1" -v b="$m10" 'BEGIN { printf "%.2f", b / a }')"
echo "xz sizes: $(stat -c %s "$work/f1/dist/cp-1.img.xz") bytes per node file; 10 nodes $(du -sk "$work/f10/dist" | cut -f1) KiB"
rm -rf "$work/f10/dist"
# The raw image once, then zst and the reference xz of it.
rm -rf "$work/f1/dist"; secs run "$work/f1" img >/dev/null
z=$(secs run "$work/f1" zst)
echo "zst: 1 node ${z}s (build included), $(stat -c %s "$work/f1/dist/cp-1.img.zst") bytes"
r=$(secs sh -c "xz -T0 -6 -c '$work/f1/dist/cp-1.img' > '$work/ref.xz'")
echo "reference: xz -T0 -6 of the raw node image ${r}s, $(stat -c %s "$work/ref.xz") bytes"
rm -rf "$work/f1/dist" "$work/ref.xz"
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), load $(cut -d' ' -f1-3 /proc/loadavg) (shared with other builds)"
