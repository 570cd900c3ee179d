#!/usr/bin/env bash
# Times the shared build cache through a loopback docker-registry: export, and a second empty
# store's import-plus-cached-build, side by side with a local no-op rebuild, and the same
# build with only a registry output (layers mounted registry-side, none downloaded). As root.
#   usage: bench/remote-cache.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p kiln-cli
kiln="$PWD/target/release/kiln"
work=$(mktemp -d -p "$PWD/target" rcbench-XXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
YML
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
regpid=$!
trap 'kill $regpid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
reg=127.0.0.1:$port

now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
A="$work/a"; B="$work/b"
KILN_ROOT=$A examples/busybox-base.sh "$kiln" >/dev/null
KILN_ROOT=$A "$kiln" tag busybox:latest $reg/kiln/busybox:latest
KILN_ROOT=$A "$kiln" push -q $reg/kiln/busybox:latest >/dev/null

mk_multistage() {
  local d=$1; mkdir -p "$d/src"
  cp examples/multistage/src/* "$d/src/"
  sed "s#^FROM busybox#FROM $reg/kiln/busybox:latest#" examples/multistage/Dockerfile > "$d/Dockerfile"
}
mk_bigctx() {
  local d=$1; mkdir -p "$d/src"
  printf 'FROM %s/kiln/busybox:latest\nCOPY . /ctx\n' "$reg" > "$d/Dockerfile"
  head -c $((10 * 1024 * 20000)) /dev/urandom > "$work/blob"
  python3 - "$d/src" "$work/blob" <<'PY'
import os, sys
root, blob = sys.argv[1], open(sys.argv[2], 'rb').read()
n = 0
for i in range(200):
    p = os.path.join(root, f"d{i:03}"); os.makedirs(p)
    for j in range(100):
        with open(os.path.join(p, f"f{j:03}"), 'wb') as f:
            f.write(blob[n*10240:(n+1)*10240]); n += 1
PY
}

echo "| scenario | local cold build (ms) | export to registry (ms) | local no-op (ms) | empty store: import + cached build (ms) | of which pulls (ms) | empty store: import + cached build + push only (ms) |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for s in multistage bigctx; do
  d="$work/$s"; "mk_$s" "$d"
  rm -rf "$B"
  t0=$(now); KILN_ROOT=$A "$kiln" build -q "$d" >/dev/null; t1=$(now); cold=$(ms $t0 $t1)
  t0=$(now); KILN_ROOT=$A "$kiln" build -q --cache-to type=registry,ref=$reg/kiln/cache:$s,mode=max "$d" >/dev/null; t1=$(now); exp=$(ms $t0 $t1)
  t0=$(now); KILN_ROOT=$A "$kiln" build -q "$d" >/dev/null; t1=$(now); noop=$(ms $t0 $t1)
  t0=$(now); KILN_ROOT=$B "$kiln" pull -q $reg/kiln/busybox:latest >/dev/null; t1=$(now); pull=$(ms $t0 $t1)
  rm -rf "$B"
  t0=$(now); KILN_ROOT=$B "$kiln" build -q --cache-from type=registry,ref=$reg/kiln/cache:$s "$d" >/dev/null; t1=$(now); remote=$(ms $t0 $t1)
  rm -rf "$B"
  t0=$(now); KILN_ROOT=$B "$kiln" build -q --cache-from type=registry,ref=$reg/kiln/cache:$s --output type=registry,name=$reg/kiln/pushed-$s:1 "$d" >/dev/null 2>&1; t1=$(now); pushonly=$(ms $t0 $t1)
  echo "| $s | $cold | $((exp - noop)) | $noop | $remote | base pull alone: $pull | $pushonly |"
done
