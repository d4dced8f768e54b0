#!/bin/bash
# tcp-reconnect: rdma-reconnect's body over NVMe/TCP: the target is killed
# (SIGKILL) under fio and started again; the Linux host reconnects on its own,
# fio finishes without an I/O error, and verified I/O works afterwards.
# Read by rdma-reconnect.sh and lib.sh, which this file sources:
# shellcheck disable=SC2034
TRTYPE=tcp
# shellcheck source=tests/vm/scenarios/rdma-reconnect.sh
source "$(dirname "${BASH_SOURCE[0]}")/rdma-reconnect.sh"
