#!/usr/bin/env bash
# Drives nvmf-tgt with SPDK's own Python client (PyPI's `spdk`, command `spdk-rpc`): the
# session an SPDK user types, save_config, a restart from it with --json, and load_config
# into a target started with --wait-for-rpc. Proves wire compatibility with the real client.
#
#   SPDK_RPC=/path/to/spdk-rpc NVMF_TGT_BIN=target/debug/nvmf-tgt tests/rpc/spdk-client.sh
set -euo pipefail

: "${SPDK_RPC:?set SPDK_RPC to the spdk-rpc command}"
: "${NVMF_TGT_BIN:?set NVMF_TGT_BIN to the nvmf-tgt binary}"
dir=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT

failures=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
# check NAME COMMAND...: a step that must succeed.
check() {
    local name=$1
    shift
    if "$@" >"$dir/out" 2>&1; then pass "$name"; else fail "$name"; sed 's/^/    /' "$dir/out"; fi
}

# start NAME ARGS...: a target on socket $dir/NAME.sock, waited for.
start() {
    local name=$1
    shift
    "$NVMF_TGT_BIN" -m 0x1 -r "$dir/$name.sock" "$@" >>"$dir/$name.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 200); do
        [[ -S $dir/$name.sock ]] && return 0
        sleep 0.05
    done
    echo "target $name did not open its socket; log:"
    cat "$dir/$name.log"
    return 1
}

rpc() {
    local name=$1
    shift
    "$SPDK_RPC" -s "$dir/$name.sock" "$@"
}

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
NQN=nqn.2016-06.io.spdk:cnode1
HOST=nqn.2014-08.org.nvmexpress:uuid:6f1c0e8e-5555-4a4f-9f0e-0a0b0c0d0e05

start a --wait-for-rpc
check "rpc_get_methods -c lists framework_start_init" bash -c "'$SPDK_RPC' -s '$dir/a.sock' rpc_get_methods -c | grep -q framework_start_init"
check "framework_start_init" rpc a framework_start_init
check "nvmf_create_transport -t TCP -q 64 -c 8192" rpc a nvmf_create_transport -t TCP -q 64 -c 8192
check "bdev_malloc_create -b Malloc0 64 512" rpc a bdev_malloc_create -b Malloc0 64 512
check "bdev_null_create Null0 100 4096" rpc a bdev_null_create Null0 100 4096
check "nvmf_create_subsystem -s -d" rpc a nvmf_create_subsystem $NQN -s SPDK00000000000001 -d SPDK_Controller1
check "nvmf_subsystem_add_ns Malloc0" rpc a nvmf_subsystem_add_ns $NQN Malloc0
check "nvmf_subsystem_add_ns -n 5 -u UUID Null0" rpc a nvmf_subsystem_add_ns -n 5 -u 0d8f4f36-6a5c-4b9e-9d2a-1f2e3d4c5b6a $NQN Null0
check "nvmf_subsystem_add_listener -t tcp" rpc a nvmf_subsystem_add_listener $NQN -t tcp -a 127.0.0.1 -s "$port"
check "nvmf_subsystem_add_host" rpc a nvmf_subsystem_add_host $NQN $HOST
check "nvmf_subsystem_allow_any_host --disable" rpc a nvmf_subsystem_allow_any_host --no-allow-any-host $NQN
rpc a nvmf_get_subsystems >"$dir/before.json"
check "nvmf_get_subsystems shows the session" python3 - "$dir/before.json" "$NQN" "$port" "$HOST" <<'PY'
import json, sys
subs = {s["nqn"]: s for s in json.load(open(sys.argv[1]))}
s = subs[sys.argv[2]]
assert s["serial_number"] == "SPDK00000000000001", s
assert s["model_number"] == "SPDK_Controller1", s
assert [n["nsid"] for n in s["namespaces"]] == [1, 5], s["namespaces"]
assert s["namespaces"][1]["uuid"] == "0d8f4f36-6a5c-4b9e-9d2a-1f2e3d4c5b6a"
assert s["listen_addresses"] == [{"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": sys.argv[3]}]
assert s["hosts"] == [{"nqn": sys.argv[4]}] and s["allow_any_host"] is False
PY
if rpc a nvmf_create_subsystem not-an-nqn >"$dir/out" 2>&1; then
    fail "a bad NQN is refused"
elif grep -q '"code": -32603' "$dir/out" && grep -q 'not-an-nqn' "$dir/out"; then
    pass "a bad NQN is refused, with the code and the name"
else
    fail "a bad NQN: unexpected answer"; sed 's/^/    /' "$dir/out"
fi
if rpc a bdev_malloc_delete Malloc0 >"$dir/out" 2>&1; then
    fail "a bdev in use cannot be deleted"
elif grep -q "$NQN" "$dir/out"; then
    pass "a bdev in use cannot be deleted, and the error names the subsystem"
else
    fail "bdev_malloc_delete: unexpected answer"; sed 's/^/    /' "$dir/out"
fi
check "save_config" bash -c "'$SPDK_RPC' -s '$dir/a.sock' save_config >'$dir/saved.json'"
check "spdk_kill_instance SIGTERM" rpc a spdk_kill_instance SIGTERM
for _ in $(seq 200); do kill -0 "${pids[0]}" 2>/dev/null || break; sleep 0.05; done
if kill -0 "${pids[0]}" 2>/dev/null; then fail "target a exits after spdk_kill_instance"; else pass "target a exits after spdk_kill_instance"; fi

start b --json "$dir/saved.json"
rpc b nvmf_get_subsystems >"$dir/after-json.json"
check "--json restart: the same subsystems" cmp "$dir/before.json" "$dir/after-json.json"
rpc b spdk_kill_instance SIGTERM >/dev/null 2>&1 || true
sleep 0.5

start c --wait-for-rpc
check "load_config into --wait-for-rpc" bash -c "'$SPDK_RPC' -s '$dir/c.sock' load_config <'$dir/saved.json'"
rpc c nvmf_get_subsystems >"$dir/after-load.json"
check "load_config: the same subsystems" cmp "$dir/before.json" "$dir/after-load.json"
check "framework_wait_init" rpc c framework_wait_init
rpc c spdk_kill_instance SIGTERM >/dev/null 2>&1 || true

if ((failures > 0)); then
    echo "spdk-client: $failures failure(s); target logs:"
    tail -n 20 "$dir"/*.log
    exit 1
fi
echo "spdk-client: all passed"
