#!/bin/bash
# kernel-target: the Linux kernel's own NVMe-oF target (nvmet + nvmet-rdma),
# configured through configfs, serving a memory-backed null_blk namespace on
# the Soft-RoCE device; the Linux host (nvme-cli + nvme-rdma) and fio exercise
# it. Proves the test bed itself works, and is the reference peer the
# rdma-basic scenario (our target) is compared against.
# Functions below run through step/must: SC2317 cannot see that.
# shellcheck disable=SC2317
# shellcheck source=tests/vm/guest/lib.sh
source "$NVMF_VM_LIB"

NQN=nqn.2024-01.io.nvmf-tgt:kernel-target
SERIAL=KTGT00000001
MODEL="Linux nvmet null_blk"
NULLB_MB=256 # memory_backed: this much guest RAM once fully written
NVMET=/sys/kernel/config/nvmet
NULLB=/sys/kernel/config/nullb/nullb0
PORT=$NVMET/ports/1
SUBSYS=$NVMET/subsystems/$NQN

make_nullb() {
    mkdir "$NULLB" &&
        echo 512 >"$NULLB/blocksize" &&
        echo "$NULLB_MB" >"$NULLB/size" &&
        echo 1 >"$NULLB/memory_backed" &&
        echo 2 >"$NULLB/submit_queues" &&
        echo 1 >"$NULLB/power" &&
        wait_for 5 test -b /dev/nullb0 &&
        echo "/dev/nullb0: $(blockdev --getsize64 /dev/nullb0) bytes"
}

make_subsystem() {
    mkdir "$SUBSYS" &&
        echo 1 >"$SUBSYS/attr_allow_any_host" &&
        echo "$SERIAL" >"$SUBSYS/attr_serial" &&
        echo "$MODEL" >"$SUBSYS/attr_model" &&
        mkdir "$SUBSYS/namespaces/1" &&
        echo /dev/nullb0 >"$SUBSYS/namespaces/1/device_path" &&
        echo 1 >"$SUBSYS/namespaces/1/enable"
}

make_port() {
    mkdir "$PORT" &&
        echo rdma >"$PORT/addr_trtype" &&
        echo ipv4 >"$PORT/addr_adrfam" &&
        echo "$NVMF_VM_ADDR" >"$PORT/addr_traddr" &&
        echo "$TRSVCID" >"$PORT/addr_trsvcid" &&
        ln -s "$SUBSYS" "$PORT/subsystems/$NQN" &&
        dmesg | grep nvmet | tail -n 3 &&
        dmesg | grep "nvmet_rdma: enabling port" >/dev/null
}

teardown_configfs() {
    local ok=0
    rm -f "$PORT/subsystems/$NQN" || ok=1
    if [[ -d $PORT ]]; then rmdir "$PORT" || ok=1; fi
    if [[ -d $SUBSYS/namespaces/1 ]]; then
        echo 0 >"$SUBSYS/namespaces/1/enable" || ok=1
        rmdir "$SUBSYS/namespaces/1" || ok=1
    fi
    if [[ -d $SUBSYS ]]; then rmdir "$SUBSYS" || ok=1; fi
    if [[ -d $NULLB ]]; then
        echo 0 >"$NULLB/power" || ok=1
        rmdir "$NULLB" || ok=1
    fi
    local left
    left=$(find "$NVMET/ports" "$NVMET/subsystems" /sys/kernel/config/nullb \
        -mindepth 1 -maxdepth 1 ! -name features)
    [[ -z $left ]] || { echo "left in configfs: $left"; ok=1; }
    [[ -b /dev/nullb0 ]] && { echo "/dev/nullb0 still exists"; ok=1; }
    ((ok == 0))
}

cleanup() {
    nvme disconnect -n "$NQN" || true
    teardown_configfs || true
}

result kernel "$(uname -r)"
must "null_blk namespace (${NULLB_MB} MiB, memory backed)" make_nullb
must "nvmet subsystem $NQN" make_subsystem
must "nvmet rdma port $NVMF_VM_ADDR:$TRSVCID" make_port
step "RDMA CM listener on port $TRSVCID" listener_check "$TRSVCID"
initiator_suite "$NQN" "$SERIAL" "$MODEL" $((NULLB_MB * 1024 * 1024))
step "configfs teardown" teardown_configfs
finish
