#!/bin/bash
# rdma-reconnect: the target is killed (SIGKILL) in the middle of fio and
# started again. The Linux host must reconnect on its own, fio must finish
# without an I/O error (the host requeues what was in flight), and verified
# I/O must work on the restarted target. The namespace is a RAM disk, so data
# written before the kill is gone by design; only I/O after the restart is
# verified.
# Functions below run through step/must: SC2317 cannot see that.
# shellcheck disable=SC2317
# shellcheck source=tests/vm/guest/lib.sh
source "$NVMF_VM_LIB"

NQN=nqn.2024-01.io.nvmf-tgt:reconnect
CONF=$R/nvmf-tgt.toml
LOAD_S=${LOAD_S:-40}    # fio runtime around the kill
KILL_AFTER_S=${KILL_AFTER_S:-8}
RECONNECT_MAX_S=${RECONNECT_MAX_S:-60}

require_capability "transport $TRTYPE"

malloc_subsystem_config "$NQN" NVMFTGTRECO0001 131072 >"$CONF"

FIO_PID=''
cleanup() {
    [[ -n $FIO_PID ]] && kill "$FIO_PID"
    nvme disconnect -n "$NQN" || true
    [[ -n $TGT_PID ]] && kill -KILL "$TGT_PID"
}

start_target "$CONF"
must "nvmf-tgt listening" wait_target_listening
# The host retries every second and gives up after RECONNECT_MAX_S.
must "nvme connect (reconnect delay 1 s, controller loss timeout ${RECONNECT_MAX_S} s)" \
    connect "$NQN" --reconnect-delay=1 --ctrl-loss-tmo="$RECONNECT_MAX_S"
ctrl_before=$CTRL

fio_run load --rw=randrw --bs=4k --iodepth=32 --numjobs=2 --size=16M --offset_increment=16M \
    --time_based --runtime="$LOAD_S" >"$R/steps/fio-load.log" 2>&1 &
FIO_PID=$!
note "fio (pid $FIO_PID) runs ${LOAD_S} s; killing the target after ${KILL_AFTER_S} s"
sleep "$KILL_AFTER_S"

kill_target() {
    kill -KILL "$TGT_PID" || return 1
    wait "$TGT_PID"
    echo "nvmf-tgt (pid $TGT_PID) killed: status $?"
    TGT_PID=''
}
must "SIGKILL the target during fio" kill_target
t_kill=$(date +%s)
sleep 2
start_target "$CONF"
must "restarted nvmf-tgt listening" wait_target_listening

host_reconnected() {
    local state
    for ((i = 0; i < RECONNECT_MAX_S * 5; i++)); do
        state=$(<"/sys/class/nvme/$ctrl_before/state") || return 1
        [[ $state == live ]] && { echo "$ctrl_before is live again"; return 0; }
        sleep 0.2
    done
    echo "$ctrl_before still '$state' after $RECONNECT_MAX_S s"
    return 1
}
must "the host reconnects on its own" host_reconnected
result reconnect_s $(($(date +%s) - t_kill))

fio_survived() {
    wait "$FIO_PID"
    local rc=$?
    FIO_PID=''
    cat "$R/steps/fio-load.log"
    return "$rc"
}
step "fio through the kill finishes without an I/O error" fio_survived
_find_ctrl_ns "$NQN"
step "verified I/O on the restarted target" fio_run after-restart --rw=randwrite --bs=4k \
    --iodepth=32 --numjobs=2 --size=16M --offset_increment=16M \
    --verify=crc32c --do_verify=1 --verify_fatal=1
step "nvme disconnect" disconnect "$NQN"
step "restarted nvmf-tgt exits 0 on SIGTERM" stop_target
served_after_restart() {
    grep -E 'reactor 0: served [1-9][0-9]* I/O commands' "$R/target.log"
}
step "the restarted target served I/O" served_after_restart
finish
