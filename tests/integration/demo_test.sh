#!/usr/bin/env bash
# The README's first Quick start command: scripts/demo must leave brokerd answering with demo
# customers and print curl lines that work as printed. (The install and build steps are skipped
# here: the test suite has just built the binaries it runs.)
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
build_dir="$1"
work="$(mktemp -d /tmp/broker-demo-test.XXXXXX)"
port="$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
export BROKER_LISTEN="127.0.0.1:$port" BROKER_DEMO_DIR="$work" BUILD_DIR="$build_dir" BROKER_DEMO_SKIP_BUILD=1
cleanup() { (cd "$repo" && scripts/demo stop >/dev/null 2>&1) || true; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; tail -n 20 "$work/brokerd.log" >&2 || true; exit 1; }

out="$(cd "$repo" && scripts/demo)" || fail "scripts/demo exited non-zero"
token="$(printf '%s\n' "$out" | sed -n 's/^ *export TOKEN=//p')"
[ -n "$token" ] || fail "no token printed"
place_line="$(printf '%s\n' "$out" | grep -- '-X POST' | head -n 1)"
[ -n "$place_line" ] || fail "no curl line printed"

# Run the printed line exactly as a user would paste it.
placed="$(TOKEN="$token" bash -c "$place_line")" || fail "the printed curl line failed"
printf '%s' "$placed" | grep -qE '"status":"(PLACED|IN_PROGRESS)"' || fail "placement answered: $placed"
trade_id="$(printf '%s' "$placed" | sed -n 's/.*"trade_id":"\([0-9a-f]*\)".*/\1/p')"

for _ in $(seq 1 100); do
  got="$(curl -fsS "http://127.0.0.1:$port/v1/trades/$trade_id" -H "Authorization: Bearer $token")"
  printf '%s' "$got" | grep -qE '"status":"(FILLED|REJECTED)"' && break
  sleep 0.1
done
printf '%s' "$got" | grep -qE '"status":"(FILLED|REJECTED)"' || fail "trade never settled: $got"
account="$(curl -fsS "http://127.0.0.1:$port/v1/account" -H "Authorization: Bearer $token")"
printf '%s' "$account" | grep -q '"customer_id":"demo-1"' || fail "account: $account"
positions="$(curl -fsS "http://127.0.0.1:$port/v1/positions" -H "Authorization: Bearer $token")"
printf '%s' "$positions" | grep -q '"symbol":"MSFT","quantity":20' || fail "demo positions missing: $positions"

# Running it again restarts on the same journal: the trade is still there.
(cd "$repo" && scripts/demo >/dev/null) || fail "second scripts/demo failed"
again="$(curl -fsS "http://127.0.0.1:$port/v1/trades/$trade_id" -H "Authorization: Bearer $token")"
[ "$again" = "$got" ] || fail "after restart the trade reads $again, before $got"
echo "demo quick start: ok"
