# Shared by tests/vm/run and tests/vm/shell (sourced, not executed).
# shellcheck shell=bash
# Variables set here are used by the scripts that source this file.
# shellcheck disable=SC2034,SC2054

VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$VM_DIR/../.." && pwd)
VM_CACHE=${NVMF_VM_CACHE:-/var/cache/nvmf-tgt-vm}
VM_RESULTS=${NVMF_VM_RESULTS:-$REPO_ROOT/target/vm-results}
VM_NVME_SERIAL=${NVMF_VM_NVME_SERIAL:-NVMFVM0001}

vm_log() { printf '[vm] %s\n' "$*" >&2; }
vm_die() {
    printf '[vm] ERROR: %s\n' "$*" >&2
    exit 2
}

# The target binary to pass in: $NVMF_TGT_BIN, else target/release/nvmf-tgt if
# it exists. Prints nothing when there is none (scenarios then SKIP).
vm_target_bin() {
    if [[ -n ${NVMF_TGT_BIN:-} ]]; then
        [[ -f $NVMF_TGT_BIN ]] || vm_die "NVMF_TGT_BIN=$NVMF_TGT_BIN does not exist"
        printf '%s\n' "$NVMF_TGT_BIN"
    elif [[ -f $REPO_ROOT/target/release/nvmf-tgt ]]; then
        printf '%s\n' "$REPO_ROOT/target/release/nvmf-tgt"
    fi
}

# vm_stage_in DIR SCENARIO TIMEOUT_S: fill the read-only share seen as /mnt/in.
vm_stage_in() {
    local dir=$1 scenario=$2 timeout_s=$3 bin
    mkdir -p "$dir/scenarios" "$dir/bin"
    cp "$VM_DIR"/scenarios/*.sh "$dir/scenarios/"
    cp "$VM_DIR/guest/lib.sh" "$dir/lib.sh"
    bin=$(vm_target_bin)
    if [[ -n $bin ]]; then
        cp "$bin" "$dir/bin/nvmf-tgt"
        chmod 0755 "$dir/bin/nvmf-tgt"
    fi
    # Extra tools for a session by hand (a profiler, say), seen as /mnt/in/extra.
    if [[ -n ${NVMF_VM_EXTRA_IN:-} ]]; then
        cp -r "$NVMF_VM_EXTRA_IN" "$dir/extra"
    fi
    cat >"$dir/run.env" <<EOF
SCENARIO=$scenario
SCENARIO_TIMEOUT=$timeout_s
NVME_SERIAL=$VM_NVME_SERIAL
EOF
}

# Serialise guests: 2 cores are shared by everyone, never run two at once.
vm_lock() {
    mkdir -p "$VM_CACHE"
    exec 8>"$VM_CACHE/.qemu.lock"
    if ! flock -n 8; then
        vm_log "another test-bed guest is running; waiting for it"
        flock 8
    fi
}

# vm_qemu_args IMAGE_DIR IN_DIR OUT_DIR NVME_IMG MODE [KERNEL_ARGS...]
# Sets the array QEMU_ARGS (serial console not included). VM_NVME_DRIVE_OPTS
# (e.g. "throttling.iops-total=10") is appended to the NVMe drive's options.
vm_qemu_args() {
    local img=$1 in=$2 out=$3 nvme=$4 mode=$5
    shift 5
    local kernel=$img/vmlinux
    # The bzImage works too, ~6 s slower (xz decompression under TCG).
    [[ ${NVMF_VM_BZIMAGE:-0} == 1 ]] && kernel=$img/vmlinuz
    QEMU_ARGS=(
        -name nvmf-vm
        -accel tcg,thread=multi -cpu max
        -smp "${NVMF_VM_SMP:-2}" -m "${NVMF_VM_MEM_MB:-2048}"
        -machine q35,kernel-irqchip=split
        -device intel-iommu,intremap=on,caching-mode=on,aw-bits=48
        -nodefaults -display none -no-reboot
        -nic none
        -kernel "$kernel" -initrd "$img/initrd.cpio"
        -append "console=ttyS0 intel_iommu=on panic=-1 quiet mitigations=off nvmf_vm.mode=$mode ${NVMF_VM_KERNEL_ARGS:-} $*"
        -drive "file=$img/root.img,if=virtio,format=raw,snapshot=on"
        -drive "file=$nvme,if=none,id=nvm,format=raw${VM_NVME_DRIVE_OPTS:+,$VM_NVME_DRIVE_OPTS}"
        -device "nvme,serial=$VM_NVME_SERIAL,drive=nvm,mdts=8" # 1 MiB transfers (QEMU: 512 KiB)
        -fsdev "local,id=fsin,path=$in,security_model=none,readonly=on"
        -device virtio-9p-pci,fsdev=fsin,mount_tag=nvmf_in
        -fsdev "local,id=fsout,path=$out,security_model=none"
        -device virtio-9p-pci,fsdev=fsout,mount_tag=nvmf_out
    )
}
