#!/usr/bin/env bash
# CPU time per request under load: of the server (from /proc/PID/stat, user + system,
# over a fixed number of requests) and of the load generator (h2load's own user + system
# time). The release build on loopback, POST of bench/meshed-pod-review.json over TLS 1.3
# and HTTP/2, as in bench/load.sh. Prints one Markdown table row per run.
#
#   bench/cpu-per-request.sh                       # tracepatch, log level info, 1 x 64 streams
#   LOG=warn bench/cpu-per-request.sh              # without the per-admission log line
#   TARGET=ceiling bench/cpu-per-request.sh        # the same stack answering a fixed body
#   REQUESTS=400000 CONNS=4 STREAMS=16 bench/cpu-per-request.sh
#   RUNS=3 bench/cpu-per-request.sh                # repeat (rows for each run)
#   NO_BUILD=1 bench/cpu-per-request.sh            # use the existing release build
#
# The server and h2load share this machine's cores. CPU time moves less than wall time
# when something else runs, but it still moves (caches, wake-ups): the header line gives
# the load average, and pairs of runs to compare are best interleaved.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${TARGET:-tracepatch}"
LOG="${LOG:-info}"
REQUESTS="${REQUESTS:-200000}"
CONNS="${CONNS:-1}"
STREAMS="${STREAMS:-64}"
RUNS="${RUNS:-1}"
PORT="${PORT:-18643}"
HEALTH_PORT="${HEALTH_PORT:-18680}"
BODY="$REPO/bench/meshed-pod-review.json"
BIN="$REPO/target/release/tracepatch"

command -v h2load >/dev/null || { echo "h2load not found: apt-get install nghttp2-client" >&2; exit 2; }
if [[ -z "${NO_BUILD:-}" ]]; then
  (cd "$REPO" && cargo build --release --locked --quiet --bin tracepatch --example ceiling)
fi

TMP="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

"$BIN" certs generate --service localhost --namespace bench --dns localhost --ip 127.0.0.1 \
  --out "$TMP/certs" >/dev/null 2>&1
case "$TARGET" in
  tracepatch)
    RUST_LOG="$LOG" "$BIN" serve --addr "127.0.0.1:$PORT" --health-addr "127.0.0.1:$HEALTH_PORT" \
      --tls-cert "$TMP/certs/tls.crt" --tls-key "$TMP/certs/tls.key" --log-format json \
      >/dev/null 2>"$TMP/stderr" &
    SERVER_PID=$!
    ;;
  ceiling)
    "$REPO/target/release/examples/ceiling" "127.0.0.1:$PORT" "$TMP/certs/tls.crt" "$TMP/certs/tls.key" \
      2>"$TMP/stderr" &
    SERVER_PID=$!
    ;;
  *) echo "TARGET is tracepatch or ceiling" >&2; exit 2 ;;
esac
for _ in $(seq 100); do
  curl -s --cacert "$TMP/certs/ca.crt" -o /dev/null "https://localhost:$PORT/" && break
  sleep 0.1
done
kill -0 "$SERVER_PID" 2>/dev/null || { echo "$TARGET did not start" >&2; cat "$TMP/stderr" >&2; exit 1; }
curl -sf --cacert "$TMP/certs/ca.crt" -H 'content-type: application/json' --data-binary "@$BODY" \
  "https://localhost:$PORT/mutate" | grep -q '"patchType":"JSONPatch"' \
  || { echo "the benchmark review is not answered with a patch by $TARGET" >&2; exit 1; }

TICK="$(getconf CLK_TCK)"
# utime + stime of a process, in clock ticks (fields 14 and 15 of /proc/PID/stat, counted
# after the parenthesised command name).
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
h2() {
  h2load -c "$CONNS" -m "$STREAMS" -n "$1" -H 'content-type: application/json' -d "$BODY" \
    "https://127.0.0.1:$PORT/mutate"
}

echo "# $TARGET, RUST_LOG=$LOG: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $REQUESTS requests of $(wc -c <"$BODY") bytes per run, $CONNS connection(s) x $STREAMS streams, after 5,000 to warm up"
echo
echo "| target | log | requests | req/s | server CPU per request | h2load CPU per request |"
echo "|---|---|---|---|---|---|"
h2 5000 >/dev/null 2>&1
for _ in $(seq "$RUNS"); do
  before="$(cpu_ticks "$SERVER_PID")"
  # h2load's own CPU: the children's time of the shell that waited for it (fields 16, 17).
  bash -c 'h2load "$@" >"'"$TMP"'/h2load.txt" 2>&1; awk '\''{ sub(/^.*\) /, ""); print $14 + $15 }'\'' /proc/$$/stat' \
    _ -c "$CONNS" -m "$STREAMS" -n "$REQUESTS" -H 'content-type: application/json' -d "$BODY" \
    "https://127.0.0.1:$PORT/mutate" >"$TMP/h2load-ticks"
  after="$(cpu_ticks "$SERVER_PID")"
  succeeded="$(grep -oP 'requests: .*' "$TMP/h2load.txt" | awk '{print $8}')"
  rps="$(grep -oP 'finished in .*?, \K[0-9.]+(?= req/s)' "$TMP/h2load.txt")"
  [[ "$succeeded" -gt 0 ]] || { echo "no request succeeded" >&2; cat "$TMP/h2load.txt" >&2; exit 1; }
  awk -v s="$((after - before))" -v h="$(cat "$TMP/h2load-ticks")" -v n="$succeeded" -v t="$TICK" \
    -v target="$TARGET" -v level="$LOG" -v rps="$rps" \
    'BEGIN { printf "| %s | %s | %d | %s | %.1f µs | %.1f µs |\n", target, level, n, rps, s / t / n * 1e6, h / t / n * 1e6 }'
done
