#!/bin/bash
# rpc-live: the target is changed over its JSON-RPC socket (with `nvmf-tgt rpc`,
# the native client) while the Linux host is connected and fio verifies:
# - a namespace added under I/O appears on the host without a reconnect, and
#   goes again when removed; fio sees no error;
# - a second listener is added (discovery shows it);
# - the host is removed: its controller is disconnected, and it is refused until
#   it is allowed again, when it reconnects on its own;
# - the config is saved (save_config), the subsystem is deleted under I/O: the
#   host loses the controller, the target runs on with no queue left;
# - the target restarts from the saved config (--json): the host reconnects on
#   its own and verified I/O works again.
# Functions below run through step/must: SC2317 cannot see that.
# shellcheck disable=SC2317
TRTYPE=tcp
# shellcheck source=tests/vm/guest/lib.sh
source "$NVMF_VM_LIB"

NQN=nqn.2024-01.io.nvmf-tgt:rpc-live
HOST=nqn.2014-08.org.nvmexpress:uuid:44444444-4444-4444-8444-444444444444
CONF=$R/nvmf-tgt.toml
SOCK=/var/tmp/nvmf-rpc-live.sock  # $R is a 9p share, which cannot hold a socket
SAVED=$R/saved.json
PORT2=$((TRSVCID + 1))
LOSS_TMO_S=120

require_capability "transport tcp"
{
    printf '[[bdev]]\nname = "Malloc0"\nkind = "malloc"\nnum_blocks = 65536\nblock_size = 512\n\n'
    subsystem_config "$NQN" NVMFTGTRPCLIVE01 Malloc0 |
        sed "s/^allow_any_host = true\$/allow_any_host = false\nhosts = [\"$HOST\"]/"
} >"$CONF"

FIO_PID=''
cleanup() {
    [[ -n $FIO_PID ]] && kill -KILL "$FIO_PID"
    nvme disconnect -n "$NQN" || true
    [[ -n $TGT_PID ]] && kill -KILL "$TGT_PID"
}

trpc() { "$NVMF_TGT_BIN" rpc -s "$SOCK" "$@"; }

start_target "$CONF" -r "$SOCK"
must "nvmf-tgt listening" wait_target_listening
must "the RPC socket answers" trpc spdk_get_version
fds() { find "/proc/$TGT_PID/fd" -mindepth 1 | wc -l; }
fds_idle=$(fds)
must "nvme connect (controller loss timeout ${LOSS_TMO_S} s)" \
    connect "$NQN" --hostnqn="$HOST" --reconnect-delay=1 --ctrl-loss-tmo="$LOSS_TMO_S"
ctrl=$CTRL

# NSIDs the host has for the subsystem: its block devices, nvme<S>n<N> under the subsystem
# (native multipath) or nvme<C>n<N> under the controller.
subsystem_nsids() {
    local s
    for s in /sys/class/nvme-subsystem/* "/sys/class/nvme/$ctrl"; do
        [[ -e $s/subsysnqn && $(<"$s/subsysnqn") == "$NQN" ]] || continue
        find "$s/" -maxdepth 1 -regex '.*/nvme[0-9]+n[0-9]+' -printf '%f\n' | sed 's/.*n//'
    done | sort -nu | tr '\n' ' '
}
has_nsid() { [[ " $(subsystem_nsids)" == *" $1 "* ]]; }
lacks_nsid() { ! has_nsid "$1"; }
still_live() { [[ $(cat "/sys/class/nvme/$ctrl/state" 2>/dev/null) == live ]]; }
not_live() { ! still_live; }
ctrl_state() { cat "/sys/class/nvme/$ctrl/state" 2>/dev/null || echo gone; }

fio_run live --rw=randwrite --bs=4k --iodepth=16 --numjobs=2 --size=8M --offset_increment=8M \
    --verify=crc32c --verify_backlog=256 --verify_fatal=1 --time_based --runtime=25 \
    >"$R/steps/fio-live.log" 2>&1 &
FIO_PID=$!
sleep 3

add_ns() {
    trpc bdev_malloc_create name=Malloc1 num_blocks=32768 block_size=512 &&
        trpc nvmf_subsystem_add_ns nqn="$NQN" namespace.bdev_name=Malloc1 namespace.nsid=2 &&
        wait_for 20 has_nsid 2 &&
        echo "NSIDs now: $(subsystem_nsids)" && still_live
}
step "add a namespace under I/O: the host sees NSID 2, no reconnect" add_ns
remove_ns() {
    trpc nvmf_subsystem_remove_ns nqn="$NQN" nsid=2 &&
        wait_for 20 lacks_nsid 2 &&
        echo "NSIDs now: $(subsystem_nsids)" && still_live &&
        trpc bdev_malloc_delete name=Malloc1
}
step "remove it: NSID 2 goes, the controller stays" remove_ns
fio_ok() {
    wait "$FIO_PID"
    local rc=$?
    FIO_PID=''
    cat "$R/steps/fio-live.log"
    return "$rc"
}
step "fio verify through both changes: no error" fio_ok

add_listener() {
    trpc nvmf_subsystem_add_listener nqn="$NQN" listen_address.trtype=tcp \
        listen_address.traddr="$NVMF_VM_ADDR" listen_address.trsvcid="$PORT2" &&
        nvme discover -t tcp -a "$NVMF_VM_ADDR" -s "$PORT2" --hostnqn="$HOST" | tee "$R/steps/discover2.log" |
        grep -qE "trsvcid: +$PORT2"
}
# Discovery lists the subsystems reachable through the port it is asked on (as nvmet).
step "add a second listener: discovery through it lists the subsystem there" add_listener

remove_host() {
    trpc nvmf_subsystem_remove_host nqn="$NQN" host="$HOST" &&
        wait_for 20 not_live && echo "controller $ctrl is $(ctrl_state)" &&
        ! nvme connect -t tcp -a "$NVMF_VM_ADDR" -s "$PORT2" -n "$NQN" --hostnqn="$HOST"
}
step "remove the host: it is disconnected and refused" remove_host
allow_again() {
    trpc nvmf_subsystem_add_host nqn="$NQN" host="$HOST" &&
        wait_for 60 still_live && echo "controller $ctrl is live again"
}
step "allow it again: the host reconnects on its own" allow_again

must "save_config" bash -c "'$NVMF_TGT_BIN' rpc -s '$SOCK' save_config >'$SAVED'"
sed 's/^/    saved: /' "$SAVED" | head -n 60

fio_run doomed --rw=randread --bs=4k --iodepth=16 --size=8M --time_based --runtime=60 \
    >"$R/steps/fio-doomed.log" 2>&1 &
FIO_PID=$!
sleep 3
delete_subsystem() {
    trpc nvmf_delete_subsystem nqn="$NQN" &&
        wait_for 20 not_live && echo "controller $ctrl is $(ctrl_state)"
}
step "delete the subsystem under I/O: the host loses the controller" delete_subsystem
nothing_left() {
    target_alive || return 1
    local stats
    stats=$(trpc nvmf_get_stats) || return 1
    echo "$stats" | grep -E 'current_(admin|io)_qpairs'
    ! echo "$stats" | grep -qE '"current_(admin|io)_qpairs": [1-9]' || return 1
    trpc bdev_malloc_delete name=Malloc0 || return 1
    echo "open fds: $fds_idle before the host, $(fds) now"
    (($(fds) <= fds_idle))
}
step "the target runs on: no queue, no fd left, the bdev is free" nothing_left
kill -KILL "$FIO_PID" 2>/dev/null
wait "$FIO_PID" 2>/dev/null
FIO_PID=''

must "stop the target" stop_target
start_target - --json "$SAVED" -r "$SOCK"
must "restarted from the saved config: listening" wait_target_listening
reconnected() { wait_for 90 still_live && echo "controller $ctrl is live again"; }
step "the host reconnects on its own" reconnected
_find_ctrl_ns "$NQN"
step "verified I/O on the restarted target" fio_run after --rw=randwrite --bs=4k --iodepth=16 \
    --numjobs=2 --size=8M --offset_increment=8M --verify=crc32c --do_verify=1 --verify_fatal=1
step "nvme disconnect" disconnect "$NQN"
step "nvmf-tgt exits 0 on SIGTERM" stop_target
finish
