#!/bin/bash
# tcp-lifecycle: connections come and go over NVMe/TCP without leaks, and
# host access is enforced.
# - A refused host: `nvme discover` shows it nothing it may not use, `nvme
#   connect` fails, the target's log says why, and the target runs on.
# - The allowed host connects, runs verified I/O and disconnects.
# - 50 connect/disconnect cycles: the target's open file descriptors come
#   back to what they were after a warm-up cycle, and its RSS grows by less
#   than 4 MiB.
# Functions below run through step/must: SC2317 cannot see that.
# shellcheck disable=SC2317
TRTYPE=tcp
# shellcheck source=tests/vm/guest/lib.sh
source "$NVMF_VM_LIB"

NQN=nqn.2024-01.io.nvmf-tgt:tcp-lifecycle
HOST_OK=nqn.2014-08.org.nvmexpress:uuid:33333333-3333-4333-8333-333333333333
HOST_BAD=nqn.2014-08.org.nvmexpress:uuid:22222222-2222-4222-8222-222222222222
CONF=$R/nvmf-tgt.toml
TGT_MASK=0x3
CYCLES=${CYCLES:-50}

require_capability "transport tcp"
{
    printf '[[bdev]]\nname = "Malloc0"\nkind = "malloc"\nnum_blocks = 65536\nblock_size = 512\n\n'
    subsystem_config "$NQN" NVMFTGTTCPLIFE01 Malloc0 |
        sed "s/^allow_any_host = true\$/allow_any_host = false\nhosts = [\"$HOST_OK\"]/"
} >"$CONF"
sed 's/^/    config: /' "$CONF"

cleanup() {
    nvme disconnect -n "$NQN" || true
    [[ -n $TGT_PID ]] && kill -KILL "$TGT_PID"
}

start_target "$CONF"
must "nvmf-tgt listening" wait_target_listening

refused_discover() {
    local out
    out=$(nvme discover -t tcp -a "$NVMF_VM_ADDR" -s "$TRSVCID" --hostnqn="$HOST_BAD") || return 1
    echo "$out" | grep -E 'subnqn'
    ! grep -q "$NQN" <<<"$out"
}
step "refused host: nvme discover shows no subsystem it may not use" refused_discover
refused_connect() {
    ! nvme connect -t tcp -a "$NVMF_VM_ADDR" -s "$TRSVCID" -n "$NQN" --hostnqn="$HOST_BAD" &&
        grep -E "Connect refused: host $HOST_BAD" "$R/target.log"
}
step "refused host: nvme connect is refused, and the log says why" refused_connect
step "refused host: target still running" target_alive

must "allowed host: nvme connect" connect "$NQN" --hostnqn="$HOST_OK"
step "allowed host: verified I/O" fio_run allowed --rw=randwrite --bs=4k --iodepth=32 \
    --numjobs=2 --size=8M --offset_increment=8M --verify=crc32c --do_verify=1 --verify_fatal=1
must "allowed host: nvme disconnect" disconnect "$NQN"

fds() { find "/proc/$TGT_PID/fd" -mindepth 1 | wc -l; }
cycle() {
    connect "$NQN" --hostnqn="$HOST_OK" >/dev/null && disconnect "$NQN" >/dev/null
}
must "warm-up cycle" cycle
fds_before=$(fds)
rss_before=$(tgt_rss_kib)
cycles() {
    local i
    for ((i = 1; i <= CYCLES; i++)); do
        cycle || { echo "cycle $i failed"; return 1; }
    done
    echo "$CYCLES cycles done"
}
step "$CYCLES connect/disconnect cycles" cycles
no_leaks() {
    local fds_after rss_after
    wait_for 10 bash -c "[[ \$(find /proc/$TGT_PID/fd -mindepth 1 | wc -l) -le $fds_before ]]"
    fds_after=$(fds)
    rss_after=$(tgt_rss_kib)
    echo "open fds: $fds_before -> $fds_after; RSS: $rss_before -> $rss_after KiB"
    result fds_before "$fds_before"
    result fds_after "$fds_after"
    result rss_growth_kib $((rss_after - rss_before))
    ((fds_after <= fds_before && rss_after - rss_before < 4096))
}
step "no sockets or memory leaked" no_leaks
step "nvmf-tgt exits 0 within 10 s of SIGTERM" stop_target
finish
