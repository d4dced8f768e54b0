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

cleanup() {
    nvme disconnect -n "$NQN" || true
    nvmet_teardown "$NQN" || true
}

result kernel "$(uname -r)"
must "null_blk namespace (${NULLB_MB} MiB, memory backed)" nvmet_nullb "$NULLB_MB"
must "nvmet subsystem $NQN" nvmet_subsystem "$NQN" "$SERIAL" "$MODEL"
must "nvmet rdma port $NVMF_VM_ADDR:$TRSVCID" nvmet_port "$NQN" "$TRSVCID"
step "RDMA CM listener on port $TRSVCID" listener_check "$TRSVCID"
initiator_suite "$NQN" "$SERIAL" "$MODEL" $((NULLB_MB * 1024 * 1024))
step "configfs teardown" nvmet_teardown "$NQN"
finish
