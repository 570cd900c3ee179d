#!/usr/bin/env bash
# Push of a debian-based image, kiln next to docker's BuildKit: the base is a Debian bookworm
# minbase rootfs (debootstrap from the configured Debian mirror, kept in the work dir), imported
# into dockerd and saved as a docker archive, which kiln loads (its layer stored uncompressed,
# as `docker save` writes it). Both build `FROM debian` + a COPY and push to a fresh local
# docker-registry: median wall-clock ms and the bytes the registry got. Needs root,
# debootstrap, docker-registry and dockerd (Debian's docker.io).
#   usage: bench/push-debian.sh [RUNS]      (KILN_BENCH_WORK=DIR keeps the work dir)
# Figures of the last run: bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
. bench/lib.sh
bench_init pushdeb 5079

if [ ! -f "$work/debian.tar" ]; then
  rm -rf "$work/rootfs"
  debootstrap --variant=minbase bookworm "$work/rootfs" "${KILN_BENCH_MIRROR:-http://deb.debian.org/debian}" >"$work/debootstrap.log"
  tar --numeric-owner -C "$work/rootfs" -cf "$work/debian.tar" .
  rm -rf "$work/rootfs"
fi
mkdir -p "$work/ctx"
head -c 2000000 /dev/urandom | base64 > "$work/ctx/app.txt"
printf 'FROM debian:bookworm\nCOPY app.txt /srv/app.txt\nCMD ["cat", "/srv/app.txt"]\n' > "$work/ctx/Dockerfile"

dockerd_start "$work/dk"
"$dk" import "$work/debian.tar" debian:bookworm >/dev/null
"$dk" save debian:bookworm -o "$work/debian-docker.tar"

# push_runs NAME PREPARE PUSH: RUNS times PREPARE (a fresh build of the image), then PUSH timed
# into a fresh registry; sets pushed_ms (median) and bytes (of the last run).
push_runs() {
  local times=()
  for _ in $(seq "$runs"); do
    $2
    registry "$work/reg-$1"
    t0=$(now); $3 >/dev/null; t1=$(now)
    times+=($(ms "$t0" "$t1"))
    bytes=$(pushed_bytes "$work/reg-$1")
    stop_registry
  done
  pushed_ms=$(median "${times[@]}")
}
kiln_build() {
  export KILN_ROOT="$work/kiln-store"
  rm -rf "$KILN_ROOT"
  "$kiln" load -q -i "$work/debian-docker.tar" >/dev/null
  "$kiln" build -q -t "127.0.0.1:$port/deb:kiln" "$work/ctx" >/dev/null
}
kiln_push() { "$kiln" push -q "127.0.0.1:$port/deb:kiln"; }
bk_build() {
  "$dk" rmi -f "127.0.0.1:$port/deb:bk" >/dev/null 2>&1 || true
  "$dk" builder prune -af >/dev/null
  DOCKER_BUILDKIT=1 "$dk" build -q --network=none -t "127.0.0.1:$port/deb:bk" "$work/ctx" >/dev/null
}
bk_push() { "$dk" push -q "127.0.0.1:$port/deb:bk"; }

declare -A K D
push_runs kiln kiln_build kiln_push
K[push]=$pushed_ms; K[bytes]=$bytes
rm -rf "$work/kiln-store"
push_runs bk bk_build bk_push
D[push]=$pushed_ms; D[bytes]=$bytes

echo "base: debian bookworm minbase, $(du -m "$work/debian.tar" | cut -f1) MB tar; median of $runs runs; $(nproc) cores"
echo
echo "| debian-based image | kiln | docker BuildKit |"
echo "|---|---:|---:|"
echo "| push to local registry (ms) | ${K[push]} | ${D[push]} |"
echo "| pushed bytes | ${K[bytes]} | ${D[bytes]} |"
