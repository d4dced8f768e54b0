#!/bin/bash
# vfio: the emulated NVMe controller (QEMU's nvme behind the vIOMMU) driven by
# our userspace VFIO driver and served over RDMA.
#
# Today: proves the wiring the scenario will need -- the controller's BDF, its
# IOMMU group (alone in it), vfio-pci binding through sysfs -- then SKIPs
# ("not built yet") unless `nvmf-tgt capabilities` prints `bdev nvme`.
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

# Bind to vfio-pci through sysfs (driver_override), check the group's VFIO
# node, then unbind and clear the override: the device is left as found
# (unbound: no udev means the kernel's nvme driver never claimed it).
vfio_bind_unbind() {
    echo vfio-pci >"$DEV/driver_override" &&
        echo "$BDF" >/sys/bus/pci/drivers_probe &&
        [[ $(basename "$(readlink "$DEV/driver")") == vfio-pci ]] &&
        ls -l "/dev/vfio/$GROUP" &&
        echo "$BDF" >/sys/bus/pci/drivers/vfio-pci/unbind &&
        echo >"$DEV/driver_override" &&
        [[ ! -e $DEV/driver ]] &&
        echo "bound to vfio-pci and unbound again"
}

step "IOMMU (DMAR) enabled" iommu_enabled
must "emulated NVMe controller" controller_found
result nvme_bdf "$BDF"
result iommu_group "${GROUP:-none}"
step "controller alone in its IOMMU group" alone_in_group
step "vfio-pci bind and unbind through sysfs" vfio_bind_unbind
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
