#!/bin/bash
# vfio: the emulated NVMe controller (QEMU's nvme behind the vIOMMU) driven by
# our userspace VFIO driver and served over RDMA.
#
# Checks the wiring -- the controller's BDF, its IOMMU group (alone in it) --
# and `nvmf-tgt setup`: status, hugepages, bind to vfio-pci, reset to the
# kernel's nvme driver (whose block device then appears). Benchmarks our
# driver (`nvmf-tgt nvme-perf`) against fio on the kernel's. Then the target
# serves the controller's namespace (kind = "nvme") over RDMA: the host's
# initiator suite with fio verify; data written through the target read back
# by the kernel's driver after `setup reset`; the controller attached and
# detached over RPC (bdev_nvme_attach_controller) by a target started with
# --wait-for-rpc, and served; SIGKILL in the middle of host
# writes, then `setup reset` leaves a usable device; no DMAR faults.
# Functions below run through step/must: SC2317 cannot see that.
# shellcheck disable=SC2317
# shellcheck source=tests/vm/guest/lib.sh
source "$NVMF_VM_LIB"

BDF=${NVMF_VM_NVME_BDF:-}
GROUP=${NVMF_VM_NVME_IOMMU_GROUP:-}
DEV=/sys/bus/pci/devices/$BDF

iommu_enabled() {
    ls /sys/class/iommu/
    [[ -e /sys/class/iommu/dmar0 ]] && dmesg | grep 'DMAR: IOMMU enabled'
}

controller_found() {
    [[ -n $BDF && -e $DEV ]] || { echo "no PCI device of class 010802 (NVMe)"; return 1; }
    local drv=none
    [[ -e $DEV/driver ]] && drv=$(basename "$(readlink "$DEV/driver")")
    lspci -nn -s "$BDF"
    echo "driver: $drv"
}

alone_in_group() {
    local members
    [[ -n $GROUP ]] || { echo "no IOMMU group for $BDF"; return 1; }
    members=$(ls "/sys/kernel/iommu_groups/$GROUP/devices")
    echo "group $GROUP: $members"
    [[ $members == "$BDF" ]]
}

driver_of() { basename "$(readlink "$DEV/driver" 2>/dev/null || echo none)"; }

# setup status lists the controller with its driver and IOMMU group.
setup_status() {
    local out
    out=$("$NVMF_TGT_BIN" setup status) || return 1
    printf '%s\n' "$out"
    grep -E "^$BDF +[^ ]+ +$(driver_of) +[0-9a-f]{4}:[0-9a-f]{4} +$GROUP " <<<"$out" ||
        { echo "status does not show $BDF on $(driver_of) in group $GROUP"; return 1; }
}

# 96 pages of 2 MiB: the target's RDMA data buffers (128 MiB at the defaults)
# and its NVMe queue pairs (one 2 MiB page each at the default max_io_size).
setup_hugepages() {
    "$NVMF_TGT_BIN" setup hugepages 96 || return 1
    local n
    n=$(</sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages)
    echo "nr_hugepages: $n"
    ((n == 96))
}

setup_bind() {
    "$NVMF_TGT_BIN" setup bind "$BDF" || return 1
    [[ $(driver_of) == vfio-pci ]] || { echo "driver is $(driver_of)"; return 1; }
    ls -l "/dev/vfio/$GROUP"
}

# Back to the kernel: its nvme driver probes the controller and the
# namespace's block device appears.
setup_reset() {
    "$NVMF_TGT_BIN" setup reset "$BDF" || return 1
    [[ $(driver_of) == nvme ]] || { echo "driver is $(driver_of)"; return 1; }
    local ns=("$DEV"/nvme/nvme*/nvme*n[0-9]*)
    [[ -e ${ns[0]} ]] || { echo "no namespace block device under $DEV/nvme"; return 1; }
    printf 'block device: %s\n' "${ns[@]##*/}"
}

# The local benchmark: 4 KiB random reads at QD 32 for BENCH_TIME_S, fio on
# the kernel's nvme driver against `nvmf-tgt nvme-perf` on our driver,
# alternating BENCH_ROUNDS rounds on the same emulated controller.
BENCH_TIME_S=${BENCH_TIME_S:-10}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}

# The kernel's block device of the controller (bound to nvme), e.g. nvme0n1.
pcie_disk() { basename "$(compgen -G "$DEV/nvme/nvme*/nvme*n[0-9]*" | head -n 1)"; }

kernel_bench() {
    local round=$1 disk
    disk=$(pcie_disk)
    [[ -b /dev/$disk ]] || { echo "no block device for $BDF"; return 1; }
    NVME_BYTES=$(blockdev --getsize64 "/dev/$disk") || return 1
    NS=$disk fio_run "nvme-kernel-$round" --rw=randread --bs=4k --iodepth=32 --numjobs=1 \
        --time_based --runtime="$BENCH_TIME_S" --ramp_time=1 || return 1
    python3 - "$R/fio-nvme-kernel-$round.json" >"$R/bench-kernel-$round.txt" <<'PY'
import json, sys
t = open(sys.argv[1]).read()
s = json.loads(t[t.find("{"):])["jobs"][0]["read"]
p = s["clat_ns"]["percentile"]
print("iops=%.0f clat_p50_us=%.0f clat_p99_us=%.0f" % (s["iops"], p["50.000000"] / 1000, p["99.000000"] / 1000))
PY
    cat "$R/bench-kernel-$round.txt"
}

ours_bench() {
    local round=$1
    "$NVMF_TGT_BIN" nvme-perf "$BDF" --queue-depth 32 --io-size 4096 --time-s "$BENCH_TIME_S" \
        | tee "$R/nvme-perf-$round.txt" || return 1
    grep '^RESULT ' "$R/nvme-perf-$round.txt" | sed 's/^RESULT //' | tr ' ' '\n' | grep -v '^errors=' \
        | paste -sd ' ' >"$R/bench-ours-$round.txt"
    grep -q ' errors=0$' "$R/nvme-perf-$round.txt"
}

bench_summary() {
    python3 - "$R" "$BENCH_ROUNDS" <<'PY' | tee "$R/bench-summary.txt"
import statistics, sys
root, rounds = sys.argv[1], int(sys.argv[2])
med = {}
for who in ("kernel", "ours"):
    runs = []
    for r in range(1, rounds + 1):
        kv = dict(x.split("=") for x in open("%s/bench-%s-%d.txt" % (root, who, r)).read().split())
        runs.append([float(kv[k]) for k in ("iops", "clat_p50_us", "clat_p99_us")])
        print("%-6s round %d: %7.0f IOPS, clat p50 %5.0f us, p99 %5.0f us" % ((who, r) + tuple(runs[-1])))
    med[who] = [statistics.median(x) for x in zip(*runs)]
for who in ("kernel", "ours"):
    for k, v in zip(("iops", "clat_p50_us", "clat_p99_us"), med[who]):
        print("nvme_%s_%s_median=%.0f" % (who, k, v))
ratio = med["ours"][0] / med["kernel"][0]
print("nvme_iops_ratio_ours_to_kernel=%.2f" % ratio)
print("nvme_goal_ours_ge_2x_kernel=%s" % ("met" if ratio >= 2.0 else "missed"))
PY
    ((PIPESTATUS[0] == 0))
}

step "IOMMU (DMAR) enabled" iommu_enabled
must "emulated NVMe controller" controller_found
result nvme_bdf "$BDF"
result iommu_group "${GROUP:-none}"
step "controller alone in its IOMMU group" alone_in_group
if [[ -n ${NVMF_TGT_BIN:-} && -x $NVMF_TGT_BIN ]]; then
    step "nvmf-tgt setup status shows the controller" setup_status
    step "nvmf-tgt setup hugepages 96" setup_hugepages
    step "nvmf-tgt setup bind $BDF: on vfio-pci" setup_bind
    step "nvmf-tgt setup status shows it on vfio-pci" setup_status
    step "nvmf-tgt setup reset $BDF: the kernel's nvme driver has it again" setup_reset
    for ((round = 1; round <= BENCH_ROUNDS; round++)); do
        step "bench round $round: fio randread 4k qd32 on the kernel's nvme driver" kernel_bench "$round"
        step "bench round $round: nvmf-tgt setup bind $BDF" setup_bind
        step "bench round $round: nvmf-tgt nvme-perf randread 4k qd32 on our driver" ours_bench "$round"
        ((round < BENCH_ROUNDS)) && step "bench round $round: nvmf-tgt setup reset $BDF" setup_reset
    done
    if step "benchmark summary" bench_summary; then
        grep -E '^[a-z0-9_]+=' "$R/bench-summary.txt" | while IFS='=' read -r k v; do result "$k" "$v"; done
    fi
fi
step "no DMAR faults" no_dmar_faults
((N_FAIL == 0)) || finish

require_capability "bdev nvme"

# ---- the target serving the controller over RDMA ----
NQN=nqn.2024-01.io.nvmf-tgt:vfio
SERIAL=NVMFTGTVFIO00001
MODEL="nvmf-tgt nvme"
CONF=$R/nvmf-tgt.toml
PATTERN=$R/pattern.bin
PATTERN_SEEK_MIB=512 # past fio's verify regions
PATTERN_MIB=8

nvme_subsystem_config "$NQN" "$SERIAL" "$BDF" "$MODEL" >"$CONF"
sed 's/^/    config: /' "$CONF"

FIO_PID=''
cleanup() {
    nvme disconnect -n "$NQN" || true
    [[ -n $TGT_PID ]] && kill -KILL "$TGT_PID"
    [[ -n $FIO_PID ]] && kill -KILL "$FIO_PID"
}

# A second target asking for the controller the first one drives is refused,
# with the reason and the fix, and leaves the first undisturbed.
second_target_refused() {
    local out rc
    out=$(timeout 30 "$NVMF_TGT_BIN" -m 0x2 -c "$CONF" 2>&1)
    rc=$?
    printf '%s\n' "$out" | tail -n 3
    ((rc != 0 && rc != 124)) || { echo "exit status $rc: not refused"; return 1; }
    grep -q "already uses IOMMU group" <<<"$out"
}

on_hugepages() {
    grep -E "RDMA data buffers: .* on 2 MiB hugepages" "$R/target.log" &&
        grep -E "$BDF I/O queue 1: .* on 2 MiB hugepages" "$R/target.log"
}

# Through the target: random data at PATTERN_SEEK_MIB, written O_DIRECT.
write_pattern() {
    head -c $((PATTERN_MIB << 20)) /dev/urandom >"$PATTERN" || return 1
    dd if="$PATTERN" of="/dev/$NS" bs=1M seek="$PATTERN_SEEK_MIB" oflag=direct conv=fsync status=none ||
        return 1
    sha256sum "$PATTERN"
}

# Through the kernel's nvme driver, once the target has let the controller go.
read_back_pattern() {
    local want got
    want=$(sha256sum <"$PATTERN" | cut -d' ' -f1)
    got=$(dd if="/dev/$(pcie_disk)" bs=1M skip="$PATTERN_SEEK_MIB" count="$PATTERN_MIB" \
        iflag=direct status=none | sha256sum | cut -d' ' -f1)
    echo "written through the target: $want"
    echo "read by the kernel driver:  $got"
    [[ $want == "$got" ]]
}

# Random writes from the host while the target gets SIGKILL.
kill_mid_io() {
    fio --name=kill-mid-io --filename="/dev/$NS" --ioengine=libaio --direct=1 --rw=randwrite \
        --bs=4k --iodepth=32 --size=64M --time_based --runtime=60 >"$R/fio-kill-mid-io.log" 2>&1 &
    FIO_PID=$!
    sleep 5
    kill -0 "$FIO_PID" 2>/dev/null || { echo "fio stopped early:"; cat "$R/fio-kill-mid-io.log"; return 1; }
    kill -KILL "$TGT_PID" || return 1
    wait "$TGT_PID" 2>/dev/null
    TGT_PID=''
    echo "target killed while fio was writing"
    nvme disconnect -n "$NQN" || true
    kill -KILL "$FIO_PID" 2>/dev/null
    wait "$FIO_PID" 2>/dev/null
    FIO_PID=''
}

# The kernel's driver has the controller back, and writes and verifies data on it.
device_usable() {
    local disk
    disk=$(pcie_disk)
    [[ -b /dev/$disk ]] || { echo "no block device for $BDF"; return 1; }
    NS=$disk fio_run after-kill --rw=randwrite --bs=4k --iodepth=16 --size=8M \
        --offset=$((PATTERN_SEEK_MIB + PATTERN_MIB))M --verify=crc32c --do_verify=1 --verify_fatal=1
}

[[ $(driver_of) == vfio-pci ]] || must "nvmf-tgt setup bind $BDF" setup_bind
start_target "$CONF"
must "nvmf-tgt listening on $NVMF_VM_ADDR:$TRSVCID" wait_target_listening
step "target log names the controller and its namespace" \
    grep -E "NVMe controller $BDF: .*namespace\(s\) 1," "$R/target.log"
initiator_suite "$NQN" "$SERIAL" "$MODEL" "$NVME_BYTES"
step "data buffers and the NVMe queue pair on hugepages" on_hugepages
step "a second target cannot take the controller in use" second_target_refused
step "the first target is undisturbed" target_alive
must "nvme connect (pattern)" connect "$NQN"
step "write $PATTERN_MIB MiB of random data through the target" write_pattern
step "nvme disconnect (pattern)" disconnect "$NQN"
step "nvmf-tgt exits 0 within 10 s of SIGTERM" stop_target
step "target log: controller shut down" grep -F "$BDF: controller shut down" "$R/target.log"
must "nvmf-tgt setup reset $BDF" setup_reset
step "the kernel's nvme driver reads back the data written through the target" read_back_pattern

# ---- the controller attached while the target runs, over RPC ----
SOCK=/var/tmp/nvmf-vfio.sock # $R is a 9p share, which cannot hold a socket
trpc() { "$NVMF_TGT_BIN" rpc -s "$SOCK" "$@"; }
rpc_attach() {
    local out
    out=$(trpc bdev_nvme_attach_controller name=Nvme1 trtype=PCIe traddr="$BDF") || return 1
    echo "$out"
    grep -q '"Nvme1n1"' <<<"$out"
}
rpc_export() {
    trpc nvmf_create_subsystem nqn="$NQN" serial_number="$SERIAL" model_number="$MODEL" \
        allow_any_host=true &&
        trpc nvmf_subsystem_add_ns nqn="$NQN" namespace.bdev_name=Nvme1n1 &&
        trpc nvmf_subsystem_add_listener nqn="$NQN" listen_address.trtype=rdma \
            listen_address.traddr="$NVMF_VM_ADDR" listen_address.trsvcid="$TRSVCID"
}
detach_refused() {
    local out
    out=$(trpc bdev_nvme_detach_controller name=Nvme1 2>&1) && { echo "not refused: $out"; return 1; }
    echo "$out"
    grep -q "$NQN" <<<"$out"
}
rpc_detach() {
    trpc nvmf_subsystem_remove_ns nqn="$NQN" nsid=1 &&
        trpc bdev_nvme_detach_controller name=Nvme1 &&
        wait_for 10 grep -qF "$BDF: controller shut down" "$R/target.log"
}
must "nvmf-tgt setup bind $BDF (RPC attach)" setup_bind
: >"$R/target.log"
start_target - --wait-for-rpc -r "$SOCK"
must "the RPC socket of a target started with --wait-for-rpc" wait_for 30 test -S "$SOCK"
must "framework_start_init, nvmf_create_transport RDMA" \
    bash -c "'$NVMF_TGT_BIN' rpc -s '$SOCK' framework_start_init && '$NVMF_TGT_BIN' rpc -s '$SOCK' nvmf_create_transport trtype=RDMA"
must "bdev_nvme_attach_controller: the namespace is bdev Nvme1n1" rpc_attach
must "export it: subsystem, namespace, RDMA listener" rpc_export
must "nvme connect (RPC-attached controller)" connect "$NQN"
step "verified I/O through the RPC-attached controller" fio_run rpc-attached --rw=randwrite \
    --bs=4k --iodepth=16 --size=8M --verify=crc32c --do_verify=1 --verify_fatal=1
step "nvme disconnect (RPC-attached controller)" disconnect "$NQN"
step "detaching a controller a namespace exports is refused, naming the subsystem" detach_refused
step "remove the namespace, detach: the controller shuts down" rpc_detach
step "nvmf-tgt exits 0 within 10 s of SIGTERM (RPC-attached)" stop_target
must "nvmf-tgt setup reset $BDF (RPC attach)" setup_reset

must "nvmf-tgt setup bind $BDF (kill test)" setup_bind
start_target "$CONF"
must "nvmf-tgt listening (kill test)" wait_target_listening
must "nvme connect (kill test)" connect "$NQN"
step "SIGKILL the target in the middle of host writes" kill_mid_io
must "nvmf-tgt setup reset $BDF after the kill" setup_reset
step "the device is usable after the kill (kernel driver, fio verify)" device_usable
step "no DMAR faults after the target's I/O" no_dmar_faults
finish
