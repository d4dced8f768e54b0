#!/bin/bash
# tcp-basic: our target serving a malloc bdev over NVMe/TCP on two reactors
# (-m 0x3), driven by the Linux host's nvme-tcp: the whole initiator suite
# (discover, connect, id-ctrl, id-ns, fio crc32c verify at 4k and 128k, QD 32,
# 2 jobs, 1 MiB passthrough, perf, disconnect), once plainly and once with
# --hdr-digest --data-digest --disable-sqflow (the host refuses a connection
# whose digests the target does not grant; without SQ flow control the
# target ends each successful read with a C2HData carrying SUCCESS, and no
# response capsule). Both reactors must have served I/O of the one
# controller; SIGTERM must stop the target with status 0 within 10 s.
# Functions below run through step/must: SC2317 cannot see that.
# shellcheck disable=SC2317
TRTYPE=tcp
# shellcheck source=tests/vm/guest/lib.sh
source "$NVMF_VM_LIB"

NQN=nqn.2024-01.io.nvmf-tgt:tcp-basic
SERIAL=NVMFTGTTCP000001
MODEL="nvmf-tgt malloc"
NUM_BLOCKS=262144 # 128 MiB: >= 2 * VERIFY_SIZE_128K + 4 MiB (see lib.sh)
CONF=$R/nvmf-tgt.toml
TGT_MASK=0x3

require_capability "transport tcp"
result kernel "$(uname -r)"
{
    printf '[[bdev]]\nname = "Malloc0"\nkind = "malloc"\nnum_blocks = %s\nblock_size = 512\n\n' \
        "$NUM_BLOCKS"
    subsystem_config "$NQN" "$SERIAL" Malloc0 "$MODEL"
} >"$CONF"
sed 's/^/    config: /' "$CONF"

cleanup() {
    nvme disconnect -n "$NQN" || true
    [[ -n $TGT_PID ]] && kill -KILL "$TGT_PID"
}

start_target "$CONF"
must "nvmf-tgt listening on $NVMF_VM_ADDR:$TRSVCID" wait_target_listening
initiator_suite "$NQN" "$SERIAL" "$MODEL" $((NUM_BLOCKS * 512))
CONNECT_ARGS=(--hdr-digest --data-digest --disable-sqflow)
note "the same suite with header and data digests, without SQ flow control"
initiator_suite "$NQN" "$SERIAL" "$MODEL" $((NUM_BLOCKS * 512))
step "nvmf-tgt survived the host's sessions" target_alive
step "nvmf-tgt exits 0 within 10 s of SIGTERM" stop_target
both_reactors_served() {
    grep -E 'reactor 0: served [1-9][0-9]* I/O commands' "$R/target.log" &&
        grep -E 'reactor 1: served [1-9][0-9]* I/O commands' "$R/target.log"
}
step "both reactors served the controller's I/O queues" both_reactors_served
finish
