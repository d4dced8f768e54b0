#!/bin/bash
# rdma-srq: rdma-basic's whole suite with the target's shared receive queues
# on ([transport] srq = true): every queue takes its receives from one SRQ
# per device, found again by qp_num, and in-capsule writes hold their SRQ
# receive until the data is written. The body is rdma-basic.sh's.
# Read by rdma-basic.sh, which this file sources:
# shellcheck disable=SC2034
TRANSPORT_EXTRA='srq = true
srq_depth = 512'
NQN_SUFFIX=-srq
EXPECT_LOG='shared receive queue of 512 receives'
# shellcheck source=tests/vm/scenarios/rdma-basic.sh
source "$(dirname "${BASH_SOURCE[0]}")/rdma-basic.sh"
