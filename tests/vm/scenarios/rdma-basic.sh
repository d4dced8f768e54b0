#!/bin/bash
# rdma-basic: our target (nvmf-tgt) serving a malloc bdev over RDMA on the
# Soft-RoCE device, driven by the Linux host exactly as kernel-target drives
# the kernel's nvmet: discover, connect, identify, fio verify + perf,
# disconnect; then SIGTERM must stop the target with status 0 within 10 s.
# SKIPs ("not built yet") unless `nvmf-tgt capabilities` prints `transport rdma`.
#
# Variants (rdma-srq.sh) set these and then `source` this file:
#   TRANSPORT_EXTRA  lines of a [transport] section for the target's config
#   NQN_SUFFIX       appended to the subsystem NQN
#   EXPECT_LOG       extended regex the target's log must match after the session
# Functions below run through step/must: SC2317 cannot see that.
# shellcheck disable=SC2317
# shellcheck source=tests/vm/guest/lib.sh
source "$NVMF_VM_LIB"

TRANSPORT_EXTRA=${TRANSPORT_EXTRA:-}
EXPECT_LOG=${EXPECT_LOG:-}
NQN=nqn.2024-01.io.nvmf-tgt:rdma-basic${NQN_SUFFIX:-}
SERIAL=NVMFTGT00000001
MODEL="nvmf-tgt malloc"
BLOCK_SIZE=512
NUM_BLOCKS=262144 # 128 MiB: >= 2 * VERIFY_SIZE_128K + 4 MiB (see lib.sh)
CONF=$R/nvmf-tgt.toml

require_capability "transport rdma"
result kernel "$(uname -r)"

# ---- target configuration: adjust here when the config format changes ----
TRANSPORT_SECTION=
[[ -n $TRANSPORT_EXTRA ]] && TRANSPORT_SECTION=$'[transport]\n'"$TRANSPORT_EXTRA"$'\n'
cat >"$CONF" <<EOF
$TRANSPORT_SECTION
[[bdev]]
name = "Malloc0"
kind = "malloc"
num_blocks = $NUM_BLOCKS
block_size = $BLOCK_SIZE

[[subsystem]]
nqn = "$NQN"
serial = "$SERIAL"
model = "$MODEL"
allow_any_host = true

[[subsystem.listener]]
trtype = "rdma"
traddr = "$NVMF_VM_ADDR"
trsvcid = "$TRSVCID"

[[subsystem.namespace]]
bdev = "Malloc0"
nsid = 1
EOF
# ---- end of target configuration ----
sed 's/^/    config: /' "$CONF"

cleanup() {
    nvme disconnect -n "$NQN" || true
    [[ -n $TGT_PID ]] && kill -KILL "$TGT_PID"
}

start_target "$CONF"
must "nvmf-tgt listening on $NVMF_VM_ADDR:$TRSVCID" wait_target_listening
initiator_suite "$NQN" "$SERIAL" "$MODEL" $((NUM_BLOCKS * BLOCK_SIZE))
step "nvmf-tgt survived the host's session" target_alive
[[ -n $EXPECT_LOG ]] && step "target log matches /$EXPECT_LOG/" grep -E "$EXPECT_LOG" "$R/target.log"
step "nvmf-tgt exits 0 within 10 s of SIGTERM" stop_target
finish
