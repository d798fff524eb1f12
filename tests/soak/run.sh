#!/usr/bin/env bash
# Fault-load soak of `tracepatch serve` (issue 6): the release build at capacity for 60 s
# over TLS + HTTP/2 with the meshed-pod review (bench/meshed-pod-review.json), with
#   - the certificate files rotated at 20 s the way the kubelet updates a Secret volume
#     (a new timestamped directory, the `..data` symlink swapped by rename), to a new
#     certificate from a new CA made by `tracepatch certs generate`;
#   - SIGTERM at 50 s with the load still running.
# While it runs: the server's RSS every second, /metrics every second, a new TLS
# connection every 0.5 s (which certificate is served: openssl s_client) and a new
# HTTPS request on a new connection every 0.25 s (curl, trusting both CAs).
#
#   tests/soak/run.sh                      # build the release binary, run, print the report
#   NO_BUILD=1 tests/soak/run.sh           # use target/release/tracepatch as it is
#   SHUTDOWN_DELAY=5s tests/soak/run.sh    # the shipped manifests' shutdown delay (default 0s)
#   DURATION=60 ROTATE_AT=20 TERM_AT=50 CONNS=4 STREAMS=16 tests/soak/run.sh
#   KEEP=1 tests/soak/run.sh               # keep the work directory (logs, samples)
#
# Exit status 0 when every check passes: no request the server accepted failed, no
# request failed before SIGTERM, RSS has no growth trend, the new certificate is served
# to new connections after the rotation and the old one never again, the server exits 0.
# Loopback only; every process it starts is stopped on exit; bounded in time
# (DURATION + ~30 s).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DURATION="${DURATION:-60}"
ROTATE_AT="${ROTATE_AT:-20}"
TERM_AT="${TERM_AT:-50}"
CONNS="${CONNS:-4}"
STREAMS="${STREAMS:-16}"
SHUTDOWN_DELAY="${SHUTDOWN_DELAY:-0s}"
PORT="${PORT:-18543}"
HEALTH_PORT="${HEALTH_PORT:-18580}"
BIN="$REPO/target/release/tracepatch"
BODY="$REPO/bench/meshed-pod-review.json"
# RSS growth allowed between the first and the last third of the load period (peaks).
MAX_GROWTH_KB="${MAX_GROWTH_KB:-1024}"

for tool in h2load openssl curl jq awk; do
  command -v "$tool" >/dev/null || { echo "$tool not found (h2load: apt-get install nghttp2-client)" >&2; exit 2; }
done
if [[ -z "${NO_BUILD:-}" && -z "${REPORT_ONLY:-}" ]]; then
  (cd "$REPO" && cargo build --release --locked --quiet --bin tracepatch)
fi

if [[ -n "${REPORT_ONLY:-}" ]]; then
  # Report again on a kept work directory (KEEP=1).
  W="$REPORT_ONLY"
  KEEP=1
else
  W="$(mktemp -d)"
fi
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ -n "${KEEP:-}" ]]; then echo "work directory kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT

now_us() { date +%s%6N; }

run_soak() {

# Two generations of certificates, each from its own CA, in a Secret-volume layout.
gen() {
  "$BIN" certs generate --service localhost --namespace soak --dns localhost --ip 127.0.0.1 \
    --out "$W/$1" >/dev/null 2>&1
}
gen gen1
gen gen2
mkdir "$W/volume"
cp -r "$W/gen1" "$W/volume/..2026_01_01_gen1"
ln -s ..2026_01_01_gen1 "$W/volume/..data"
ln -s ..data/tls.crt "$W/volume/tls.crt"
ln -s ..data/tls.key "$W/volume/tls.key"
cat "$W/gen1/ca.crt" "$W/gen2/ca.crt" >"$W/both-cas.crt"
fp() { openssl x509 -noout -fingerprint -sha256 -in "$1" | cut -d= -f2; }
FP1="$(fp "$W/gen1/tls.crt")"
FP2="$(fp "$W/gen2/tls.crt")"

# The probe requests carry their own uid, so the server's log tells them from h2load's.
LOAD_UID="$(jq -r .request.uid "$BODY")"
jq -c '.request.uid = "soak-probe"' "$BODY" >"$W/probe.json"
jq -c '.request.uid = "soak-start-check"' "$BODY" >"$W/start-check.json"

RUST_LOG=info "$BIN" serve --addr "127.0.0.1:$PORT" --health-addr "127.0.0.1:$HEALTH_PORT" \
  --tls-cert "$W/volume/tls.crt" --tls-key "$W/volume/tls.key" --log-format json \
  --shutdown-delay "$SHUTDOWN_DELAY" >"$W/server.log" 2>"$W/server.stderr" &
SERVER=$!
PIDS+=("$SERVER")
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$HEALTH_PORT/readyz" >/dev/null && break
  sleep 0.1
done
curl -sf --cacert "$W/gen1/ca.crt" -H 'content-type: application/json' --data-binary "@$W/start-check.json" \
  "https://localhost:$PORT/mutate" | grep -q '"patchType":"JSONPatch"' \
  || { echo "the server does not answer the review with a patch" >&2; cat "$W/server.stderr" >&2; exit 1; }

T0="$(now_us)"
# RSS (kB) and the admitted count from /metrics, every second.
(
  while kill -0 "$SERVER" 2>/dev/null; do
    rss="$(awk '/^VmRSS/ {print $2}' "/proc/$SERVER/status" 2>/dev/null || true)"
    [[ -n "$rss" ]] && printf '%s\t%s\n' "$(( ($(now_us) - T0) / 1000 ))" "$rss" >>"$W/rss.tsv"
    sleep 1
  done
) &
PIDS+=("$!")
# Which certificate a new TLS connection is served, every 0.5 s.
(
  while kill -0 "$SERVER" 2>/dev/null; do
    t=$(( ($(now_us) - T0) / 1000 ))
    cert="$(timeout 3 openssl s_client -connect "127.0.0.1:$PORT" -servername localhost </dev/null 2>/dev/null \
      | openssl x509 -noout -fingerprint -sha256 2>/dev/null | cut -d= -f2 || true)"
    # Start and end: a handshake that ended before SIGTERM must have succeeded; one
    # still in progress when the listener closed may not.
    printf '%s\t%s\t%s\n' "$t" "${cert:-none}" "$(( ($(now_us) - T0) / 1000 ))" >>"$W/certs.tsv"
    sleep 0.5
  done
) &
PIDS+=("$!")
# A request on a new connection every 0.25 s; curl's exit status says how it failed
# (7: connection refused, after the listener closed).
(
  while kill -0 "$SERVER" 2>/dev/null; do
    t=$(( ($(now_us) - T0) / 1000 ))
    set +e
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$W/both-cas.crt" \
      -H 'content-type: application/json' --data-binary "@$W/probe.json" "https://localhost:$PORT/mutate")"
    rc=$?
    set -e
    printf '%s\t%s\t%s\n' "$t" "$code" "$rc" >>"$W/probes.tsv"
    sleep 0.25
  done
) &
PIDS+=("$!")

h2load -c "$CONNS" -m "$STREAMS" -D "$DURATION" -H 'content-type: application/json' -d "$BODY" \
  --log-file "$W/requests.tsv" "https://127.0.0.1:$PORT/mutate" >"$W/h2load.txt" 2>&1 &
H2LOAD=$!
PIDS+=("$H2LOAD")

sleep_until() { local at_us=$((T0 + $1 * 1000000)); local left=$(( at_us - $(now_us) )); (( left > 0 )) && sleep "$(awk -v u="$left" 'BEGIN {printf "%.3f", u / 1e6}')"; return 0; }

sleep_until "$ROTATE_AT"
cp -r "$W/gen2" "$W/volume/..2026_01_01_gen2"
ln -s ..2026_01_01_gen2 "$W/volume/..data_tmp"
mv -T "$W/volume/..data_tmp" "$W/volume/..data"
rm -rf "$W/volume/..2026_01_01_gen1"
ROTATED_US="$(now_us)"

sleep_until "$TERM_AT"
# The last /metrics before SIGTERM.
curl -sf "http://127.0.0.1:$HEALTH_PORT/metrics" >"$W/metrics-before-term.txt" || true
TERM_US="$(now_us)"
kill -TERM "$SERVER"
set +e
wait "$SERVER"
EXIT_CODE=$?
set -e
EXITED_US="$(now_us)"
wait "$H2LOAD" 2>/dev/null || true
sleep 0.6 # the probes notice the server is gone
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
cat >"$W/times.env" <<TIMES
T0=$T0
ROTATED_US=$ROTATED_US
TERM_US=$TERM_US
EXITED_US=$EXITED_US
EXIT_CODE=$EXIT_CODE
FP1=$FP1
FP2=$FP2
LOAD_UID=$LOAD_UID
TIMES

}

if [[ -z "${REPORT_ONLY:-}" ]]; then run_soak; fi
# shellcheck disable=SC1091
source "$W/times.env"

# ---- report ----
ms() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", (a - b) / 1000}'; }
TERM_MS=$(( (TERM_US - T0) / 1000 ))
ROT_MS=$(( (ROTATED_US - T0) / 1000 ))
fail=0
check() { if [[ "$1" == ok ]]; then echo "  ok:   $2"; else echo "  FAIL: $2"; fail=1; fi; }

echo "# soak: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, load h2load -c $CONNS -m $STREAMS -D $DURATION, shutdown delay $SHUTDOWN_DELAY"
others="$( (pgrep -f 'fuzz/target|cargo-fuzz|cargo fuzz' || true) | wc -l)"
echo "# other load on the machine at the end: $others fuzzer processes; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "rotation at $(ms "$ROTATED_US" "$T0") ms, SIGTERM at $TERM_MS ms, server exited at $(ms "$EXITED_US" "$T0") ms, exit code $EXIT_CODE"
echo
echo "## h2load (long-lived connections opened at the start)"
grep -E '^(finished in|requests:|status codes:|traffic:)' "$W/h2load.txt" | sed 's/^/    /'
# Per-request log: start (us since epoch), status (-1: stream failed), duration (us).
# A start time of 0 marks a stream h2load queued but never sent (its connection had
# closed): not a request the server could have seen.
read -r total ok200 other_status failed_before failed_after ok_after never_sent < <(awk -F'\t' -v term="$TERM_US" '
  { n++ }
  $2 == 200 { ok++; if ($1 >= term) okafter++ }
  $2 != 200 && $2 != -1 { other++ }
  $2 == -1 && $1 == 0 { ns++ }
  $2 == -1 && $1 > 0 { if ($1 < term) fb++; else fa++ }
  END { printf "%d %d %d %d %d %d %d\n", n, ok, other, fb, fa, okafter, ns }' "$W/requests.tsv")
served="$(grep -c "\"uid\":\"$LOAD_UID\"" "$W/server.log" || true)"
echo
echo "requests logged by h2load: $total"
echo "  200:                                   $ok200 ($ok_after of them started after SIGTERM)"
echo "  other HTTP status:                     $other_status"
echo "  stream failed, started before SIGTERM: $failed_before"
echo "  stream failed, started after SIGTERM:  $failed_after (refused: the server had sent GOAWAY / closed)"
echo "  queued by h2load, never sent:          $never_sent (their connection had closed at shutdown)"
echo "requests the server admitted (log lines with h2load's uid): $served"
rate="$(awk -F'\t' -v term="$TERM_US" '$2 == 200 && $1 < term { if (!s || $1 < s) s = $1; if ($1 > e) e = $1; n++ } END { printf "%.0f", n / ((e - s) / 1e6) }' "$W/requests.tsv")"
echo "throughput before SIGTERM: $rate req/s"
conn_errors="$(grep -ciE 'connect|refused' "$W/h2load.txt" || true)"
echo "h2load lines about connection errors (reconnects after the listener closed): $conn_errors"
check "$([[ "$other_status" == 0 ]] && echo ok)" "no request answered with a status other than 200"
check "$([[ "$failed_before" == 0 ]] && echo ok)" "no request sent before SIGTERM failed"
check "$([[ "$served" == "$ok200" ]] && echo ok)" "every request the server accepted was answered 200 to h2load ($served admitted, $ok200 received)"

echo
echo "## new connections (curl, one request per new connection, every 0.25 s)"
awk -F'\t' -v term="$TERM_MS" '
  $1 < term { b++; if ($2 == 200) bok++; else if ($3 == 7) bref++ }
  $1 >= term { a++; if ($2 == 200) aok++; else if ($3 == 7) aref++; else aother++ }
  END { printf "started before SIGTERM: %d, answered 200: %d, connection refused (listener closed by the time curl connected): %d\nstarted after SIGTERM: %d, answered 200: %d, connection refused: %d, other: %d\n", b, bok, bref, a, aok, aref, aother }' "$W/probes.tsv"
# curl's timestamp is when it was started, ~20 ms before it connects: a refused
# connection (exit 7) within 1 s before SIGTERM reached the closed listener.
probe_fail="$(awk -F'\t' -v term="$TERM_MS" '$1 < term && $2 != 200 && !($3 == 7 && $1 >= term - 1000)' "$W/probes.tsv" | wc -l)"
probe_served="$(grep -c '"uid":"soak-probe"' "$W/server.log" || true)"
probe_ok="$(awk -F'\t' '$2 == 200' "$W/probes.tsv" | wc -l)"
check "$([[ "$probe_fail" == 0 ]] && echo ok)" "every new-connection request started before SIGTERM answered 200 (but refused connections in the last second)"
check "$([[ "$probe_served" == "$probe_ok" ]] && echo ok)" "every probe the server accepted was answered ($probe_served admitted, $probe_ok received)"

echo
echo "## certificate served to new connections (openssl s_client every 0.5 s)"
awk -F'\t' -v f1="$FP1" -v f2="$FP2" -v rot="$ROT_MS" '
  { w = ($2 == f1 ? "gen1" : ($2 == f2 ? "gen2" : "none")); k = ($1 < rot ? "before" : "after") " rotation: " w; c[k]++ }
  $1 >= rot && $2 == f2 && !first { first = $1 }
  END { for (k in c) printf "  %s: %d\n", k, c[k]; if (first) printf "  first new-certificate handshake %.1f s after the rotation\n", (first - rot) / 1000 }' "$W/certs.tsv" | sort
old_after="$(awk -F'\t' -v f1="$FP1" -v rot="$ROT_MS" '$1 >= rot + 6000 && $2 == f1' "$W/certs.tsv" | wc -l)"
new_before="$(awk -F'\t' -v f2="$FP2" -v rot="$ROT_MS" '$1 < rot && $2 == f2' "$W/certs.tsv" | wc -l)"
new_seen="$(awk -F'\t' -v f2="$FP2" -v rot="$ROT_MS" -v term="$TERM_MS" '$1 >= rot && $1 < term && $2 == f2' "$W/certs.tsv" | wc -l)"
none_before="$(awk -F'\t' -v term="$TERM_MS" '$3 < term && $2 == "none"' "$W/certs.tsv" | wc -l)"
none_straddling="$(awk -F'\t' -v term="$TERM_MS" '$1 < term && $3 >= term && $2 == "none"' "$W/certs.tsv" | wc -l)"
echo "  handshakes in progress at SIGTERM that got no certificate (the listener closed): $none_straddling"
check "$([[ "$new_seen" -gt 0 && "$old_after" == 0 && "$new_before" == 0 ]] && echo ok)" \
  "new connections get the new certificate after the rotation (within the 5 s reload interval + 1 s), never before, and the old one not after"
check "$([[ "$none_before" == 0 ]] && echo ok)" "every TLS handshake that ended before SIGTERM succeeded"
grep -h 'serving certificate reloaded' "$W/server.log" | jq -c '{timestamp, message}' 2>/dev/null | sed 's/^/    server: /' || true

echo
echo "## server RSS (VmRSS every second)"
# Over the load period (5 s to SIGTERM, warm-up excluded): the least-squares slope, and
# the peak of its last third against the peak of its first third. RSS swings by about
# 1 MB from one second to the next (allocator pages, connection buffers), so a slope over
# 45 s is noisy; the peaks say whether the ceiling moves. Check: the last third's peak
# is at most MAX_GROWTH_KB above the first third's.
awk -F'\t' -v term="$TERM_MS" -v max="$MAX_GROWTH_KB" '
  { all++; if ($2 > peak) peak = $2; if (!first) first = $2; last = $2 }
  $1 >= 5000 && $1 < term { n++; t[n] = $1 / 60000; y[n] = $2 }
  END {
    for (i = 1; i <= n; i++) { sx += t[i]; sy += y[i]; sxx += t[i] * t[i]; sxy += t[i] * y[i]; if (!min || y[i] < min) min = y[i]; if (y[i] > mx) mx = y[i] }
    slope = (n * sxy - sx * sy) / (n * sxx - sx * sx)
    third = int(n / 3)
    for (i = 1; i <= third; i++) if (y[i] > p1) p1 = y[i]
    for (i = n - third + 1; i <= n; i++) if (y[i] > p3) p3 = y[i]
    printf "samples: %d; first %d kB, last %d kB, peak %d kB\n", all, first, last, peak
    printf "load period (5 s to SIGTERM, %d samples): min %d kB, max %d kB\n", n, min, mx
    printf "least-squares slope: %.1f kB/min\n", slope
    printf "peak of the first third %d kB, of the last third %d kB (growth allowed: %d kB)\n", p1, p3, max
    exit (p3 - p1 > max) ? 1 : 0 }' "$W/rss.tsv" && rss_ok=ok || rss_ok=""
check "$rss_ok" "no RSS growth trend"

echo
echo "## shutdown"
grep -hE 'SIGTERM received|shutting down|no longer accepting|drained|drain timeout' "$W/server.log" \
  | jq -r '"    server: \(.timestamp) \(.message // .fields.message)"' 2>/dev/null || true
check "$([[ "$EXIT_CODE" == 0 ]] && echo ok)" "server exit code 0 (was $EXIT_CODE)"
errors="$(grep -c '"level":"ERROR"' "$W/server.log" || true)"
check "$([[ "$errors" == 0 ]] && echo ok)" "no ERROR log lines ($errors)"
echo
if [[ "$fail" == 0 ]]; then echo "soak: all checks passed"; else echo "soak: FAILED"; fi
exit "$fail"
