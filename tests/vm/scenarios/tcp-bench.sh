#!/bin/bash
# tcp-bench: rdma-bench's body over NVMe/TCP: the same fio job (4 KiB random
# read, QD 32, 2 jobs) against the kernel's nvmet-tcp (null_blk) and against
# our target, alternating rounds in one guest run; prints medians and ratios.
# Read by rdma-bench.sh and lib.sh, which this file sources:
# shellcheck disable=SC2034
TRTYPE=tcp
# shellcheck source=tests/vm/scenarios/rdma-bench.sh
source "$(dirname "${BASH_SOURCE[0]}")/rdma-bench.sh"
