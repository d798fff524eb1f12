#!/usr/bin/env bash
# Load benchmark of `tracepatch serve`: the release build on loopback, driven over TLS and
# HTTP/2 by h2load (Debian: nghttp2-client) with the realistic meshed-pod AdmissionReview
# of bench/meshed-pod-review.json (the pod of tests/fixtures/tracer-env/istio-injected-pod,
# 8.9 KB), at 1, 16 and 64 concurrent streams. Reports requests/s, p50 and p99 latency
# (from h2load's per-request log) and the server's peak RSS (VmHWM).
#
#   bench/load.sh                  # build, run every level, print a Markdown table
#   DURATION=30 bench/load.sh      # seconds per level (default 10, after 2 s warm-up)
#   LOG=info bench/load.sh         # server log level (default info: one line per admission,
#                                  # JSON, to /dev/null as a pipe to the container runtime)
#   NO_BUILD=1 bench/load.sh       # use the existing release build
#   SERVE_ARGS="--worker-threads 1" bench/load.sh   # extra `serve` flags
#   TARGET=ceiling bench/load.sh   # the same stack answering a fixed body (examples/ceiling.rs)
#   TARGET=nginx bench/load.sh     # nginx (Debian) answering a fixed body: the transport's
#                                  # ceiling on this machine
#   REQUEST=get bench/load.sh      # GET without a body (any target; nginx defaults to it:
#                                  # nginx 1.22 answering `return` over HTTP/2 without
#                                  # reading a POSTed body stalls the connection's flow
#                                  # control under h2load after a few thousand requests)
#
# Loopback only; the server and h2load share this machine's cores.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-10}"
LOG="${LOG:-info}"
PORT="${PORT:-18443}"
HEALTH_PORT="${HEALTH_PORT:-18080}"
BODY="$REPO/bench/meshed-pod-review.json"
BIN="$REPO/target/release/tracepatch"
# "connections streams-per-connection": 1 stream; 16 on one connection; 64 as 1x64 (one
# apiserver connection multiplexing) and 4x16.
LEVELS="${LEVELS:-1x1 1x16 1x64 4x16}"
TARGET="${TARGET:-tracepatch}"
if [[ "$TARGET" == nginx ]]; then REQUEST="${REQUEST:-get}"; else REQUEST="${REQUEST:-post}"; fi
case "$REQUEST" in
  post) H2LOAD_BODY=(-H 'content-type: application/json' -d "$BODY") ;;
  get) H2LOAD_BODY=() ;;
  *) echo "REQUEST is post or get" >&2; exit 2 ;;
esac

command -v h2load >/dev/null || { echo "h2load not found: apt-get install nghttp2-client" >&2; exit 2; }
if [[ -z "${NO_BUILD:-}" && "$TARGET" != nginx ]]; then
  (cd "$REPO" && cargo build --release --quiet --bin tracepatch --example ceiling)
fi

TMP="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  [[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

# The development certificate, made by tracepatch itself, serves every target.
"$BIN" certs generate --service localhost --namespace bench --dns localhost --ip 127.0.0.1 \
  --out "$TMP/certs" >/dev/null 2>&1
case "$TARGET" in
  tracepatch)
    RUST_LOG="$LOG" "$BIN" serve --addr "127.0.0.1:$PORT" --health-addr "127.0.0.1:$HEALTH_PORT" \
      --tls-cert "$TMP/certs/tls.crt" --tls-key "$TMP/certs/tls.key" --log-format json \
      ${SERVE_ARGS:-} >/dev/null 2>"$TMP/stderr" &
    SERVER_PID=$!
    for _ in $(seq 100); do
      curl -sf "http://127.0.0.1:$HEALTH_PORT/readyz" >/dev/null && break
      sleep 0.1
    done
    ;;
  ceiling)
    "$REPO/target/release/examples/ceiling" "127.0.0.1:$PORT" "$TMP/certs/tls.crt" "$TMP/certs/tls.key" \
      2>"$TMP/stderr" &
    SERVER_PID=$!
    ;;
  nginx)
    command -v nginx >/dev/null || { echo "nginx not found: apt-get install nginx-light" >&2; exit 2; }
    # One worker per core, TLS 1.3 and HTTP/2, the same response size as tracepatch's.
    cat >"$TMP/nginx.conf" <<NGINX
worker_processes auto;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $TMP;
  client_max_body_size 8m;
  # h2load keeps its connections for the whole run (nginx closes after 1000 by default).
  keepalive_requests 100000000;
  server {
    listen 127.0.0.1:$PORT ssl http2;
    ssl_certificate $TMP/certs/tls.crt;
    ssl_certificate_key $TMP/certs/tls.key;
    location /mutate { default_type application/json; return 200 '$(cat "$REPO/bench/ceiling-response.json")'; }
  }
}
NGINX
    nginx -c "$TMP/nginx.conf" -g 'daemon off;' 2>"$TMP/stderr" &
    SERVER_PID=$!
    ;;
  *) echo "TARGET is tracepatch, ceiling or nginx" >&2; exit 2 ;;
esac
sleep 1
kill -0 "$SERVER_PID" 2>/dev/null || { echo "$TARGET did not start" >&2; cat "$TMP/stderr" >&2; exit 1; }

# The response must be what the target is meant to answer, or the benchmark measures nothing.
if [[ "$REQUEST" == post ]]; then
  curl -sf --cacert "$TMP/certs/ca.crt" -H 'content-type: application/json' --data-binary "@$BODY" \
    "https://localhost:$PORT/mutate" | grep -q '"patchType":"JSONPatch"' \
    || { echo "the benchmark review is not answered with a patch by $TARGET" >&2; exit 1; }
fi

echo "# $TARGET under load: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
if [[ "$REQUEST" == post ]]; then
  echo "# POST of $(wc -c <"$BODY") bytes; ${DURATION}s per level after 2s warm-up; server log level: $LOG"
else
  echo "# GET without a body (response $(wc -c <"$REPO/bench/ceiling-response.json") bytes); ${DURATION}s per level after 2s warm-up"
fi
echo
echo "| streams (conns x per conn) | requests/s | p50 | p99 | succeeded | failed |"
echo "|---|---|---|---|---|---|"
for level in $LEVELS; do
  conns="${level%x*}"
  streams="${level#*x}"
  out="$TMP/h2load-$level.txt"
  h2load -c "$conns" -m "$streams" -D "$DURATION" --warm-up-time 2 \
    "${H2LOAD_BODY[@]}" --log-file "$TMP/requests-$level.tsv" \
    "https://127.0.0.1:$PORT/mutate" >"$out" 2>&1
  rps="$(grep -oP 'finished in .*?, \K[0-9.]+(?= req/s)' "$out")"
  read -r succeeded failed < <(grep -oP 'requests: .*' "$out" | awk '{print $8, $10}')
  # Third column of the log: microseconds from request start to end of response.
  read -r p50 p99 < <(awk -F'\t' '$2 == 200 {print $3}' "$TMP/requests-$level.tsv" | sort -n | awk '
    {v[NR] = $1} END {
      if (NR == 0) { print "n/a n/a"; exit }
      i50 = int(NR * 0.50); if (i50 < 1) i50 = 1
      i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
      printf "%.2fms %.2fms\n", v[i50] / 1000, v[i99] / 1000 }')
  echo "| $((conns * streams)) ($conns x $streams) | $rps | $p50 | $p99 | $succeeded | $failed |"
done
echo
if [[ "$TARGET" == nginx ]]; then
  # nginx's workers are children of the master: sum their peak RSS.
  peak_kb=0
  for pid in "$SERVER_PID" $(pgrep -P "$SERVER_PID"); do
    peak_kb=$((peak_kb + $(awk '/VmHWM/ {print $2}' "/proc/$pid/status")))
  done
  echo "nginx peak RSS (VmHWM, master + workers): $((peak_kb / 1024)) MB"
else
  peak_kb="$(awk '/VmHWM/ {print $2}' "/proc/$SERVER_PID/status")"
  rss_kb="$(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status")"
  echo "server peak RSS (VmHWM): $((peak_kb / 1024)) MB; RSS after the runs: $((rss_kb / 1024)) MB"
fi
