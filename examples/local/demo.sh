#!/usr/bin/env bash
# The main job in local mode, on one machine: Promoter serves the pipeline in this
# folder, a signed Flux event comes in, and the webhook strategy promotes the version
# to a stand-in CI server (receiver.py). Then prod waits for an approval.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=examples/local
webhook_port=${WEBHOOK_PORT:-8082}
admin_port=${ADMIN_PORT:-8080}

# rust-toolchain.toml names the target; where rustup's automatic installs are off, add it.
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
echo "== building promoter (the first build compiles wasmtime: several minutes)"
cargo build --quiet --bin promoter
bin="${CARGO_TARGET_DIR:-target}/debug/promoter"

data=$(mktemp -d)
# One event key per environment (each cluster's Flux holds its own), and the approvers' key.
for env in dev test prod; do printf 'demo-%s-events-key' "$env" > "$data/$env-events.key"; done
printf 'demo-approvals-key' > "$data/approvals.key"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT

python3 "$here/receiver.py" 9090 & pids+=($!)
# The stand-in CI server listens on 127.0.0.1, a loopback address. A Pipeline's URLs are
# tenant input, and by default Promoter refuses to let them reach loopback, private or
# cloud-metadata addresses (a sidecar's admin port, an internal service). This demo's
# operator runs the receiver on this machine, so it allows that explicitly:
echo "== serving with --builtin-private-networks: the demo's CI receiver is on 127.0.0.1"
"$bin" serve --manifests "$here" --data-dir "$data/db" \
  --webhook-addr "127.0.0.1:$webhook_port" --admin-addr "127.0.0.1:$admin_port" \
  --builtin-private-networks \
  2> "$data/server.log" & pids+=($!)

admin="http://127.0.0.1:$admin_port"
export PROMOTER_ADMIN_URL="$admin" PROMOTER_WEBHOOK_URL="http://127.0.0.1:$webhook_port"
get() { python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' "$1"; }
phase() { get "$admin/promotions" | python3 -c '
import json, sys
env, version = sys.argv[1], sys.argv[2]
print(next((p["phase"] for p in json.load(sys.stdin)["promotions"]
            if p["targetEnvironment"] == env and p["version"] == version), "none"))' "$1" "$2"; }
wait_for() { # env version phase
  for _ in $(seq 1 100); do [ "$(phase "$1" "$2" 2>/dev/null)" = "$3" ] && return 0; sleep 0.1; done
  echo "promotion into $1 did not reach $3; server log:"; cat "$data/server.log"; exit 1
}
for _ in $(seq 1 100); do get "$admin/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
get "$admin/readyz" >/dev/null || { cat "$data/server.log"; exit 1; }

echo; echo "== Flux in dev reports: podinfo 6.5.4 upgraded (signed like a generic-hmac Provider)"
"$bin" event send flux-system/podinfo dev --version 6.5.4 --namespace podinfo-dev --key-file "$data/dev-events.key"
wait_for test 6.5.4 succeeded
echo; echo "== promotions"
"$bin" promotions list

echo; echo "== Flux in test reports 6.5.4; prod needs an approval"
"$bin" event send flux-system/podinfo test --version 6.5.4 --namespace podinfo-test --key-file "$data/test-events.key"
wait_for prod 6.5.4 waiting-approval
echo "== test's event key cannot approve prod (401; the server log says why)"
if "$bin" approve flux-system/podinfo prod 6.5.4 --key-file "$data/test-events.key"; then
  echo "an event key approved prod"; exit 1
fi
echo "== the approvers' key can"
"$bin" approve flux-system/podinfo prod 6.5.4 --key-file "$data/approvals.key"
wait_for prod 6.5.4 succeeded
echo; echo "== promotions"
"$bin" promotions list

echo; echo "== a failed upgrade is not promoted"
"$bin" event send flux-system/podinfo dev --version 6.6.0 --namespace podinfo-dev --key-file "$data/dev-events.key" \
  --body <(printf '{"involvedObject":{"kind":"HelmRelease","namespace":"podinfo-dev","name":"podinfo","apiVersion":"helm.toolkit.fluxcd.io/v2"},"severity":"error","timestamp":"%s","message":"Helm upgrade failed","reason":"UpgradeFailed","metadata":{"revision":"6.6.0"},"reportingController":"helm-controller"}' "$(date -u +%Y-%m-%dT%H:%M:%SZ)")

echo; echo "== metrics (excerpt)"
get "$admin/metrics" | grep -E '^promoter_(events_received_total|promotions_total)'
