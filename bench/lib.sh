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
