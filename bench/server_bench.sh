#!/bin/sh
# server_bench.sh: `make bench-server` (part of `make bench`): continuous batching across requests.
#
# Starts `build/tempo serve --parallel 8` on the bench's random-weight Llama-3.2-1B-shape Q4_0
# file (written by build/bench into build/bench-models/ when missing) and measures, with curl as
# the client (OpenAI streaming completions, greedy, max_tokens N with min_steps N so every client
# makes exactly N tokens):
#   - one client at a time (the 8 prompts one after the other): tokens/s;
#   - 8 concurrent streaming clients (8 different prompts): aggregate tokens/s;
#   - the ratio of the two (median of ROUNDS rounds), and that each client's text equals the
#     same request run alone.
#   - beside it, the generation phase alone from the server's "timings" (prefill and client
#     start-up left out: what llama.cpp's batched-bench calls decode); the target is judged on
#     the end-to-end ratio above.
# The machine is shared: compare the ratio, which both sides of one round measure alike.
# TEMPO_BIN=path runs another build of tempo (an A/B of two builds, alternated by the caller).
#
#   sh bench/server_bench.sh [TOKENS [ROUNDS]]      (defaults 32 and 3; THREADS=n to pin threads)
set -eu
cd "$(dirname "$0")/.."
TOKENS=${1:-32}
ROUNDS=${2:-3}
MODEL=build/bench-models/bench-1b-q4_0.gguf
OUT=$(mktemp -d /tmp/tempo-server-bench-XXXXXX)
SERVER_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  rm -rf "$OUT"
}
trap cleanup EXIT INT TERM

command -v curl >/dev/null || { echo "server_bench: needs curl (apt-get install curl)"; exit 1; }
if [ ! -f "$MODEL" ]; then
  echo "server_bench: writing $MODEL (build/bench --keep build/bench-models --only q4_0)"
  mkdir -p build/bench-models
  build/bench --keep build/bench-models --only q4_0 --no-memory --quick > "$OUT/bench.txt" || {
    cat "$OUT/bench.txt"; exit 1; }
fi

"${TEMPO_BIN:-build/tempo}" serve --model "$MODEL" --port 0 --parallel 8 --queue 8 ${THREADS:+--threads $THREADS} \
  > "$OUT/url" 2> "$OUT/server.err" &
SERVER_PID=$!
i=0
while ! grep -q listening "$OUT/url" 2>/dev/null; do
  i=$((i + 1))
  [ $i -gt 600 ] && { echo "server_bench: the server did not start"; cat "$OUT/server.err"; exit 1; }
  kill -0 $SERVER_PID 2>/dev/null || { echo "server_bench: the server exited"; cat "$OUT/server.err"; exit 1; }
  sleep 0.1
done
URL=$(sed 's/.*listening on //' "$OUT/url")

# client N: stream one completion of prompt N into $OUT/$2.N
client() {
  curl -sfN "$URL/v1/completions" -H 'Content-Type: application/json' -d "{\"prompt\": \"Story number $1 begins\",
    \"max_tokens\": $TOKENS, \"min_steps\": $TOKENS, \"temperature\": 0, \"stream\": true,
    \"stream_options\": {\"include_usage\": true}}" > "$OUT/$2.$1"
}
text_of() { grep -o '"text":"\([^"\\]\|\\.\)*"' "$1" | tr -d '\n'; }
tokens_of() { grep -o '"completion_tokens":[0-9]*' "$1" | tail -1 | cut -d: -f2; }
# the server's "timings" of the finishing chunk: generated tokens and their milliseconds
timing_of() { grep -o "\"$2\":[0-9.eE+-]*" "$1" | tail -1 | cut -d: -f2; }
now() { date +%s.%N; }
calc() { awk "BEGIN { print $1 }"; }

client 0 warm
echo "tempo serve bench: $(basename "$MODEL"), $TOKENS tokens per client, $(nproc) cores, --parallel 8"
ratios=""
gen_ratios=""
for r in $(seq 1 "$ROUNDS"); do
  # alone: each prompt once, one after the other (their texts are the reference)
  t0=$(now)
  for c in 1 2 3 4 5 6 7 8; do client $c solo; done
  t1=$(now)
  solo_s=$(calc "$t1 - $t0")
  # together
  t0=$(now)
  pids=""
  for c in 1 2 3 4 5 6 7 8; do client $c multi & pids="$pids $!"; done
  for p in $pids; do wait "$p"; done   # the clients (a bare wait would wait for the server too)
  t1=$(now)
  multi_s=$(calc "$t1 - $t0")
  total=0
  for c in 1 2 3 4 5 6 7 8; do
    n=$(tokens_of "$OUT/multi.$c"); total=$((total + ${n:-0}))
    [ "$(text_of "$OUT/solo.$c")" = "$(text_of "$OUT/multi.$c")" ] || {
      echo "server_bench: client $c's text differs between alone and batched"; exit 1; }
  done
  alone=0
  for c in 1 2 3 4 5 6 7 8; do n=$(tokens_of "$OUT/solo.$c"); alone=$((alone + ${n:-0})); done
  solo_tps=$(calc "$alone / $solo_s")
  multi_tps=$(calc "$total / $multi_s")
  ratio=$(calc "$multi_tps / $solo_tps")
  printf 'round %d: 1 client %.2f tokens/s, 8 clients %.2f tokens/s aggregate (%d tokens in %.2f s): %.2fx; outputs identical\n' \
    "$r" "$solo_tps" "$multi_tps" "$total" "$multi_s" "$ratio"
  ratios="$ratios $ratio"
  # The generation phase alone, from the server's timings (prefill and client start-up left out):
  # alone, the tokens over the sum of the requests' generation times; together, over the longest
  # one (which spans the others but for the last tick of the ones admitted later).
  gen_solo=$(for c in 1 2 3 4 5 6 7 8; do echo "$(timing_of "$OUT/solo.$c" predicted_n) $(timing_of "$OUT/solo.$c" predicted_ms)"; done |
    awk '{ n += $1; ms += $2 } END { print (ms > 0 ? n / ms * 1000 : 0) }')
  gen_multi=$(for c in 1 2 3 4 5 6 7 8; do echo "$(timing_of "$OUT/multi.$c" predicted_n) $(timing_of "$OUT/multi.$c" predicted_ms)"; done |
    awk '{ n += $1; if ($2 > ms) ms = $2 } END { print (ms > 0 ? n / ms * 1000 : 0) }')
  gen_ratio=$(calc "$gen_multi / $gen_solo")
  printf '         generation phase (server timings): 1 client %.2f tokens/s, 8 clients %.2f tokens/s: %.2fx\n' \
    "$gen_solo" "$gen_multi" "$gen_ratio"
  gen_ratios="$gen_ratios $gen_ratio"
done
median_of() { echo $1 | tr ' ' '\n' | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
median=$(median_of "$ratios")
printf 'median speed-up of 8 concurrent clients over one: %.2fx (target: 2.5x on AVX2, 4x on AVX-512)\n' "$median"
printf 'median speed-up of the generation phase alone (server timings): %.2fx\n' "$(median_of "$gen_ratios")"
