#!/bin/bash
# vfio: the emulated NVMe controller (QEMU's nvme behind the vIOMMU) driven by
# our userspace VFIO driver and served over RDMA.
#
# Today: proves the wiring the scenario will need -- the controller's BDF, its
# IOMMU group (alone in it) -- and `nvmf-tgt setup`: status, hugepages, bind
# to vfio-pci, reset to the kernel's nvme driver (whose block device then
# appears). Then SKIPs ("not built yet") unless `nvmf-tgt capabilities` prints
# `bdev nvme`.
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

setup_hugepages() {
    "$NVMF_TGT_BIN" setup hugepages 32 || return 1
    local n
    n=$(</sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages)
    echo "nr_hugepages: $n"
    ((n == 32))
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

step "IOMMU (DMAR) enabled" iommu_enabled
must "emulated NVMe controller" controller_found
result nvme_bdf "$BDF"
result iommu_group "${GROUP:-none}"
step "controller alone in its IOMMU group" alone_in_group
if [[ -n ${NVMF_TGT_BIN:-} && -x $NVMF_TGT_BIN ]]; then
    step "nvmf-tgt setup status shows the controller" setup_status
    step "nvmf-tgt setup hugepages 32" setup_hugepages
    step "nvmf-tgt setup bind $BDF: on vfio-pci" setup_bind
    step "nvmf-tgt setup status shows it on vfio-pci" setup_status
    step "nvmf-tgt setup reset $BDF: the kernel's nvme driver has it again" setup_reset
    step "nvmf-tgt setup bind $BDF again (for the target)" setup_bind
fi
step "no DMAR faults" no_dmar_faults
((N_FAIL == 0)) || finish

require_capability "bdev nvme"
# TODO(vfio): once nvmf-tgt has `bdev nvme`, write the body here:
#   step "nvmf-tgt setup bind $BDF" "$NVMF_TGT_BIN" setup bind "$BDF"
#   a config with [[bdev]] kind="nvme" on $BDF (see rdma-basic.sh for the rest),
#   start_target, wait_target_listening, initiator_suite, stop_target,
#   and no_dmar_faults at the end (QEMU's NVMe model reports success even
#   for a DMA the vIOMMU blocked).
fail "vfio scenario" "nvmf-tgt has 'bdev nvme' but this scenario's body is not written yet (tests/vm/scenarios/vfio.sh)"
finish
