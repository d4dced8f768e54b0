#!/bin/bash
# rdma-bench: the same fio job (4 KiB random read, QD 32, 2 jobs,
# BENCH_RUNTIME_S = 20 s) against the kernel's nvmet-rdma (null_blk, memory
# backed) and against our target (malloc), alternating, BENCH_ROUNDS (3)
# rounds each, in this one guest run. Prints every run, the medians and the
# ratio ours/kernel. Only one target runs at a time: our reactor polls, so it
# is stopped while the kernel is measured.
# Functions below run through step/must: SC2317 cannot see that.
# shellcheck disable=SC2317
# shellcheck source=tests/vm/guest/lib.sh
source "$NVMF_VM_LIB"

KERNEL_NQN=nqn.2024-01.io.nvmf-tgt:bench-kernel
OURS_NQN=nqn.2024-01.io.nvmf-tgt:bench-ours
KERNEL_PORT=4421
OURS_PORT=$TRSVCID
BENCH_RUNTIME_S=${BENCH_RUNTIME_S:-20}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
CONF=$R/nvmf-tgt.toml

require_capability "transport rdma"

{
    printf '[global]\nidle_sleep_us = %s\n\n' "${BENCH_IDLE_SLEEP_US:-0}"
    # 256 MiB, as the kernel's null_blk
    TRSVCID=$OURS_PORT malloc_subsystem_config "$OURS_NQN" NVMFTGTBENCH001 524288
} >"$CONF"

cleanup() {
    nvme disconnect-all || true
    [[ -n $TGT_PID ]] && kill -KILL "$TGT_PID"
    nvmet_teardown "$KERNEL_NQN" || true
}

bench_job() {
    fio_run "$1" --rw=randread --bs=4k --iodepth=32 --numjobs=2 --size=64M \
        --time_based --runtime="$BENCH_RUNTIME_S" --ramp_time=2
}

# bench_one WHO ROUND PORT NQN: connect, run the job, disconnect.
bench_one() {
    local who=$1 round=$2 port=$3 nqn=$4
    TRSVCID=$port must "$who round $round: nvme connect" connect "$nqn"
    step "$who round $round: fio randread 4k qd32 2 jobs ${BENCH_RUNTIME_S} s" bench_job "bench-$who-$round"
    step "$who round $round: nvme disconnect" disconnect "$nqn"
}

must "kernel: null_blk 256 MiB" nvmet_nullb 256
must "kernel: nvmet subsystem" nvmet_subsystem "$KERNEL_NQN" KTGTBENCH0001 "Linux nvmet null_blk"
must "kernel: nvmet rdma port $KERNEL_PORT" nvmet_port "$KERNEL_NQN" "$KERNEL_PORT"

for ((round = 1; round <= BENCH_ROUNDS; round++)); do
    bench_one kernel "$round" "$KERNEL_PORT" "$KERNEL_NQN"
    start_target "$CONF"
    must "ours round $round: nvmf-tgt listening" wait_target_listening
    bench_one ours "$round" "$OURS_PORT" "$OURS_NQN"
    step "ours round $round: nvmf-tgt exits 0 on SIGTERM" stop_target
done
step "kernel: configfs teardown" nvmet_teardown "$KERNEL_NQN"

# Per-run lines, then "key=value" figures (medians, ratio) on the last lines.
summarize() {
    python3 - "$R" "$BENCH_ROUNDS" <<'PY' | tee "$R/bench-summary.txt"
import json, statistics, sys
root, rounds = sys.argv[1], int(sys.argv[2])
def run(who, r):
    text = open("%s/fio-bench-%s-%d.json" % (root, who, r)).read()
    s = json.loads(text[text.find("{"):])["jobs"][0]["read"]
    p = s["clat_ns"]["percentile"]
    return [s["iops"]] + [p[k] / 1000.0 for k in ("50.000000", "99.000000", "99.900000")]
med = {}
for who in ("kernel", "ours"):
    runs = [run(who, r) for r in range(1, rounds + 1)]
    for r, (iops, p50, p99, p999) in enumerate(runs, 1):
        print("%-6s round %d: %7.0f IOPS, clat p50 %6.0f us, p99 %6.0f us, p99.9 %6.0f us"
              % (who, r, iops, p50, p99, p999))
    med[who] = [statistics.median(x) for x in zip(*runs)]
for who in ("kernel", "ours"):
    for key, v in zip(("iops", "clat_p50_us", "clat_p99_us", "clat_p999_us"), med[who]):
        print("%s_%s_median=%.0f" % (who, key, v))
ratio = med["ours"][0] / med["kernel"][0]
print("iops_ratio_ours_to_kernel=%.2f" % ratio)
print("goal_ours_ge_kernel=%s" % ("met" if ratio >= 1.0 else "missed"))
PY
    ((PIPESTATUS[0] == 0))
}
if step "benchmark summary" summarize; then
    grep -E '^[a-z0-9_]+=' "$R/bench-summary.txt" | while IFS='=' read -r k v; do result "$k" "$v"; done
fi
finish
