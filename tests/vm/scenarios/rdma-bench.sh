#!/bin/bash
# rdma-bench: the same fio job (4 KiB random read, QD 32, 2 jobs, one per vCPU,
# BENCH_RUNTIME_S = 20 s) against the kernel's nvmet-rdma (null_blk, memory
# backed) and against our target (malloc), alternating, BENCH_ROUNDS (3)
# rounds each, in this one guest run. Ours runs twice per round:
#   ours       the default configuration (interrupt mode) on both vCPUs
#              (-m 0x3), as the kernel target uses both;
#   ours_spin  interrupt_mode = false on one vCPU (-m 0x1): SPDK's shape, a
#              reactor spinning on a core of its own; here the core is shared
#              with fio and the host, which the bed cannot avoid.
# Prints every run (IOPS, latency, the guest's CPU split), the medians and
# the ratios to the kernel. Only one target runs at a time.
# A/B against another build: stage it as nvmf-tgt-prev in NVMF_VM_EXTRA_IN
# (/mnt/in/extra in the guest); it then runs as "prev" in every round, with
# the configuration of "ours", and the summary adds ours' ratio to it.
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
CONF_SPIN=$R/nvmf-tgt-spin.toml

require_capability "transport $TRTYPE"

# 256 MiB, as the kernel's null_blk
TRSVCID=$OURS_PORT malloc_subsystem_config "$OURS_NQN" NVMFTGTBENCH001 524288 >"$CONF"
{
    printf '[global]\ninterrupt_mode = false\n\n'
    cat "$CONF"
} >"$CONF_SPIN"

cleanup() {
    nvme disconnect-all || true
    [[ -n $TGT_PID ]] && kill -KILL "$TGT_PID"
    nvmet_teardown "$KERNEL_NQN" || true
}

# bench_job NAME: the fio job, with the guest's CPU counters (/proc/stat)
# saved before and after it, to see where the CPU time went. Each fio job is
# pinned to a vCPU of its own (and so to one host I/O queue), for every
# target alike: left to the scheduler, both jobs sometimes shared a vCPU,
# which split our rounds into two groups (~2,200-2,700 and ~3,300-4,150
# IOPS); pinned, every round of ours fell in the upper one.
bench_job() {
    head -n 1 /proc/stat >"$R/cpu-$1.txt"
    fio_run "$1" --rw=randread --bs=4k --iodepth=32 --numjobs=2 --size=64M \
        --cpus_allowed=0-1 --cpus_allowed_policy=split \
        --time_based --runtime="$BENCH_RUNTIME_S" --ramp_time=2
    local rc=$?
    head -n 1 /proc/stat >>"$R/cpu-$1.txt"
    return "$rc"
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

# bench_ours WHO ROUND MASK CONF: start our target, run the job, stop it.
bench_ours() {
    local who=$1 round=$2
    TGT_MASK=$3 start_target "$4"
    must "$who round $round: nvmf-tgt -m $3 listening" wait_target_listening
    bench_one "$who" "$round" "$OURS_PORT" "$OURS_NQN"
    step "$who round $round: nvmf-tgt exits 0 on SIGTERM" stop_target
}

PREV_BIN=/mnt/in/extra/nvmf-tgt-prev
TARGETS="kernel ours ours_spin"
[[ -x $PREV_BIN ]] && TARGETS+=" prev"
for ((round = 1; round <= BENCH_ROUNDS; round++)); do
    bench_one kernel "$round" "$KERNEL_PORT" "$KERNEL_NQN"
    bench_ours ours "$round" 0x3 "$CONF"
    bench_ours ours_spin "$round" 0x1 "$CONF_SPIN"
    if [[ -x $PREV_BIN ]]; then
        NVMF_TGT_BIN=$PREV_BIN bench_ours prev "$round" 0x3 "$CONF"
    fi
done
step "kernel: configfs teardown" nvmet_teardown "$KERNEL_NQN"

# Per-run lines, then "key=value" figures (medians, ratio) on the last lines.
summarize() {
    python3 - "$R" "$BENCH_ROUNDS" $TARGETS <<'PY' | tee "$R/bench-summary.txt"
import json, statistics, sys
root, rounds, targets = sys.argv[1], int(sys.argv[2]), tuple(sys.argv[3:])
def cpu(who, r):
    # /proc/stat "cpu" line: user nice system idle iowait irq softirq steal ...
    before, after = [[int(x) for x in l.split()[1:9]]
                     for l in open("%s/cpu-bench-%s-%d.txt" % (root, who, r))]
    d = [a - b for a, b in zip(after, before)]
    total = sum(d) or 1
    user, system, idle, softirq = d[0] + d[1], d[2] + d[5], d[3] + d[4], d[6]
    return [100.0 * x / total for x in (user, system, softirq, idle)]
def run(who, r):
    text = open("%s/fio-bench-%s-%d.json" % (root, who, r)).read()
    s = json.loads(text[text.find("{"):])["jobs"][0]["read"]
    p = s["clat_ns"]["percentile"]
    return ([s["iops"]] + [p[k] / 1000.0 for k in ("50.000000", "99.000000", "99.900000")]
            + cpu(who, r))
med = {}
for who in targets:
    runs = [run(who, r) for r in range(1, rounds + 1)]
    for r, (iops, p50, p99, p999, user, system, softirq, idle) in enumerate(runs, 1):
        print("%-9s round %d: %7.0f IOPS, clat p50 %6.0f us, p99 %6.0f us, p99.9 %6.0f us; "
              "guest CPU: user %2.0f%%, system %2.0f%%, softirq %2.0f%%, idle %2.0f%%"
              % (who, r, iops, p50, p99, p999, user, system, softirq, idle))
    med[who] = [statistics.median(x) for x in zip(*runs)]
keys = ("iops", "clat_p50_us", "clat_p99_us", "clat_p999_us",
        "cpu_user_pct", "cpu_system_pct", "cpu_softirq_pct", "cpu_idle_pct")
for who in targets:
    for key, v in zip(keys, med[who]):
        print("%s_%s_median=%.0f" % (who, key, v))
for who in targets[1:]:
    print("iops_ratio_%s_to_kernel=%.2f" % (who, med[who][0] / med["kernel"][0]))
if "prev" in med:
    # Per round, then the median: the host's drift cancels within a round.
    pairs = [run("ours", r)[0] / run("prev", r)[0] for r in range(1, rounds + 1)]
    print("iops_ratio_ours_to_prev_per_round=%s" % ",".join("%.2f" % x for x in pairs))
    print("iops_ratio_ours_to_prev=%.2f" % statistics.median(pairs))
ratio = med["ours"][0] / med["kernel"][0]
print("goal_ours_ge_kernel=%s" % ("met" if ratio >= 1.0 else "missed"))
PY
    ((PIPESTATUS[0] == 0))
}
if step "benchmark summary" summarize; then
    grep -E '^[a-z0-9_]+=' "$R/bench-summary.txt" | while IFS='=' read -r k v; do result "$k" "$v"; done
fi
finish
