#!/usr/bin/env bash
# The main job, end to end and offline: build kiln, make the busybox base image from Debian's
# busybox-static, build examples/multistage (builder stage → artifact → final stage) and run
# the result in a runc sandbox.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then
  need=()
  command -v runc >/dev/null || need+=(runc)
  [ -x /bin/busybox ] || need+=(busybox-static)
  command -v pasta >/dev/null || need+=(passt)  # kiln run's default bridge network
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  fi
else
  echo "demo: kiln's sandbox needs root (runc, overlayfs): run as root" >&2
  exit 1
fi

cargo build --release -q -p kiln-cli
kiln="$PWD/target/release/kiln"
export KILN_ROOT="${KILN_ROOT:-$PWD/target/demo-store}"

examples/busybox-base.sh "$kiln"
"$kiln" build --progress=plain -t multistage:demo examples/multistage
"$kiln" run --rm multistage:demo
"$kiln" run --rm multistage:demo kiln
