# Helpers the bench scripts share (sourced). Uses the caller's $port and pids array.
now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
registry() { # DIR: a fresh registry on $port
  rm -rf "$1"; mkdir -p "$1"
  printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' "$1" "$port" > "$1.yml"
  docker-registry serve "$1.yml" >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && return; sleep 0.1; done
  echo "registry did not start" >&2; exit 1
}
stop_registry() { kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; }
# bytes of the blobs a registry dir holds (what was pushed)
pushed_bytes() { find "$1" -path '*/blobs/*' -name data -printf '%s\n' | awk '{s+=$1} END {print s}'; }
# A dockerd of its own under DIR, started as the guide says (no bridge, no iptables rules, no
# forwarding), with DOCKER_HOST and $dk (the docker CLI) set for it; dockerd_stop DIR ends it.
dockerd_start() {
  mkdir -p "$1"
  dockerd --bridge=none --iptables=false --ip-masq=false --ip-forward=false \
    --data-root "$1/data" --exec-root "$1/exec" -H "unix://$1/docker.sock" \
    --pidfile "$1/pid" >"$1/log" 2>&1 &
  export DOCKER_HOST="unix://$1/docker.sock"
  dk=$(command -v /usr/bin/docker || command -v docker)
  for _ in $(seq 100); do "$dk" version >/dev/null 2>&1 && return; sleep 0.2; done
  echo "dockerd did not start (see $1/log)" >&2; exit 1
}
dockerd_stop() {
  if [ -f "$1/pid" ]; then kill "$(cat "$1/pid")" 2>/dev/null || true; sleep 2; fi
  umount -R "$1/data" 2>/dev/null || true
}
# The work dir of a bench script: KILN_BENCH_WORK, else a new one under target/ named after $1.
# The caller's EXIT trap calls bench_cleanup: registries and dockerd stopped, the dir removed
# unless KILN_BENCH_WORK named it.
bench_work() {
  work=${KILN_BENCH_WORK:-$(mktemp -d -p "$PWD/target" "$1-XXXX")}
  mkdir -p "$work"
}
bench_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  dockerd_stop "$work/dk"
  [ -n "${KILN_BENCH_WORK:-}" ] || rm -rf "$work"
}
# The common start of a script timing the release build: builds it ($kiln), takes the port
# its registries listen on ($port), makes the work dir and cleans up on exit.
bench_init() { # NAME PORT
  repo=$PWD
  cargo build --release -q -p kiln-cli
  kiln="$repo/target/release/kiln"
  port=$2
  pids=()
  bench_work "$1"
  trap bench_cleanup EXIT
}
