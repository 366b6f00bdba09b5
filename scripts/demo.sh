#!/usr/bin/env bash
# README command 1: install the dependencies and build the programs the demo
# runs (scripts/install-deps.sh --demo; agent, meshctl, the model-server
# stand-in), and run aimesh on the bundled
# example state (examples/state.yaml) in a sandbox of its own:
#   - a child cgroup (the agent attaches there, never to the root cgroup),
#   - namespace "aimesh-demo-c" for clients and "aimesh-demo-m" for model
#     servers, joined by a veth pair, with no default route anywhere,
#   - model-server stand-ins on 10.77.0.2-4 (OpenAI-style /v1/completions),
# then sends a few requests through the service addresses, prints
# `meshctl services` / `meshctl endpoints` and the /metrics URL, and waits for
# Ctrl-C. Everything it created is removed on exit, whatever the cause.
#   scripts/demo.sh [--no-install] [--once]   (--once: exit after the tour)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
INSTALL=1 ONCE=0
for a in "$@"; do
  case $a in
    --no-install) INSTALL=0 ;;
    --once) ONCE=1 ;;
    *) echo "usage: $0 [--no-install] [--once]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (BPF, cgroups, namespaces)" >&2; exit 1; }
[ $INSTALL -eq 1 ] && scripts/install-deps.sh --demo
# Only what the demo runs (the `demo` target: agent, meshctl, model-server
# stand-in, BPF objects). By default -O2 without debug information (a third
# less compile time) in a build directory of its own, so it does not change
# the one the README's test command builds everything in; with BUILD_DIR
# (the CTest demo_once: the test build) that directory as it is configured.
if [ -n "${BUILD_DIR:-}" ]; then
  B=$BUILD_DIR
  [ -f "$B/CMakeCache.txt" ] || cmake -S . -B "$B" >/dev/null
else
  B=build-demo
  cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -DNDEBUG" \
    -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -DNDEBUG" >/dev/null
fi
cmake --build "$B" -j"${JOBS:-$(nproc)}" --target demo
case $B in /*) ;; *) B=$ROOT/$B ;; esac

CG_ROOT=$(awk '$3=="cgroup2"{print $2; exit}' /proc/self/mounts)
[ -n "$CG_ROOT" ] || { echo "demo: no cgroup v2 mount" >&2; exit 1; }
CG=$CG_ROOT/aimesh-demo-$$
NSC=aimesh-demo-c NSM=aimesh-demo-m
PIN=/sys/fs/bpf/aimesh-demo-$$
WORK=$(mktemp -d /tmp/aimesh-demo.XXXXXX)
SOCK=$WORK/agent.sock
METRICS=${AIMESH_DEMO_METRICS:-127.0.0.1:9464}
PIDS=()

cleanup() {
  set +e
  trap - EXIT INT TERM
  trap '' PIPE  # a closed stdout (e.g. a pipe to a pager) must not stop the cleanup
  echo; echo "== cleaning up"
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  [ -x "$B/aimesh-agent" ] && "$B/aimesh-agent" --cleanup --pin-dir "$PIN" >/dev/null 2>&1
  ip netns del $NSC 2>/dev/null; ip netns del $NSM 2>/dev/null
  [ -d "$CG" ] && rmdir "$CG" 2>/dev/null
  rm -rf "$WORK"
  echo "removed cgroup, namespaces, pins and processes"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== sandbox: cgroup $CG, namespaces $NSC (clients) and $NSM (model servers)"
ip netns del $NSC 2>/dev/null || true; ip netns del $NSM 2>/dev/null || true
mkdir "$CG"
ip netns add $NSC; ip netns add $NSM
ip link add aimdemo-c type veth peer name aimdemo-m
ip link set aimdemo-c netns $NSC; ip link set aimdemo-m netns $NSM
ip -n $NSC addr add 10.77.0.1/24 dev aimdemo-c
ip -n $NSC link set aimdemo-c up; ip -n $NSC link set lo up
for i in 2 3 4; do ip -n $NSM addr add 10.77.0.$i/24 dev aimdemo-m; done
ip -n $NSM link set aimdemo-m up; ip -n $NSM link set lo up

start_model() {  # addr port name model
  ip netns exec $NSM "$B/model-server" --listen "$1" --port "$2" --name "$3" --model "$4" \
    --ttft-ms 40 --tpot-ms 8 --tokens 8 >"$WORK/$3.log" 2>&1 &
  PIDS+=($!)
}
start_model 10.77.0.2 8000 llama-0 llama-3-8b-instruct
start_model 10.77.0.3 8000 llama-1 llama-3-8b-instruct
start_model 10.77.0.4 8000 llama-2 llama-3-8b-instruct
start_model 10.77.0.2 8001 embed-0 bge-large
start_model 10.77.0.3 8001 embed-1 bge-large

echo "== agent on examples/state.yaml (pins in $PIN, API $SOCK, metrics $METRICS)"
"$B/aimesh-agent" --cgroup "$CG" --state-file "$ROOT/examples/state.yaml" --pin-dir "$PIN" \
  --api-socket "$SOCK" --metrics-addr "$METRICS" >"$WORK/agent.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  "$B/meshctl" --socket "$SOCK" status >/dev/null 2>&1 && break
  sleep 0.1
done
"$B/meshctl" --socket "$SOCK" status >/dev/null || { cat "$WORK/agent.log"; exit 1; }
# The address the agent really bound (the flag may say port 0).
METRICS=$("$B/meshctl" --socket "$SOCK" -o json status | python3 -c 'import json,sys; print(json.load(sys.stdin)["metrics_addr"])')

# A client: joins the demo cgroup first, then the client namespace (ip netns
# exec mounts a fresh /sys, so the cgroup must be joined before).
client() { bash -c 'echo $$ > "$0/cgroup.procs"; exec ip netns exec "$1" "${@:2}"' "$CG" $NSC "$@"; }

echo; echo "== 6 completions to http://10.96.0.20:8000 (llama-chat), each a new connection"
for i in 1 2 3 4 5 6; do
  client curl -s --max-time 5 -o "$WORK/out" -w '%{http_code} peer=%{remote_ip}:%{remote_port} ' \
    -H 'Content-Type: application/json' \
    -d '{"model":"llama-3-8b-instruct","prompt":"hello","max_tokens":4}' http://10.96.0.20:8000/v1/completions
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("served by", d.get("backend","?"))' "$WORK/out"
done
echo; echo "== a streamed completion (server-sent events) through the IPv6 service address"
client curl -s -N --max-time 5 -H 'Content-Type: application/json' \
  -d '{"prompt":"hi","max_tokens":3,"stream":true}' 'http://[fd00:96::20]:8000/v1/completions' | grep -c '^data:' \
  | sed 's/^/SSE events received: /'
echo; echo "== 2 requests to http://10.96.0.21:8001 (embed-llm)"
for i in 1 2; do
  client curl -s --max-time 5 -o /dev/null -w '%{http_code} peer=%{remote_ip}:%{remote_port}\n' \
    -H 'Content-Type: application/json' -d '{"prompt":"x","max_tokens":1}' http://10.96.0.21:8001/v1/completions
done

echo; echo "== meshctl services"; "$B/meshctl" --socket "$SOCK" services
echo; echo "== meshctl endpoints"; "$B/meshctl" --socket "$SOCK" endpoints
echo; echo "== metrics: http://$METRICS/metrics"
curl -s "http://$METRICS/metrics" | grep -E '^aimesh_(service_connections_total|endpoint_connections_total)' || true
echo
echo "Try: $B/meshctl --socket $SOCK status   |   curl http://$METRICS/metrics"
echo "Edit examples/state.yaml to change weights or drain an endpoint; the agent applies it at once."
[ $ONCE -eq 1 ] && exit 0
echo "Press Ctrl-C to stop and remove everything."
while kill -0 "${PIDS[-1]}" 2>/dev/null; do sleep 1; done
echo "agent exited:"; tail -5 "$WORK/agent.log"; exit 1
