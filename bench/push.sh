#!/usr/bin/env bash
# First push of an image loaded from a docker archive (layers stored uncompressed, as
# `docker save` writes them) whose one layer is the big context (bench/gen-context.py: 20,000
# files, ~207 MB), to a local docker-registry: the layer is compressed (default gzip) on its
# way out. Then a second push to a fresh registry, which sends the kept compressed blob. Prints
# a Markdown table: median wall-clock ms of each, and the bytes the registry got.
#   usage: bench/push.sh [RUNS] [KILN...]     (KILN binaries to compare, default the release
#                                              build; KILN_BENCH_WORK=DIR keeps the work dir)
# Figures of the last run: bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
shift || true
bins=("$@")
if [ ${#bins[@]} -eq 0 ]; then
  nice cargo build --release -q -p kiln-cli
  bins=("$PWD/target/release/kiln")
fi
work=${KILN_BENCH_WORK:-$(mktemp -d -p "$PWD/target" push-XXXX)}
mkdir -p "$work"
port=5078
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${KILN_BENCH_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

. bench/lib.sh

[ -d "$work/ctx" ] || python3 bench/gen-context.py "$work/ctx"
if [ ! -f "$work/archive.tar" ]; then
  tar --sort=name --numeric-owner --owner=0 --group=0 --mtime=@0 -C "$work/ctx" -cf "$work/layer.tar" .
  python3 - "$work" <<'PY'
import hashlib, json, os, sys, tarfile
work = sys.argv[1]
layer = os.path.join(work, "layer.tar")
h = hashlib.sha256()
with open(layer, "rb") as f:
    for b in iter(lambda: f.read(1 << 20), b""):
        h.update(b)
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                     "rootfs": {"type": "layers", "diff_ids": ["sha256:" + h.hexdigest()]}}).encode()
name = hashlib.sha256(config).hexdigest() + ".json"
manifest = json.dumps([{"Config": name, "RepoTags": ["bench/big:plain"], "Layers": ["l0/layer.tar"]}]).encode()
with tarfile.open(os.path.join(work, "archive.tar"), "w") as t:
    for n, data in [(name, config), ("manifest.json", manifest)]:
        import io
        i = tarfile.TarInfo(n); i.size = len(data); t.addfile(i, io.BytesIO(data))
    t.add(layer, "l0/layer.tar")
PY
  rm -f "$work/layer.tar"
fi

# Runs alternate between the binaries, so a change of load on a shared machine hits each alike.
declare -A first second bytes
for i in $(seq "$runs"); do
  for kiln in "${bins[@]}"; do
    export KILN_ROOT="$work/store"
    rm -rf "$KILN_ROOT"
    "$kiln" load -q -i "$work/archive.tar" >/dev/null
    "$kiln" tag bench/big:plain "127.0.0.1:$port/big:plain"
    registry "$work/reg"
    sync
    t0=$(now); nice "$kiln" push -q "127.0.0.1:$port/big:plain" >/dev/null; t1=$(now)
    first[$kiln]+=" $(ms "$t0" "$t1")"
    bytes[$kiln]=$(pushed_bytes "$work/reg")
    stop_registry
    registry "$work/reg"
    t0=$(now); nice "$kiln" push -q "127.0.0.1:$port/big:plain" >/dev/null; t1=$(now)
    second[$kiln]+=" $(ms "$t0" "$t1")"
    stop_registry
  done
done
echo "| kiln | first push (ms) | second push (ms) | pushed bytes |"
echo "|---|---:|---:|---:|"
for kiln in "${bins[@]}"; do
  # shellcheck disable=SC2086
  echo "| $kiln | $(median ${first[$kiln]}) | $(median ${second[$kiln]}) | ${bytes[$kiln]} |"
done
