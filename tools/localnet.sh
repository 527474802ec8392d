#!/usr/bin/env bash
# End-to-end check with real processes: N `mldht serve` nodes on 127.0.2.x (loopback only),
# a peer announced with `mldht announce`, then found with `mldht get-peers`.
# Usage: tools/localnet.sh [N=30]. Stops every process it started (by PID) on exit.
set -euo pipefail
count=${1:-30}
(( count >= 2 && count <= 200 )) || { echo "N must be from 2 to 200" >&2; exit 2; }
mldht=${MLDHT:-mldht}
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
base_port=26881
first="127.0.2.1:$base_port"
"$mldht" serve --bind "$first" --bootstrap "$first" --state "$work/node1.json" 2>"$work/node1.log" &
pids+=($!)
sleep 0.5
for i in $(seq 2 "$count"); do
  "$mldht" serve --bind "127.0.2.$i:$base_port" --bootstrap "$first" \
    --state "$work/node$i.json" 2>"$work/node$i.log" &
  pids+=($!)
done
# Wait (bounded) until the last node answers a ping.
for _ in $(seq 1 50); do
  "$mldht" ping "127.0.2.$count:$base_port" --timeout 0.5 >/dev/null 2>&1 && break
  sleep 0.2
done
sleep 2  # let the joins settle
infohash=$(python3 -c 'import os; print(os.urandom(20).hex())')
echo "== $count serve processes up; announcing port 7777 for $infohash"
start=$(date +%s.%N)
"$mldht" announce "$infohash" --port 7777 --bootstrap "127.0.2.2:$base_port" --bind 127.0.0.1:0 --timeout 10
echo "== get-peers from another entry point"
status=0
"$mldht" get-peers "$infohash" --bootstrap "127.0.2.$count:$base_port" --bind 127.0.0.1:0 --timeout 10 || status=$?
end=$(date +%s.%N)
echo "== announce + get-peers wall time: $(python3 -c "print(f'{$end - $start:.2f} s')"), get-peers exit $status"
exit "$status"
