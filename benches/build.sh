#!/usr/bin/env bash
# build: the cost of one more node. `piforge build` of a 1-node and a 10-node cluster (one
# control plane, the rest workers) from the same 2 GiB image, same run, alternating. The root
# filesystem is edited once per role; each node then costs a sparse copy of its role's image
# plus its own kubeadm config and seed.
#
#   benches/build.sh [WORKDIR]   (default: target/bench; reuses benches/customize.sh's input)
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(realpath -m "${1:-target/bench}")
reps=${REPS:-3}
[[ -s $work/root-2g.img ]] || bash benches/customize.sh "$work" >/dev/null
cargo build --release --quiet
piforge=$PWD/target/release/piforge
arts=$work/build-artifacts
[[ -d $arts ]] || bash tests/fixtures/make-artifacts.sh "$arts" 1.34.11
spec() { # spec DIR NODES
    mkdir -p "$1"
    {
        printf 'name: bench\nimage:\n  source: %s\nnetwork:\n  gateway: 192.168.7.1\n  dns: [192.168.7.1]\n' "$work/root-2g.img"
        printf 'ssh_authorized_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGyFQ2JzvZ1bq0cJ5i6L3yq0u8ZP0eGq5u3y2Yc8kq9X b@x"]\nnodes:\n'
        printf '  - name: cp-1\n    role: control-plane\n    address: 192.168.7.10/24\n'
        for i in $(seq 2 "$2"); do printf '  - name: w-%d\n    role: worker\n' "$i"; done
    } > "$1/cluster.yaml"
}
spec "$work/b1" 1
spec "$work/b10" 10
secs() { local t; t=$( { TIMEFORMAT='%R'; time "$@" > /dev/null 2>&1; } 2>&1 ); echo "$t"; }
run() { PIFORGE_CACHE=$work/cache "$piforge" build --spec "$1/cluster.yaml" --out "$1/dist" --artifacts "$arts" --allow-unpinned; }
one=() ten=()
for i in $(seq "$reps"); do
    rm -rf "$work/b1/dist" "$work/b10/dist"
    a=$(secs run "$work/b1") b=$(secs run "$work/b10")
    one+=("$a") ten+=("$b")
    echo "rep $i: 1 node ${a}s, 10 nodes ${b}s"
done
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
m1=$(median "${one[@]}") m10=$(median "${ten[@]}")
echo "median: 1 node ${m1}s, 10 nodes ${m10}s, per extra node $(awk -v a="$m1" -v b="$m10" 'BEGIN { printf "%.2f", (b - a) / 9 }')s, ratio 10/1 $(awk -v a="$m1" -v b="$m10" 'BEGIN { printf "%.2f", b / a }')"
echo "image: $(stat -c %s "$work/root-2g.img") bytes, $(du -k "$work/root-2g.img" | cut -f1) KiB allocated; 10 images: $(du -sk "$work/b10/dist" | cut -f1) KiB allocated"
rm -rf "$work/b1/dist" "$work/b10/dist"
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), load $(cut -d' ' -f1-3 /proc/loadavg)"
