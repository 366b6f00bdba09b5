#!/usr/bin/env bash
# Runs aimesh-agent FROM THE OCI IMAGE (scripts/build-image.sh) under runc,
# configured as helm/aimesh's DaemonSet runs it, in the sandbox every e2e
# test uses (scripts/demo.sh's pattern):
#   - a child cgroup the test makes (the agent attaches there only, never to
#     the cgroup root), bind-mounted read-only into the container at
#     /host<cgroup2 root> as the chart does;
#   - clients in namespace aimesh-img-c-PID (no default route: a service
#     address is reachable only through the agent's connect() rewrite),
#     model-server stand-ins in aimesh-img-m-PID, joined by a veth pair;
#   - the container: host network namespace (the chart's hostNetwork), its
#     own mount/PID/IPC/UTS namespaces, read-only root, only CAP_BPF,
#     CAP_NET_ADMIN, CAP_SYS_ADMIN and CAP_PERFMON (the chart's list),
#     /sys/fs/bpf bound from the host (pins under /sys/fs/bpf/aimesh-img-PID),
#     the API socket in a host directory bound at /run/aimesh. runc, not
#     crun: crun 1.8 refuses to start anything on a host with hybrid (v1 +
#     v2) cgroups such as this one. runc puts the container in a cgroup
#     aimesh-img-PID-agent of its own (removed with the container).
# Checks: connections to the service address from the client namespace reach
# the model servers, spread over more than one; the image's meshctl answers
# through the socket; GET /metrics from the containerized agent serves
# aimesh_ series counting those connections. Everything it made is removed,
# pass or fail, and checked to be gone.
#   tests/image/image_test.sh BUILD_DIR   (CTest: image_run; as root)
# The image is BUILD_DIR/image, a build output that stays; it is (re)built
# when missing or older than the programs, the Dockerfile or the script.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
B=${1:-${BUILD_DIR:-build}}
case $B in /*) ;; *) B=$ROOT/$B ;; esac
[ "$(id -u)" -eq 0 ] || { echo "image_test: run as root (BPF, cgroups, namespaces, runc)" >&2; exit 1; }
for t in runc umoci mmdebstrap curl python3 ip bpftool; do
  command -v $t >/dev/null || { echo "image_test: $t missing (scripts/install-deps.sh)" >&2; exit 1; }
done

fail() { echo "image_test: FAIL: $*" >&2; exit 1; }
# retry SECS CMD...: runs CMD until it succeeds, for at most SECS seconds.
retry() {
  local secs=$1; shift
  local end=$((SECONDS + secs))
  until "$@"; do [ $SECONDS -lt $end ] || return 1; sleep 0.2; done
}

# ---- the programs and the image
# (A directory that is not a CMake build dir is taken as it is.)
if [ -f "$B/CMakeCache.txt" ]; then
  timeout 900 cmake --build "$B" --target aimesh-agent meshctl model-server >/dev/null
fi
for f in aimesh-agent meshctl model-server; do [ -x "$B/$f" ] || fail "$B/$f missing"; done
IMG=$B/image
VERSION=$(sed -n 's/^project(aimesh VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
if [ ! -f "$IMG/index.json" ] || [ "$B/aimesh-agent" -nt "$IMG/index.json" ] || [ "$B/meshctl" -nt "$IMG/index.json" ] ||
   [ scripts/build-image.sh -nt "$IMG/index.json" ] || [ Dockerfile -nt "$IMG/index.json" ]; then
  timeout 1200 scripts/build-image.sh --build-dir "$B" --out "$IMG"
fi

# The image's config says what the Dockerfile says: entrypoint, user,
# labels (but base.name: the image is not built on debian:bookworm-slim).
python3 - "$IMG" "$VERSION" Dockerfile <<'EOF' || fail "image config differs from the Dockerfile"
import json, re, sys
img, version, dockerfile = sys.argv[1:]
blob = lambda d: json.load(open(f"{img}/blobs/sha256/{d.split(':')[1]}"))
index = json.load(open(f"{img}/index.json"))
ref = [m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == version]
assert len(ref) == 1, f"no image tagged {version} in {img}"
config = blob(blob(ref[0]["digest"])["config"]["digest"])["config"]
want = {k: v.replace("${VERSION}", version) for k, v in
        re.findall(r'(org\.opencontainers\.image\.[a-z.]+)="([^"]*)"', open(dockerfile).read())}
want.pop("org.opencontainers.image.base.name", None)
ok = config.get("Entrypoint") == ["aimesh-agent"] and config.get("User") == "0" and config.get("Labels") == want
if not ok:
    print(json.dumps(config, indent=1), "want labels", want, file=sys.stderr)
sys.exit(0 if ok else 1)
EOF

# ---- the sandbox
CG_ROOT=$(awk '$3=="cgroup2"{print $2; exit}' /proc/self/mounts)
[ -n "$CG_ROOT" ] || fail "no cgroup v2 mount"
CG=$CG_ROOT/aimesh-img-$$
NSC=aimesh-img-c-$$ NSM=aimesh-img-m-$$
VC=aimi$$c VM=aimi$$m
PIN=/sys/fs/bpf/aimesh-img-$$
CID=aimesh-img-$$
CTR_CG=aimesh-img-$$-agent  # the container's own cgroup, in every hierarchy
WORK=$(mktemp -d /tmp/aimesh-image-test.XXXXXX)
BUNDLE=$WORK/bundle
RUNC=(runc --root "$WORK/runc")
RUNC_PID= PIDS=()

cleanup() {
  set +e
  trap - EXIT INT TERM
  if [ -n "$RUNC_PID" ]; then
    timeout 10 "${RUNC[@]}" kill "$CID" TERM 2>/dev/null
    for _ in $(seq 50); do kill -0 "$RUNC_PID" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$RUNC_PID" 2>/dev/null && timeout 10 "${RUNC[@]}" kill "$CID" KILL 2>/dev/null
    wait "$RUNC_PID" 2>/dev/null
  fi
  timeout 10 "${RUNC[@]}" delete -f "$CID" >/dev/null 2>&1
  for d in /sys/fs/cgroup/*/"$CTR_CG" "$CG_ROOT/$CTR_CG"; do [ -d "$d" ] && rmdir "$d" 2>/dev/null; done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  # Detach and unpin what the containerized agent left pinned (it keeps its
  # pins at exit, for the next agent to adopt).
  [ -d "$PIN" ] && timeout 30 "$B/aimesh-agent" --cleanup --pin-dir "$PIN" >/dev/null 2>&1
  [ -d "$PIN" ] && rm -rf "$PIN"
  ip netns del "$NSC" 2>/dev/null; ip netns del "$NSM" 2>/dev/null
  if [ -d "$CG" ]; then
    # Only the test's own clients can be in it.
    for p in $(cat "$CG/cgroup.procs" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    for _ in $(seq 25); do rmdir "$CG" 2>/dev/null && break; sleep 0.2; done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir "$CG"
ip netns add "$NSC"; ip netns add "$NSM"
ip link add "$VC" type veth peer name "$VM"
ip link set "$VC" netns "$NSC"; ip link set "$VM" netns "$NSM"
ip -n "$NSC" addr add 10.77.0.1/24 dev "$VC"
ip -n "$NSC" link set "$VC" up; ip -n "$NSC" link set lo up
for i in 2 3 4; do ip -n "$NSM" addr add 10.77.0.$i/24 dev "$VM"; done
ip -n "$NSM" link set "$VM" up; ip -n "$NSM" link set lo up
for i in 2 3 4; do
  ip netns exec "$NSM" "$B/model-server" --listen 10.77.0.$i --port 8000 --name "replica-$i" \
    --model llama-3-8b-instruct --ttft-ms 5 --tpot-ms 1 --tokens 2 >"$WORK/model-$i.log" 2>&1 &
  PIDS+=($!)
done
mkdir -p "$WORK/etc" "$WORK/run"
cat >"$WORK/etc/state.yaml" <<'EOF'
services:
  - name: chat
    namespace: ml
    model: llama-3-8b-instruct
    vips: [10.96.0.30]
    ports: [{port: 8000}]
    algorithm: random
    endpoints:
      - {address: 10.77.0.2, port: 8000}
      - {address: 10.77.0.3, port: 8000}
      - {address: 10.77.0.4, port: 8000}
EOF

# bpffs on the host, as the chart's init container makes sure of.
if [ "$(stat -f -c %T /sys/fs/bpf)" != bpf_fs ]; then
  mount -t bpf bpf /sys/fs/bpf
fi

# ---- the container: the image unpacked to an OCI runtime bundle
umoci unpack --image "$IMG:$VERSION" "$BUNDLE" >/dev/null
# The mount points the bundle needs, made before the root is read-only.
mkdir -p "$BUNDLE/rootfs/host$CG_ROOT" "$BUNDLE/rootfs/run/aimesh" "$BUNDLE/rootfs/etc/aimesh"
python3 - "$BUNDLE/config.json" "$CG_ROOT" "$CG" "$PIN" "$WORK" "$CTR_CG" <<'EOF'
import json, sys
path, cg_root, cg, pin, work, ctr_cg = sys.argv[1:]
c = json.load(open(path))
p = c["process"]
# The image's entrypoint (aimesh-agent) with the flags the chart's
# agent.conf sets, pointed at the sandbox.
assert p["args"][0] == "aimesh-agent", p["args"]
p["args"] = ["aimesh-agent", "--cgroup", "/host" + cg, "--state-file", "/etc/aimesh/state.yaml",
             "--pin-dir", pin, "--api-socket", "/run/aimesh/agent.sock",
             "--metrics-addr", "127.0.0.1:0", "--log-level", "info"]
p["terminal"] = False
caps = ["CAP_BPF", "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_PERFMON"]  # the chart's add: list
p["capabilities"] = {k: caps for k in ("bounding", "effective", "permitted")}
p["noNewPrivileges"] = True
c["root"]["readonly"] = True  # the chart's readOnlyRootFilesystem
lin = c["linux"]
# hostNetwork: no network namespace of its own.
lin["namespaces"] = [n for n in lin["namespaces"] if n["type"] != "network"]
# The container's own cgroup (runc makes and removes it); no limits.
lin["cgroupsPath"] = "/" + ctr_cg
lin.pop("resources", None)
c["mounts"] = [m for m in c["mounts"] if m["destination"] != "/sys/fs/cgroup"]
c["mounts"] += [
    # The chart's volumes: bpffs (HostToContainer), the cgroup v2 root
    # (read-only at /host<root>), the socket directory, the configuration.
    {"destination": "/sys/fs/bpf", "type": "bind", "source": "/sys/fs/bpf", "options": ["rbind", "rw", "rslave"]},
    {"destination": "/host" + cg_root, "type": "bind", "source": cg_root, "options": ["rbind", "ro"]},
    {"destination": "/run/aimesh", "type": "bind", "source": work + "/run", "options": ["rbind", "rw"]},
    {"destination": "/etc/aimesh", "type": "bind", "source": work + "/etc", "options": ["rbind", "ro"]},
]
json.dump(c, open(path, "w"), indent=2)
EOF

# What is attached to the cgroup root before the agent starts (the agent
# must add nothing there).
ROOT_PROGS_BEFORE=$(bpftool cgroup show "$CG_ROOT" 2>/dev/null | sort)
start=$SECONDS
"${RUNC[@]}" run --bundle "$BUNDLE" "$CID" >"$WORK/agent.log" 2>&1 </dev/null &
RUNC_PID=$!
# meshctl from the image, in the running container, through the API socket.
meshctl_in() { timeout 10 "${RUNC[@]}" exec "$CID" meshctl --socket /run/aimesh/agent.sock "$@"; }
if ! retry 30 meshctl_in status >/dev/null 2>&1; then
  cat "$WORK/agent.log" >&2
  fail "the containerized agent did not answer meshctl status within 30 s"
fi
echo "agent up in the container after $((SECONDS - start)) s"
meshctl_in -o json status >"$WORK/status.json"
METRICS=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["metrics_addr"])' "$WORK/status.json")
case $METRICS in 127.0.0.1:[1-9]*) ;; *) fail "metrics_addr '$METRICS'" ;; esac
retry 10 curl -sf --max-time 2 -o /dev/null "http://$METRICS/readyz" || fail "/readyz of the containerized agent"
[ -n "$(bpftool cgroup show "$CG" 2>/dev/null | tail -n +2)" ] || fail "no program attached to $CG"
[ "$(bpftool cgroup show "$CG_ROOT" 2>/dev/null | sort)" = "$ROOT_PROGS_BEFORE" ] ||
  fail "the programs attached to the cgroup root $CG_ROOT changed"
meshctl_in services >"$WORK/services" || fail "meshctl services"
grep -q chat "$WORK/services" || fail "meshctl services does not list chat"

# ---- traffic: new connections to the service address, from the client
# namespace and the test cgroup (joined first: ip netns exec remounts /sys).
client() { bash -c 'echo $$ > "$0/cgroup.procs"; exec ip netns exec "$1" "${@:2}"' "$CG" "$NSC" "$@"; }
N=12
: >"$WORK/backends"
for i in $(seq $N); do
  client curl -s --max-time 5 -o "$WORK/out" -w '%{http_code}\n' -H 'Content-Type: application/json' \
    -d '{"prompt":"hello","max_tokens":2}' http://10.96.0.30:8000/v1/completions >"$WORK/code" ||
    fail "connection $i to 10.96.0.30:8000 failed (curl exit $?)"
  [ "$(cat "$WORK/code")" = 200 ] || fail "connection $i: HTTP $(cat "$WORK/code")"
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["backend"])' "$WORK/out" >>"$WORK/backends"
done
echo "backends: $(sort "$WORK/backends" | uniq -c | xargs)"
grep -qvE '^replica-[234]$' "$WORK/backends" && fail "a response from an unknown backend"
[ "$(sort -u "$WORK/backends" | wc -l)" -ge 2 ] || fail "all $N connections went to one backend (random over 3)"
# Without the agent there is no route to the service address at all.
if ip netns exec "$NSC" curl -s --max-time 2 -o /dev/null http://10.96.0.30:8000/ 2>/dev/null; then
  fail "10.96.0.30 reachable from outside the test cgroup"
fi

# ---- /metrics from the agent in the container
curl -sf --max-time 5 "http://$METRICS/metrics" >"$WORK/metrics" || fail "GET /metrics"
grep -q '^aimesh_' "$WORK/metrics" || fail "/metrics has no aimesh_ series"
conns=$(awk '/^aimesh_service_connections_total\{/ && /destination_service="chat"/ {s += $NF} END {print s + 0}' "$WORK/metrics")
[ "$conns" -ge $N ] || fail "aimesh_service_connections_total{destination_service=\"chat\"} = $conns, want >= $N"
echo "/metrics: $(grep -c '^aimesh_' "$WORK/metrics") aimesh_ samples; service connections: $conns"
kill -0 "$RUNC_PID" 2>/dev/null || fail "the container exited"

# ---- clean up, then check that nothing is left
cleanup
left=()
ip netns list | grep -qE "^($NSC|$NSM)( |$)" && left+=("netns")
[ -e "$CG" ] && left+=("cgroup $CG")
[ -e "$PIN" ] && left+=("pins $PIN")
[ -e "$WORK" ] && left+=("$WORK")
kill -0 "$RUNC_PID" 2>/dev/null && left+=("runc pid $RUNC_PID")
for d in /sys/fs/cgroup/*/"$CTR_CG" "$CG_ROOT/$CTR_CG"; do [ -e "$d" ] && left+=("cgroup $d"); done
[ ${#left[@]} -eq 0 ] || { echo "image_test: FAIL: left behind: ${left[*]}" >&2; exit 1; }
echo "image_test: PASS ($SECONDS s)"
