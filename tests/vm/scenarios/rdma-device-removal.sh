#!/bin/bash
# rdma-device-removal: the RDMA device disappears under a connected target
# (`rdma link delete rxe0`, as when a NIC is unplugged or its driver
# unloaded) and comes back. The target must give the device up (the kernel
# cannot finish removing it while a process holds it), stay up, re-listen once
# the address has an RDMA device again, and serve a new connection.
# In this guest the host uses the same rxe0, so its controller goes away with
# the device (nvme-rdma deletes controllers on removal) and it connects anew.
# A second Soft-RoCE device (rxe1 on its own dummy netdev) stays: librdmacm
# lets go of a removed device only when it re-reads a device list that is not
# empty (see NOTES.md), as on a machine with more than one RDMA port.
# Functions below run through step/must: SC2317 cannot see that.
# shellcheck disable=SC2317
# shellcheck source=tests/vm/guest/lib.sh
source "$NVMF_VM_LIB"

NQN=nqn.2024-01.io.nvmf-tgt:device-removal
CONF=$R/nvmf-tgt.toml
REMOVE_MAX_S=${REMOVE_MAX_S:-60}

require_capability "transport rdma"

malloc_subsystem_config "$NQN" NVMFTGTDEVR0001 131072 >"$CONF"

cleanup() {
    nvme disconnect-all || true
    [[ -n $TGT_PID ]] && kill -KILL "$TGT_PID"
    rdma link show "$NVMF_VM_RXE/1" >/dev/null 2>&1 ||
        rdma link add "$NVMF_VM_RXE" type rxe netdev "$NVMF_VM_NETDEV"
}

verify_io() {
    fio_run "$1" --rw=randwrite --bs=4k --iodepth=32 --numjobs=2 --size=8M \
        --offset_increment=8M --verify=crc32c --do_verify=1 --verify_fatal=1
}

second_device() {
    ip link add nvmf1 type dummy && ip link set nvmf1 up &&
        rdma link add rxe1 type rxe netdev nvmf1 && rdma link show
}
must "a second RDMA device (rxe1 on nvmf1)" second_device

start_target "$CONF"
must "nvmf-tgt listening" wait_target_listening
must "nvme connect" connect "$NQN"
step "fio verify before the removal" verify_io before-removal
note "target holds: $(tgt_resources)"

# `rdma link delete` sleeps uninterruptibly while anyone holds the device, so
# it runs in the background and a hang is diagnosed, not waited out.
remove_device() {
    local pid i
    rdma link delete "$NVMF_VM_RXE" &
    pid=$!
    for ((i = 0; i < REMOVE_MAX_S * 5; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" || return 1
            echo "removed in $((i / 5)) s"
            rdma link show
            return 0
        fi
        sleep 0.2
    done
    echo "rdma link delete did not finish in $REMOVE_MAX_S s: someone still holds $NVMF_VM_RXE"
    echo "--- kernel stack of rdma link delete:"
    cat "/proc/$pid/stack"
    echo "--- the target's RDMA files:"
    local fd
    for fd in /proc/"$TGT_PID"/fd/*; do
        [[ $(readlink "$fd") == /dev/infiniband/* ]] && echo "$fd -> $(readlink "$fd")"
    done
    echo "--- rdma resources:"
    rdma resource show
    rdma resource show cm_id
    return 1
}
must "rdma link delete $NVMF_VM_RXE completes (the target lets the device go)" remove_device
step "the target survives the removal" target_alive
step "the target logged the lost listener" grep "RDMA listener .* lost" "$R/target.log"
note "target holds: $(tgt_resources)"

must "rdma link add $NVMF_VM_RXE" rdma link add "$NVMF_VM_RXE" type rxe netdev "$NVMF_VM_NETDEV"
must "the target listens again" wait_target_listening
step "the target logged the restored listener" grep "RDMA listener .* restored" "$R/target.log"
step "nvme discover after the device came back" discover_check "$NQN"
must "nvme connect after the device came back" connect "$NQN"
step "fio verify after the device came back" verify_io after-removal
step "nvme disconnect" disconnect "$NQN"
step "nvmf-tgt exits 0 on SIGTERM" stop_target
finish
