#!/bin/bash
# rdma-lifecycle: our target over Soft-RoCE through an operator's day:
#  1. the built-in default (no -c) listens on the RDMA address, warns that any
#     host may connect, and serves verified I/O;
#  2. with a config and two reactors (-m 0x3): a host whose NQN is not allowed
#     is refused and discovers nothing it may not use; the allowed host stays
#     connected through IDLE_S (30) s of idle on keep-alive, while the target
#     uses at most IDLE_CPU_LIMIT_PCT (25) % of one CPU; the log stays quiet
#     during I/O; both reactors served I/O queues of the one controller;
#  3. restarted: CYCLES (50) connect/disconnect cycles leave the target's QPs,
#     MRs, CM ids and memory where the first cycle left them.
# Functions below run through step/must: SC2317 cannot see that.
# shellcheck disable=SC2317
# shellcheck source=tests/vm/guest/lib.sh
source "$NVMF_VM_LIB"

NQN=nqn.2024-01.io.nvmf-tgt:lifecycle
OTHER_NQN=nqn.2024-01.io.nvmf-tgt:lifecycle-other
DEFAULT_NQN=nqn.2016-06.io.spdk:cnode1 # the built-in default's subsystem
ID_OK=11111111-1111-4111-8111-111111111111
ID_BAD=22222222-2222-4222-8222-222222222222
HOST_OK=nqn.2014-08.org.nvmexpress:uuid:$ID_OK
HOST_BAD=nqn.2014-08.org.nvmexpress:uuid:$ID_BAD
AS_OK=(--hostnqn="$HOST_OK" --hostid="$ID_OK")
AS_BAD=(--hostnqn="$HOST_BAD" --hostid="$ID_BAD")
IDLE_S=${IDLE_S:-30}
# Two spinning reactors would use 200%; sleeping ones used 7% in the bed (TCG:
# each wake-up, 120 a second, costs far more than on real hardware).
IDLE_CPU_LIMIT_PCT=25
CYCLES=${CYCLES:-50}
RSS_GROWTH_MAX_KIB=${RSS_GROWTH_MAX_KIB:-4096}
CONF=$R/nvmf-tgt.toml

require_capability "transport rdma"

cleanup() {
    nvme disconnect-all || true
    [[ -n $TGT_PID ]] && kill -KILL "$TGT_PID"
}

# discovered_nqns HOST_ARGS...: the subsystem NQNs this host is offered.
discovered_nqns() {
    nvme discover -t rdma -a "$NVMF_VM_ADDR" -s "$TRSVCID" -o json "$@" |
        python3 -c '
import json, sys
for r in json.load(sys.stdin).get("records", []):
    print(r["subtype"], r["subnqn"], sep=": ")'
}

no_target_qps() { [[ $(tgt_rdma_count qp) == 0 ]]; }

verify_io() {
    fio_run "$1" --rw=randwrite --bs=4k --iodepth=32 --numjobs=2 --size=8M \
        --offset_increment=8M --verify=crc32c --do_verify=1 --verify_fatal=1
}

# ---- 1. the built-in default ------------------------------------------------
start_target -
must "built-in default: listening on $NVMF_VM_ADDR:$TRSVCID" wait_target_listening
step "built-in default: start-up warning names the RDMA listener any host may reach, and how to restrict it" \
    grep -E "allows ANY host to connect, from other machines through rdma $NVMF_VM_ADDR:$TRSVCID(,[^;]*)?; to restrict it set allow_any_host = false" \
    "$R/target.log"
step "built-in default: nvme discover lists $DEFAULT_NQN" discover_check "$DEFAULT_NQN"
if step "built-in default: nvme connect" connect "$DEFAULT_NQN"; then
    step "built-in default: fio verify" verify_io default-verify
    step "built-in default: nvme disconnect" disconnect "$DEFAULT_NQN"
fi
step "built-in default: exits 0 on SIGTERM" stop_target

# ---- 2. restricted hosts, two reactors ----------------------------------------
cat >"$CONF" <<EOF
[[bdev]]
name = "Malloc0"
kind = "malloc"
num_blocks = 262144 # 128 MiB: the verify suite needs 2 * VERIFY_SIZE_128K + 4 MiB
block_size = 512

[[bdev]]
name = "Null0"
kind = "null"
num_blocks = 131072
block_size = 512

[[subsystem]]
nqn = "$NQN"
serial = "NVMFTGTLIFE0001"
allow_any_host = false
hosts = ["$HOST_OK"]

[[subsystem.listener]]
trtype = "rdma"
traddr = "$NVMF_VM_ADDR"
trsvcid = "$TRSVCID"

[[subsystem.namespace]]
bdev = "Malloc0"

[[subsystem]]
nqn = "$OTHER_NQN"
serial = "NVMFTGTLIFE0002"
allow_any_host = false
hosts = ["nqn.2014-08.org.nvmexpress:uuid:33333333-3333-4333-8333-333333333333"]

[[subsystem.listener]]
trtype = "rdma"
traddr = "$NVMF_VM_ADDR"
trsvcid = "$TRSVCID"

[[subsystem.namespace]]
bdev = "Null0"
EOF
sed 's/^/    config: /' "$CONF"

TGT_MASK=0x3 start_target "$CONF"
must "two reactors: listening on $NVMF_VM_ADDR:$TRSVCID" wait_target_listening

refused_discovery() {
    local got
    got=$(discovered_nqns "${AS_BAD[@]}") || return 1
    printf '%s\n' "$got"
    if grep -E ": ($NQN|$OTHER_NQN)\$" <<<"$got"; then
        echo "the refused host was offered a subsystem it may not use (above)"
        return 1
    fi
}
refused_connect() {
    if nvme connect -t rdma -a "$NVMF_VM_ADDR" -s "$TRSVCID" -n "$NQN" "${AS_BAD[@]}"; then
        echo "the host was let in"
        nvme disconnect -n "$NQN"
        return 1
    fi
    grep "host $HOST_BAD is not allowed on $NQN" "$R/target.log"
}
allowed_discovery() {
    local got
    got=$(discovered_nqns "${AS_OK[@]}") || return 1
    printf '%s\n' "$got"
    grep -qx "nvme subsystem: $NQN" <<<"$got" || { echo "$NQN not offered"; return 1; }
    ! grep -E ": $OTHER_NQN\$" <<<"$got" || { echo "$OTHER_NQN offered to a host it does not list"; return 1; }
}
step "refused host: nvme discover shows no subsystem it may not use" refused_discovery
step "refused host: nvme connect is refused, and the log says why" refused_connect
step "refused host: target still running" target_alive
step "allowed host: nvme discover shows only its subsystem" allowed_discovery
must "allowed host: nvme connect" connect "$NQN" "${AS_OK[@]}"

# cpu_ticks PID: user + system clock ticks the process has used so far.
cpu_ticks() {
    local stat f
    stat=$(<"/proc/$1/stat")
    stat=${stat##*) } # fields after "pid (comm) "; utime and stime are 12th and 13th
    read -r -a f <<<"$stat"
    echo $((f[11] + f[12]))
}

# Keep-alive: the host's controller stays live and untouched through the
# idle, and the target (interrupt mode, two reactors) leaves the CPUs alone.
idle_keeps_connection() {
    local ctrl=$CTRL dmesg_from log_from ticks_from ticks pct
    dmesg_from=$(dmesg | wc -l)
    log_from=$(wc -l <"$R/target.log")
    echo "idle for $IDLE_S s on $ctrl (state $(<"/sys/class/nvme/$ctrl/state"))"
    ticks_from=$(cpu_ticks "$TGT_PID")
    sleep "$IDLE_S"
    ticks=$(($(cpu_ticks "$TGT_PID") - ticks_from))
    pct=$((100 * ticks / ($(getconf CLK_TCK) * IDLE_S)))
    echo "state after: $(<"/sys/class/nvme/$ctrl/state")"
    echo "target CPU while idle: $ticks ticks in $IDLE_S s = $pct% of one CPU (limit $IDLE_CPU_LIMIT_PCT%)"
    echo "$pct" >"$R/idle-cpu-pct"
    [[ $(<"/sys/class/nvme/$ctrl/state") == live ]] || return 1
    ((pct <= IDLE_CPU_LIMIT_PCT)) || { echo "interrupt mode did not let the reactors sleep"; return 1; }
    if dmesg | tail -n +"$((dmesg_from + 1))" | grep -iE 'nvme|rdma'; then
        echo "the host's kernel logged the above while idle"
        return 1
    fi
    if tail -n +"$((log_from + 1))" "$R/target.log" | grep -E 'keep-alive|destroyed'; then
        echo "the target dropped the controller while idle (above)"
        return 1
    fi
    _find_ctrl_ns "$NQN" && [[ $CTRL == "$ctrl" ]]
}
step "idle ${IDLE_S} s: the connection survives on keep-alive; the target sleeps" idle_keeps_connection
[[ -f $R/idle-cpu-pct ]] && result idle_cpu_pct "$(<"$R/idle-cpu-pct")"

# Quiet log: a full verify suite logs nothing at the default level.
log_from=$(wc -l <"$R/target.log")
fio_verify_suite
quiet_log() {
    local new
    new=$(tail -n +"$((log_from + 1))" "$R/target.log")
    [[ -z $new ]] && { echo "no target log lines during I/O"; return 0; }
    printf '%s\n' "$new" | head -n 20
    echo "the target logged $(wc -l <<<"$new") line(s) during I/O at the default level"
    return 1
}
step "the target's log stays quiet during I/O" quiet_log
step "allowed host: nvme disconnect" disconnect "$NQN"
step "two reactors: exits 0 on SIGTERM" stop_target
both_reactors_served() {
    local lines
    lines=$(grep -E 'reactor [0-9]+: served [0-9]+ I/O commands' "$R/target.log" | tail -n 2)
    printf '%s\n' "$lines"
    for r in 0 1; do
        grep -qE "reactor $r: served [1-9][0-9]* I/O commands on [1-9]" <<<"$lines" ||
            { echo "reactor $r served no I/O"; return 1; }
    done
}
step "two reactors: both served I/O queues of the one controller" both_reactors_served

# ---- 3. connect/disconnect cycles ---------------------------------------------
TGT_MASK=0x3 start_target "$CONF"
must "restarted: listening on $NVMF_VM_ADDR:$TRSVCID" wait_target_listening
step "warm-up cycle: nvme connect" connect "$NQN" "${AS_OK[@]}"
# The counters below must see what the target holds, or "as before" proves nothing.
counters_see_target() {
    local held
    held=$(tgt_resources)
    echo "while connected: $held"
    [[ $held =~ qp=([0-9]+).*cm_id=([0-9]+) ]] && ((BASH_REMATCH[1] >= 3 && BASH_REMATCH[2] >= 4))
}
step "while connected: the counters see the target's QPs and CM ids" counters_see_target
step "warm-up cycle: nvme disconnect" disconnect "$NQN"

# Connect/disconnect cycles: resources return to the baseline taken after the
# first cycle (pools and caches are warm by then).
wait_for 10 no_target_qps
before=$(tgt_resources)
cycles() {
    local i
    for ((i = 1; i <= CYCLES; i++)); do
        connect "$NQN" "${AS_OK[@]}" >/dev/null || { echo "cycle $i: connect failed"; return 1; }
        disconnect "$NQN" >/dev/null || { echo "cycle $i: disconnect failed"; return 1; }
        ((i % 10 == 0)) && echo "cycle $i: $(tgt_resources)"
    done
    return 0
}
t=$(date +%s)
step "$CYCLES connect/disconnect cycles" cycles
result cycles_s $(($(date +%s) - t))
resources_stable() {
    wait_for 10 no_target_qps
    local after rss0 rss1
    after=$(tgt_resources)
    echo "before: $before"
    echo "after:  $after"
    [[ ${before% rss_kib=*} == "${after% rss_kib=*}" ]] || { echo "RDMA resources changed"; return 1; }
    rss0=${before##*rss_kib=} rss1=${after##*rss_kib=}
    echo "RSS grew by $((rss1 - rss0)) KiB (limit $RSS_GROWTH_MAX_KIB KiB)"
    ((rss1 - rss0 <= RSS_GROWTH_MAX_KIB))
}
step "after $CYCLES cycles: QPs, MRs, CM ids and memory as before" resources_stable
result resources_before "\"$before\""
result resources_after "\"$(tgt_resources)\""
step "after the cycles: exits 0 on SIGTERM" stop_target

finish
