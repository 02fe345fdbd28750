#!/usr/bin/env bash
# formats: `piforge build --format xz` of a 1-node and a 10-node cluster (one control plane,
# the rest workers) from the same image, same run, alternating, REPS repetitions (median).
# Node images differ by a few kilobytes, so the 10-node build compresses the shared chunks once
# and copies them into every other node's file. Goal (issue 13): 10 nodes at most 2x the wall
# time of 1 node. Also: the same 1-node build in zst, `xz -T0 -6` of one raw node image as the
# reference for size and speed, and the peak RSS of every build (GNU time's %M).
#
#   benches/formats.sh [WORKDIR]              (default: target/bench; REPS=1 by default)
#   IMAGE=path/to.img benches/formats.sh      another input, e.g. target/fixtures/trixie.img
#   IMAGE=mixed benches/formats.sh            the trixie fixture grown to 2 GiB holding ~400 MB
#                                             of this machine's /usr/lib files (compressible
#                                             like a real image's; made once)
#   IMAGE=mixed ONLY_IMAGE=1 benches/formats.sh   make that image and stop (benches/build.sh
#                                             runs this when IMAGE=mixed finds none)
# Without IMAGE: benches/customize.sh's 2 GiB image (1.1 GB of incompressible files: xz's worst
# case, which takes tens of minutes on a small machine).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(realpath -m "${1:-target/bench}")
reps=${REPS:-1}
mkdir -p "$work"
cargo build --release --quiet
piforge=$PWD/target/release/piforge
fixtures=${PIFORGE_FIXTURES:-target/fixtures}
timebin=/usr/bin/time
[[ -x $timebin ]] || { echo "GNU time (/usr/bin/time, Debian package time) is needed for peak RSS" >&2; exit 1; }
case ${IMAGE:-} in
'') image=$work/root-2g.img
    [[ -s $image ]] || bash benches/customize.sh "$work" >/dev/null ;;
mixed)
    image=$work/mixed-2g.img
    if [[ ! -s $image ]]; then
        echo "making $image (once)..." >&2
        bash tests/fixtures/make-fixtures.sh "$fixtures" >/dev/null
        fill=$work/fill-mixed
        rm -rf "$fill" && mkdir -p "$fill/usr/lib/bench"
        # Regular files of /usr/lib, in name order, up to ~400 MB.
        find /usr/lib -type f -size +16k -printf '%s %p\n' 2>/dev/null | sort -k2 |
            awk '{ s += $1; if (s <= 400 * 1024 * 1024) print $2 }' |
            while read -r f; do cp --parents -- "$f" "$fill/usr/lib/bench/" 2>/dev/null || true; done
        PIFORGE_CACHE=$work/cache "$piforge" customize "$fixtures/trixie.img" -o "$image.tmp" \
            --grow 2G --root-overlay "$fill" >/dev/null
        rm -rf "$fill"
        mv "$image.tmp" "$image"
    fi ;;
*) image=$(realpath "$IMAGE") ;;
esac
[[ ${ONLY_IMAGE:-0} != 1 ]] || { echo "$image"; exit 0; }
arts=$work/build-artifacts
[[ -d $arts ]] || bash tests/fixtures/make-artifacts.sh "$arts" 1.34.11
tag=$(basename "$image" .img)
spec() { # spec DIR NODES
    mkdir -p "$1"
    {
        printf 'name: bench\nimage:\n  source: %s\nkubernetes:\n  version: "1.34.11"\nnetwork:\n  gateway: 192.168.7.1\n  dns: [192.168.7.1]\n' "$image"
        printf 'ssh_authorized_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGyFQ2JzvZ1bq0cJ5i6L3yq0u8ZP0eGq5u3y2Yc8kq9X b@x"]\nnodes:\n'
        printf '  - name: cp-1\n    role: control-plane\n    address: 192.168.7.10/24\n'
        for i in $(seq 2 "$2"); do printf '  - name: w-%d\n    role: worker\n' "$i"; done
    } > "$1/cluster.yaml"
}
spec "$work/f1-$tag" 1
spec "$work/f10-$tag" 10
rss_file=$(mktemp)
trap 'rm -f "$rss_file"' EXIT
secs() { # wall seconds of a command that must succeed
    local t0 t1
    t0=$(date +%s.%N)
    "$@" > /dev/null 2> "$work/formats.err" || { cat "$work/formats.err" >&2; exit 1; }
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'
}
run() { # run DIR FORMAT; its peak RSS (KiB) is appended to $rss_file
    PIFORGE_CACHE=$work/cache "$timebin" -a -o "$rss_file" -f '%M' \
        "$piforge" build --spec "$1/cluster.yaml" --out "$1/dist" \
        --artifacts "$arts" --allow-unpinned --format "$2"
}
# Warm-up: the decompressed-input cache, secrets and lock, not measured.
for d in "$work/f1-$tag" "$work/f10-$tag"; do rm -rf "$d/dist"; secs run "$d" img > /dev/null; rm -rf "$d/dist"; done
one=() ten=()
for i in $(seq "$reps"); do
    rm -rf "$work/f1-$tag/dist" "$work/f10-$tag/dist"
    a=$(secs run "$work/f1-$tag" xz) b=$(secs run "$work/f10-$tag" xz)
    one+=("$a") ten+=("$b")
    echo "rep $i: xz: 1 node ${a}s, 10 nodes ${b}s (load $(cut -d' ' -f1 /proc/loadavg))"
done
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
m1=$(median "${one[@]}") m10=$(median "${ten[@]}")
echo "xz median: 1 node ${m1}s, 10 nodes ${m10}s, ratio 10/1 $(awk -v a="$m1" -v b="$m10" 'BEGIN { printf "%.2f", b / a }')"
echo "xz sizes: $(stat -c %s "$work/f1-$tag/dist/cp-1.img.xz") bytes per node file; 10 nodes $(du -sk "$work/f10-$tag/dist" | cut -f1) KiB"
rm -rf "$work/f10-$tag/dist"
# The raw image once, then zst and the reference xz of it.
rm -rf "$work/f1-$tag/dist"; secs run "$work/f1-$tag" img >/dev/null
raw=$work/f1-$tag/raw.img
mv "$work/f1-$tag/dist/cp-1.img" "$raw"; rm -rf "$work/f1-$tag/dist"
z=$(secs run "$work/f1-$tag" zst)
echo "zst: 1 node ${z}s (build included), $(stat -c %s "$work/f1-$tag/dist/cp-1.img.zst") bytes"
r=$(secs sh -c "xz -T0 -6 -c '$raw' > '$work/ref.xz'")
echo "reference: xz -T0 -6 of the raw node image ${r}s, $(stat -c %s "$work/ref.xz") bytes"
rm -rf "$work/f1-$tag/dist" "$work/ref.xz" "$raw"
echo "peak RSS of any build: $(( $(grep -E '^[0-9]+$' "$rss_file" | sort -n | tail -1) / 1024 )) MiB"
echo "image: $image, $(stat -c %s "$image") bytes, $(du -k "$image" | cut -f1) KiB allocated"
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), load $(cut -d' ' -f1-3 /proc/loadavg) (shared with other builds)"
