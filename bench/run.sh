#!/usr/bin/env bash
# Times the sandbox overheads of issue 4 (release binary, private store, as root):
#   - `kiln run --rm busybox true` end to end, median of N;
#   - one `RUN true` step: a `--no-cache` build of a one-step Dockerfile minus a no-op
#     (fully cached) rebuild of it, medians of N each.
# Prints the figures (ms).   usage: bench/run.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
cargo build --release -q -p kiln-cli
kiln="$PWD/target/release/kiln"
work=$(mktemp -d -p "$PWD/target" bench-run-XXXX)
cleanup() {
  for id in $("$kiln" ps -aq 2>/dev/null); do "$kiln" rm -f "$id" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
export KILN_ROOT="$work/store"
examples/busybox-base.sh "$kiln" >/dev/null

now() { date +%s%N; }
# median of the given numbers
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {m=int((NR+1)/2); print a[m]}'; }
us() { echo $(( ($2 - $1) / 1000 )); }
fmt() { awk -v u="$1" 'BEGIN {printf "%.1f", u / 1000}'; }

# Warm up: snapshot unpacked, page cache hot.
"$kiln" run --rm busybox true

t=()
for _ in $(seq "$runs"); do
  a=$(now); "$kiln" run --rm busybox true; b=$(now)
  t+=("$(us "$a" "$b")")
done
run_us=$(median "${t[@]}")

# The bare runtime for comparison: `runc run` of runc's own template spec over a busybox
# rootfs, no kiln around it.
bundle="$work/bundle"
mkdir -p "$bundle/rootfs/bin"
cp /bin/busybox "$bundle/rootfs/bin/busybox"
ln -s busybox "$bundle/rootfs/bin/true"
(cd "$bundle" && runc spec)
sed -i 's/"terminal": true/"terminal": false/; s/"sh"$/"\/bin\/true"/' "$bundle/config.json"
t=()
for _ in $(seq "$runs"); do
  a=$(now); runc --root "$work/runc" run --bundle "$bundle" bench-bare >/dev/null; b=$(now)
  t+=("$(us "$a" "$b")")
done
bare_us=$(median "${t[@]}")

ctx="$work/ctx"
mkdir -p "$ctx"
printf 'FROM busybox\nRUN true\n' > "$ctx/Dockerfile"
"$kiln" build -q "$ctx" >/dev/null
t=(); n=()
for _ in $(seq "$runs"); do
  a=$(now); "$kiln" build -q --no-cache "$ctx" >/dev/null; b=$(now)
  t+=("$(us "$a" "$b")")
  a=$(now); "$kiln" build -q "$ctx" >/dev/null; b=$(now)
  n+=("$(us "$a" "$b")")
done
nocache_us=$(median "${t[@]}")
noop_us=$(median "${n[@]}")

echo "kiln run --rm busybox true (median of $runs):   $(fmt "$run_us") ms"
echo "  bare runc run of a busybox rootfs, for scale: $(fmt "$bare_us") ms"
echo "build with RUN true, --no-cache (median):       $(fmt "$nocache_us") ms"
echo "no-op rebuild (median):                         $(fmt "$noop_us") ms"
echo "per-step overhead of RUN true:                  $(fmt $((nocache_us - noop_us))) ms"
