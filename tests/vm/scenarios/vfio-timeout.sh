#!/bin/bash
# vfio-timeout: command timeouts on our VFIO NVMe driver, for real. QEMU
# throttles this scenario's NVMe drive to 10 I/Os per second, so a burst of 32
# host writes waits up to 3.2 s inside the device. With io_timeout_ms = 1000
# the target aborts the commands late by 1 s and, when an aborted one is
# still there 1 s later, resets the controller: the commands it held go back
# to the host for a retry, and every queue is created again: two reactors
# (-m 0x3) each own a queue pair, and the one without the burst must create
# its queue again too. fio's crc32c verify must pass through all of it, and
# the log must show each stage.
# One burst on one host queue, not two: after a reset QEMU's throttle has
# already counted the drained requests, so the retries wait longer; with two
# bursts resets follow each other until the host gives up retrying (EIO).
# vm-nvme-drive-opts: throttling.iops-total=10
# Functions below run through step/must: SC2317 cannot see that.
# shellcheck disable=SC2317
# shellcheck source=tests/vm/guest/lib.sh
source "$NVMF_VM_LIB"

BDF=${NVMF_VM_NVME_BDF:-}
NQN=nqn.2024-01.io.nvmf-tgt:vfio-timeout
SERIAL=NVMFTGTTMO000001
CONF=$R/nvmf-tgt.toml
TGT_MASK=0x3

require_capability "bdev nvme"
[[ -n $BDF ]] || abort "emulated NVMe controller" "no PCI device of class 010802 (NVMe)"

nvme_subsystem_config "$NQN" "$SERIAL" "$BDF" "" "io_timeout_ms = 1000" >"$CONF"
sed 's/^/    config: /' "$CONF"

cleanup() {
    nvme disconnect -n "$NQN" || true
    [[ -n $TGT_PID ]] && kill -KILL "$TGT_PID"
}

# 32 writes of 128 KiB at once (one burst at QD 32), then 32 verifying reads.
burst_verify() {
    fio_run burst-verify --rw=write --bs=128k --size=4M --iodepth=32 --numjobs=1 \
        --verify=crc32c --do_verify=1 --verify_fatal=1
}

# Both reactors' queue pairs were created again after a reset.
both_queues_recreated() {
    local q
    for q in 1 2; do
        grep -m 1 -E "queue $q created again after a controller reset" "$R/target.log" ||
            { echo "queue $q was not created again"; return 1; }
    done
}

log_shows() { grep -m 5 -E "$1" "$R/target.log"; }

must "nvmf-tgt setup bind $BDF" "$NVMF_TGT_BIN" setup bind "$BDF"
start_target "$CONF"
must "nvmf-tgt listening on $NVMF_VM_ADDR:$TRSVCID" wait_target_listening
must "nvme connect" connect "$NQN"
step "fio burst of 32 writes and verifying reads on a drive doing 10 I/O/s" burst_verify
step "target log: late commands aborted" log_shows "got no completion in 1000 ms; aborting them"
step "target log: controller reset after an abort did not help" log_shows "resetting the controller"
step "target log: reset done" log_shows "controller reset done"
step "target log: queue created again, commands handed back for retry" \
    log_shows "created again after a controller reset; [1-9][0-9]* command\(s\) handed back"
step "both reactors' queues created again" both_queues_recreated
result abort_ticks "$(grep -c 'aborting them' "$R/target.log")"
result resets "$(grep -c 'controller reset done' "$R/target.log")"
step "a second burst after the resets" burst_verify
step "nvme disconnect" disconnect "$NQN"
step "nvmf-tgt exits 0 within 10 s of SIGTERM" stop_target
step "no DMAR faults" no_dmar_faults
finish
