# Helpers for test-bed scenarios; runs inside the guest.
# A scenario starts with:   source "$NVMF_VM_LIB"
# shellcheck shell=bash
#
# Conventions (what tests/vm/run reads):
#   PASS: <step>                one line per step that passed
#   FAIL: <step>: <why>         one line per step that failed
#   SKIP: <scenario>: <why>     the scenario did not run; exit status 77
#   RESULT <scenario> <key>=<value>   machine-readable figures
#   SUMMARY <scenario>: passed=N failed=N   last line; exit 0 iff failed=0
#
# Environment from the guest init (/run/nvmf-vm.env): NVMF_VM_ADDR, NVMF_VM_RXE,
# NVMF_VM_NETDEV, NVMF_VM_NVME_BDF, NVMF_VM_NVME_IOMMU_GROUP, NVMF_VM_RESULTS
# (a host directory, through 9p), NVMF_TGT_BIN (empty when not passed in).

set -uo pipefail

SC=${NVMF_VM_SCENARIO:-$(basename "${BASH_SOURCE[1]:-scenario}" .sh)}
R=${NVMF_VM_RESULTS:-/tmp/results}
mkdir -p "$R/steps"
N_PASS=0
N_FAIL=0
T0=$(date +%s.%N)

pass() {
    echo "PASS: $1"
    N_PASS=$((N_PASS + 1))
}
fail() {
    echo "FAIL: $1: $2"
    N_FAIL=$((N_FAIL + 1))
}
result() { echo "RESULT $SC $1=$2"; }
note() { echo "  .. $*"; }
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# Scenario-defined teardown, run once on every exit path (best effort).
cleanup() { :; }
_cleaned=0
_run_cleanup() {
    ((_cleaned)) && return 0
    _cleaned=1
    cleanup >>"$R/steps/cleanup.log" 2>&1 || true
}

# finish: summary line and exit status.
finish() {
    _run_cleanup
    result elapsed_s "$(elapsed)"
    echo "SUMMARY $SC: passed=$N_PASS failed=$N_FAIL"
    ((N_FAIL == 0)) && exit 0
    exit 1
}

# abort STEP WHY: a step later steps depend on failed; stop here.
abort() {
    fail "$1" "$2"
    echo "  (aborting $SC: later steps depend on this one)"
    finish
}

skip_scenario() {
    echo "SKIP: $SC: $1"
    _run_cleanup
    echo "SUMMARY $SC: passed=$N_PASS failed=$N_FAIL skipped=1"
    exit 77
}

# step NAME CMD...: runs CMD with its output in $R/steps/<name>.log (also shown,
# indented). PASS if it exits 0, else FAIL with the last output line as why.
step() {
    local name=$1 log rc
    shift
    log=$R/steps/$(tr -c 'A-Za-z0-9_.-' '_' <<<"$name").log
    "$@" >"$log" 2>&1
    rc=$?
    sed 's/^/    /' "$log" | tail -n 25
    if ((rc == 0)); then
        pass "$name"
        return 0
    fi
    fail "$name" "exit $rc: $(grep -v '^[[:space:]]*$' "$log" | tail -n 1)"
    return 1
}

# must NAME CMD...: like step, but aborts the scenario on failure.
must() {
    step "$@" && return 0
    echo "  (aborting $SC: later steps depend on '$1')"
    finish
}

# wait_for SECONDS CMD...: retry CMD every 0.2 s until it succeeds.
wait_for() {
    local deadline=$(($(date +%s) + $1))
    shift
    until "$@"; do
        (($(date +%s) >= deadline)) && return 1
        sleep 0.2
    done
}

# ---------------------------------------------------------------------------
# Target-side helpers

# Capability lines of the target binary ("transport rdma", "bdev nvme", ...).
# Skips the scenario (never passes) when the binary or the capability is absent.
require_capability() {
    local want=$1 caps
    [[ -n ${NVMF_TGT_BIN:-} && -x $NVMF_TGT_BIN ]] ||
        skip_scenario "not built yet (no nvmf-tgt binary passed in; set NVMF_TGT_BIN or build target/release/nvmf-tgt)"
    if ! caps=$("$NVMF_TGT_BIN" capabilities 2>&1); then
        note "'nvmf-tgt capabilities' failed: $(tail -n 1 <<<"$caps")"
        skip_scenario "not built yet ('nvmf-tgt capabilities' is not implemented)"
    fi
    printf '%s\n' "$caps" | sed 's/^/    capability: /'
    grep -qx "$want" <<<"$caps" || skip_scenario "not built yet (nvmf-tgt has no '$want')"
}

# rdma_listening PORT: an RDMA CM listener on $NVMF_VM_ADDR (or any address)
# and PORT shows in `rdma resource show cm_id`.
rdma_listening() {
    rdma resource show cm_id 2>/dev/null |
        grep 'state LISTEN' | grep -E "src-addr ($NVMF_VM_ADDR|0\.0\.0\.0):$1( |\$)" >/dev/null
}

# listener_check PORT: rdma_listening, waiting up to 5 s; shows the cm_ids.
listener_check() {
    local rc=0
    wait_for 5 rdma_listening "$1" || rc=1
    rdma resource show cm_id
    return "$rc"
}

TGT_PID=''
TGT_MASK=${TGT_MASK:-0x1}
# The fabric every helper uses: rdma (Soft-RoCE) or tcp. TCP scenarios set it before
# sourcing this file; the kernel's nvme-tcp and nvmet-tcp are loaded for them here.
TRTYPE=${TRTYPE:-rdma}
if [[ $TRTYPE == tcp ]] && ! lsmod | grep -q '^nvme_tcp '; then
    modprobe -a nvme-tcp nvmet-tcp || echo "modprobe nvme-tcp nvmet-tcp failed"
fi
# The 6.1 guest kernel BUGs ("usercopy: Kernel memory exposure attempt detected from page
# alloc", mm/usercopy.c:101) when a userspace receiver reads an skb fragment that spans two
# transparent huge pages: nvme-tcp sends fio's O_DIRECT pages by reference, and on the same
# machine they reach our target's socket as they are. No NIC rebuilds them on a real
# network. Without THP, fio's buffers are plain pages.
if [[ $TRTYPE == tcp && -w /sys/kernel/mm/transparent_hugepage/enabled ]]; then
    echo never >/sys/kernel/mm/transparent_hugepage/enabled
fi

# tcp_listening PORT: a TCP listener on $NVMF_VM_ADDR (or any address) and PORT.
tcp_listening() {
    ss -Hltn "( sport = :$1 )" 2>/dev/null | grep -Eq "($NVMF_VM_ADDR|0\.0\.0\.0|\*|\[::\]):$1 "
}

# target_listening PORT: our target's listener for TRTYPE is up.
target_listening() {
    if [[ $TRTYPE == tcp ]]; then tcp_listening "$1"; else rdma_listening "$1"; fi
}

show_listeners() {
    if [[ $TRTYPE == tcp ]]; then ss -Hltn; else rdma resource show cm_id | grep LISTEN; fi
}
# start_target CONFIG [ARGS...]: our target on the reactors of TGT_MASK (default
# core 0), log appended to $R/target.log. CONFIG "-" runs the built-in default.
# RUST_LOG defaults to the target's own default level (info).
start_target() {
    local conf=$1 args=(-m "$TGT_MASK")
    shift
    [[ $conf != - ]] && args+=(-c "$conf")
    echo "==== nvmf-tgt ${args[*]} $*" >>"$R/target.log"
    "$NVMF_TGT_BIN" "${args[@]}" "$@" >>"$R/target.log" 2>&1 &
    TGT_PID=$!
    echo "nvmf-tgt ${args[*]} $* started, pid $TGT_PID"
}

# subsystem_config NQN SERIAL BDEV [MODEL]: config sections (stdout) for one
# any-host subsystem on the RDMA listener $NVMF_VM_ADDR:$TRSVCID exporting
# BDEV as its namespace 1.
subsystem_config() {
    cat <<EOF
[[subsystem]]
nqn = "$1"
serial = "$2"
${4:+model = \"$4\"}
allow_any_host = true

[[subsystem.listener]]
trtype = "$TRTYPE"
traddr = "$NVMF_VM_ADDR"
trsvcid = "$TRSVCID"

[[subsystem.namespace]]
bdev = "$3"
EOF
}

# malloc_subsystem_config NQN SERIAL NUM_BLOCKS: a config (stdout) with one
# 512-byte-block RAM disk exported by subsystem_config.
malloc_subsystem_config() {
    cat <<EOF
[[bdev]]
name = "Malloc0"
kind = "malloc"
num_blocks = $3
block_size = 512

EOF
    subsystem_config "$1" "$2" Malloc0
}

# nvme_subsystem_config NQN SERIAL BDF [MODEL [BDEV_KEYS]]: a config (stdout)
# with the NVMe controller at BDF as bdev Nvme0 (plus the BDEV_KEYS lines),
# its namespace 1 exported by subsystem_config.
nvme_subsystem_config() {
    cat <<EOF
[[bdev]]
name = "Nvme0"
kind = "nvme"
traddr = "$3"
${5:-}

EOF
    subsystem_config "$1" "$2" Nvme0n1 "${4:-}"
}

# Resources the target holds, from the kernel's view (rdma tool, /proc).
# The rdma tool names the thread that created a resource (a reactor's for
# QPs), so match every thread of the target.
tgt_rdma_count() {
    local t tids=()
    for t in /proc/"$TGT_PID"/task/*; do tids+=("${t##*/}"); done
    local IFS='|'
    rdma resource show "$1" 2>/dev/null | grep -Ec "pid (${tids[*]})( |\$)" || true
}
tgt_rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$TGT_PID/status"; }
tgt_resources() {
    printf 'qp=%s mr=%s cm_id=%s rss_kib=%s\n' "$(tgt_rdma_count qp)" "$(tgt_rdma_count mr)" \
        "$(tgt_rdma_count cm_id)" "$(tgt_rss_kib)"
}

# wait_target_listening: until the target listens on TRSVCID (or exits).
wait_target_listening() {
    local i
    for ((i = 0; i < 150; i++)); do
        if ! kill -0 "$TGT_PID" 2>/dev/null; then
            wait "$TGT_PID"
            echo "nvmf-tgt exited with status $? before listening; its log:"
            tail -n 20 "$R/target.log"
            return 1
        fi
        target_listening "$TRSVCID" && { show_listeners; return 0; }
        sleep 0.2
    done
    echo "no $TRTYPE listener on port $TRSVCID after 30 s; listeners:"
    show_listeners
    return 1
}

target_alive() {
    kill -0 "$TGT_PID" 2>/dev/null || { echo "nvmf-tgt (pid $TGT_PID) is gone"; return 1; }
    echo "nvmf-tgt (pid $TGT_PID) still running"
}

# stop_target: SIGTERM, then it must exit 0 within 10 s.
stop_target() {
    local i rc
    kill -TERM "$TGT_PID" || return 1
    for ((i = 0; i < 50; i++)); do
        kill -0 "$TGT_PID" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$TGT_PID" 2>/dev/null; then
        echo "still running 10 s after SIGTERM; killing it"
        kill -KILL "$TGT_PID"
        wait "$TGT_PID"
        return 1
    fi
    wait "$TGT_PID"
    rc=$?
    echo "exited with status $rc"
    TGT_PID=''
    ((rc == 0))
}

# No DMA the vIOMMU blocked (QEMU's NVMe model reports success even then).
no_dmar_faults() {
    if dmesg | grep -E 'DMAR: \[DMA|DMAR: DRHD: handling fault|DMAR:.*fault'; then
        echo "the IOMMU blocked DMA (above)"
        return 1
    fi
    echo "no DMAR faults in the kernel log"
}

# ---------------------------------------------------------------------------
# The kernel's own target (nvmet + nvmet-rdma) through configfs, serving a
# memory-backed null_blk device: the reference peer.

NVMET=/sys/kernel/config/nvmet
NULLB=/sys/kernel/config/nullb/nullb0
NVMET_PORT=$NVMET/ports/1

# nvmet_nullb MIB: /dev/nullb0, memory backed, 512-byte blocks.
nvmet_nullb() {
    mkdir "$NULLB" &&
        echo 512 >"$NULLB/blocksize" &&
        echo "$1" >"$NULLB/size" &&
        echo 1 >"$NULLB/memory_backed" &&
        echo 2 >"$NULLB/submit_queues" &&
        echo 1 >"$NULLB/power" &&
        wait_for 5 test -b /dev/nullb0 &&
        echo "/dev/nullb0: $(blockdev --getsize64 /dev/nullb0) bytes"
}

# nvmet_subsystem NQN SERIAL MODEL: any host, namespace 1 = /dev/nullb0.
nvmet_subsystem() {
    local sub=$NVMET/subsystems/$1
    mkdir "$sub" &&
        echo 1 >"$sub/attr_allow_any_host" &&
        echo "$2" >"$sub/attr_serial" &&
        echo "$3" >"$sub/attr_model" &&
        mkdir "$sub/namespaces/1" &&
        echo /dev/nullb0 >"$sub/namespaces/1/device_path" &&
        echo 1 >"$sub/namespaces/1/enable"
}

# nvmet_port NQN TRSVCID: an RDMA port on $NVMF_VM_ADDR exporting NQN.
nvmet_port() {
    mkdir "$NVMET_PORT" &&
        echo "$TRTYPE" >"$NVMET_PORT/addr_trtype" &&
        echo ipv4 >"$NVMET_PORT/addr_adrfam" &&
        echo "$NVMF_VM_ADDR" >"$NVMET_PORT/addr_traddr" &&
        echo "$2" >"$NVMET_PORT/addr_trsvcid" &&
        ln -s "$NVMET/subsystems/$1" "$NVMET_PORT/subsystems/$1" &&
        dmesg | grep nvmet | tail -n 3 &&
        dmesg | grep "nvmet_$TRTYPE: enabling port" >/dev/null
}

# nvmet_teardown NQN: removes all of the above; fails if anything is left.
nvmet_teardown() {
    local ok=0 sub=$NVMET/subsystems/$1 left
    rm -f "$NVMET_PORT/subsystems/$1" || ok=1
    if [[ -d $NVMET_PORT ]]; then rmdir "$NVMET_PORT" || ok=1; fi
    if [[ -d $sub/namespaces/1 ]]; then
        echo 0 >"$sub/namespaces/1/enable" || ok=1
        rmdir "$sub/namespaces/1" || ok=1
    fi
    if [[ -d $sub ]]; then rmdir "$sub" || ok=1; fi
    if [[ -d $NULLB ]]; then
        echo 0 >"$NULLB/power" || ok=1
        rmdir "$NULLB" || ok=1
    fi
    left=$(find "$NVMET/ports" "$NVMET/subsystems" /sys/kernel/config/nullb \
        -mindepth 1 -maxdepth 1 ! -name features)
    [[ -z $left ]] || { echo "left in configfs: $left"; ok=1; }
    [[ -b /dev/nullb0 ]] && { echo "/dev/nullb0 still exists"; ok=1; }
    ((ok == 0))
}

# ---------------------------------------------------------------------------
# Initiator-side suite: what a Linux host does against an NVMe-oF/RDMA target.
# Shared by kernel-target (the kernel's nvmet, the reference) and rdma-basic
# (our target), so both are held to exactly the same checks.

TRSVCID=${TRSVCID:-4420}
# Extra `nvme connect` options of initiator_suite (e.g. --hdr-digest --data-digest).
[[ -v CONNECT_ARGS ]] || CONNECT_ARGS=()
CTRL= # e.g. nvme0, after connect
NS=   # e.g. nvme0n1, after connect

# Parse `nvme discover -o json` (stdin); check every record's transport fields
# and that SUBNQN is offered as an NVMe subsystem.
_check_discovery_json() {
    python3 -c '
import json, sys
addr, svc, nqn, trtype = sys.argv[1:5]
d = json.load(sys.stdin)
recs = d.get("records", [])
print("genctr %s, %d record(s)" % (d.get("genctr"), len(recs)))
bad = 0
for i, r in enumerate(recs):
    got = {k: str(r.get(k)) for k in ("trtype", "adrfam", "traddr", "trsvcid", "subtype", "subnqn")}
    print("record %d: %s" % (i, " ".join("%s=%s" % kv for kv in got.items())))
    want = {"trtype": trtype, "adrfam": "ipv4", "traddr": addr, "trsvcid": svc}
    for k, v in want.items():
        if got[k].strip() != v:
            print("record %d: %s is %r, expected %r" % (i, k, got[k], v)); bad += 1
subs = [r for r in recs if r.get("subnqn") == nqn]
if len(subs) != 1:
    print("expected exactly one record for %s, got %d" % (nqn, len(subs))); bad += 1
elif subs[0].get("subtype") != "nvme subsystem":
    print("record for %s has subtype %r" % (nqn, subs[0].get("subtype"))); bad += 1
sys.exit(1 if bad else 0)
' "$NVMF_VM_ADDR" "$TRSVCID" "$1" "$TRTYPE"
}

discover_check() {
    local nqn=$1 json
    json=$(nvme discover -t "$TRTYPE" -a "$NVMF_VM_ADDR" -s "$TRSVCID" -o json) || return 1
    printf '%s\n' "$json" >"$R/discovery.json"
    _check_discovery_json "$nqn" <<<"$json"
}

# Find the controller and namespace block device of NQN (sets CTRL, NS).
_find_ctrl_ns() {
    local nqn=$1 c s n
    CTRL=''
    NS=''
    for c in /sys/class/nvme/nvme*; do
        [[ -e $c/subsysnqn && $(<"$c/subsysnqn") == "$nqn" && $(<"$c/state") == live ]] || continue
        CTRL=${c##*/}
    done
    [[ -n $CTRL ]] || return 1
    # With native multipath (Debian's default) the block device is the
    # subsystem's head node nvme<S>n<N>; without it, nvme<C>n<N>.
    for s in /sys/class/nvme-subsystem/*; do
        [[ -e $s/subsysnqn && $(<"$s/subsysnqn") == "$nqn" ]] || continue
        for n in "$s"/nvme*n*; do
            [[ -e $n ]] && [[ ${n##*/} =~ ^nvme[0-9]+n[0-9]+$ ]] && { NS=${n##*/} && break; }
        done
    done
    if [[ -z $NS ]]; then
        for n in /sys/class/nvme/"$CTRL"/"$CTRL"n*; do
            [[ -e $n ]] && { NS=${n##*/} && break; }
        done
    fi
    [[ -n $NS && -b /dev/$NS ]]
}

# connect NQN [NVME_CONNECT_ARGS...] over TRTYPE
connect() {
    local nqn=$1
    shift
    nvme connect -t "$TRTYPE" -a "$NVMF_VM_ADDR" -s "$TRSVCID" -n "$nqn" "$@" || return 1
    wait_for 20 _find_ctrl_ns "$nqn" || { echo "no live controller/namespace for $nqn after 20 s"; return 1; }
    echo "controller $CTRL, namespace /dev/$NS"
}

check_id_ctrl() {
    local serial=$1 model=$2 out sn mn
    out=$(nvme id-ctrl "/dev/$CTRL") || return 1
    sn=$(awk -F: '$1 ~ /^sn *$/ { sub(/^ +/, "", $2); sub(/ +$/, "", $2); print $2 }' <<<"$out")
    mn=$(awk -F: '$1 ~ /^mn *$/ { sub(/^ +/, "", $2); sub(/ +$/, "", $2); print $2 }' <<<"$out")
    grep -E '^(vid|sn|mn|fr|cntlid|ver|kas|ioccsz|iorcsz|sgls|subnqn) ' <<<"$out"
    [[ $sn == "$serial" ]] || { echo "serial is '$sn', expected '$serial'"; return 1; }
    [[ $mn == "$model" ]] || { echo "model is '$mn', expected '$model'"; return 1; }
}

check_smart_log() {
    local out
    out=$(nvme smart-log "/dev/$CTRL") || return 1
    printf '%s\n' "$out"
    grep -q '^critical_warning' <<<"$out" || { echo "no critical_warning field"; return 1; }
}

# One 1 MiB write and read with nvme-cli's passthrough (2048 blocks of 512
# bytes, or 256 of 4096): Linux refuses passthrough larger than the
# controller's MDTS before sending it, so this needs MDTS >= 1 MiB.
passthrough_1m() {
    local lbads blocks
    lbads=$(nvme id-ns "/dev/$NS" -o json | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(d["lbafs"][d["flbas"] & 0xf]["ds"])') || return 1
    blocks=$((1048576 >> lbads))
    head -c 1048576 /dev/urandom >/tmp/pt-1m.in
    nvme write "/dev/$NS" --start-block=4096 --block-count=$((blocks - 1)) \
        --data-size=1048576 --data=/tmp/pt-1m.in || return 1
    nvme read "/dev/$NS" --start-block=4096 --block-count=$((blocks - 1)) \
        --data-size=1048576 --data=/tmp/pt-1m.out || return 1
    cmp /tmp/pt-1m.in /tmp/pt-1m.out && echo "1 MiB written and read back through passthrough"
}

check_id_ns() {
    local bytes=$1 json got dev
    json=$(nvme id-ns "/dev/$NS" -o json) || return 1
    got=$(python3 -c '
import json, sys
d = json.load(sys.stdin)
lbaf = d["lbafs"][d["flbas"] & 0xF]
print("nsze=%d ncap=%d lba=%d" % (d["nsze"], d["ncap"], 1 << lbaf["ds"]), file=sys.stderr)
print(d["nsze"] * (1 << lbaf["ds"]))' <<<"$json") || return 1
    dev=$(blockdev --getsize64 "/dev/$NS")
    echo "id-ns size $got bytes, block device $dev bytes, expected $bytes"
    [[ $got == "$bytes" && $dev == "$bytes" ]]
}

check_nvme_list() {
    local serial=$1 out
    out=$(nvme list) || return 1
    printf '%s\n' "$out"
    grep -q "/dev/$NS .*$serial" <<<"$out" || { echo "/dev/$NS with serial $serial not in nvme list"; return 1; }
}

# fio_run NAME ARGS...: runs fio on /dev/$NS, JSON to $R/fio-NAME.json; prints
# one line per direction; fails on any fio or verify error.
fio_run() {
    local name=$1 rc
    shift
    fio --name="$name" --filename="/dev/$NS" --ioengine=libaio --direct=1 \
        --group_reporting --verify_state_save=0 \
        --output-format=json --output="$R/fio-$name.json" "$@"
    rc=$?
    python3 - "$R/fio-$name.json" <<'EOF' || rc=1
import json, sys
text = open(sys.argv[1]).read()
start = text.find("{")
for line in text[:start].splitlines():
    print("fio said: " + line)
j = json.loads(text[start:])["jobs"][0]
for dirn in ("read", "write"):
    s = j[dirn]
    if s["total_ios"] == 0:
        continue
    p = s["clat_ns"].get("percentile", {})
    print("%s: %d IOs, %.0f IOPS, %.1f MiB/s, clat p50 %.0f us, p99 %.0f us" % (
        dirn, s["total_ios"], s["iops"], s["bw"] / 1024.0,
        p.get("50.000000", 0) / 1000.0, p.get("99.000000", 0) / 1000.0))
sys.exit(1 if j["error"] else 0)
EOF
    return "$rc"
}

# fio_result NAME DIR PREFIX: RESULT lines (iops, bw, clat p50/p99) from a run.
fio_result() {
    local name=$1 dirn=$2 prefix=$3
    python3 - "$R/fio-$name.json" "$dirn" <<'EOF' | while read -r kv; do result "${prefix}_${kv%%=*}" "${kv#*=}"; done
import json, sys
text = open(sys.argv[1]).read()
s = json.loads(text[text.find("{"):])["jobs"][0][sys.argv[2]]
p = s["clat_ns"].get("percentile", {})
print("iops=%.0f" % s["iops"])
print("bw_mib_s=%.1f" % (s["bw"] / 1024.0))
print("clat_p50_us=%.0f" % (p.get("50.000000", 0) / 1000.0))
print("clat_p99_us=%.0f" % (p.get("99.000000", 0) / 1000.0))
EOF
}

# Data integrity: per block size, random writes with crc32c headers (read back
# and verified by the same job), then a separate random-read pass verifying
# every block again. Two jobs on disjoint regions (offset_increment; fio still
# warns that "multiple writers may overwrite blocks", which does not apply).
# A negative control proves the read-verify pass can fail: verifying a region
# nobody wrote must report errors.
VERIFY_SIZE_4K=${VERIFY_SIZE_4K:-16M}     # per job
VERIFY_SIZE_128K=${VERIFY_SIZE_128K:-32M} # per job
# The namespace must hold 2 * VERIFY_SIZE_128K + 4 MiB (negative control).
fio_verify_suite() {
    local bs size
    # 1m: chains of buffer units on the target, and PRP lists on an NVMe
    # bdev; it rewrites the 128k regions.
    for bs in 4k 128k 1m; do
        size=$VERIFY_SIZE_4K
        [[ $bs != 4k ]] && size=$VERIFY_SIZE_128K
        step "fio verify randwrite bs=$bs" fio_run "verify-write-$bs" --rw=randwrite --bs="$bs" \
            --iodepth=32 --numjobs=2 --size="$size" --offset_increment="$size" \
            --verify=crc32c --do_verify=1 --verify_fatal=1
        step "fio verify randread bs=$bs" fio_run "verify-read-$bs" --rw=randread --bs="$bs" \
            --iodepth=32 --numjobs=2 --size="$size" --offset_increment="$size" \
            --verify=crc32c --verify_fatal=1
    done
    step "fio verify detects bad data (negative control)" _fio_verify_must_fail
}

_fio_verify_must_fail() {
    # 4 MiB just past the regions written above: zeroes or stale data.
    local off=$(($(_bytes "$VERIFY_SIZE_128K") * 2))
    if fio_run verify-negative --rw=read --bs=4k --iodepth=1 --size=4M --offset="$off" \
        --verify=crc32c --verify_fatal=1 >/dev/null 2>&1; then
        echo "fio verified data that was never written: the verify checks are not working"
        return 1
    fi
    echo "fio reported verify errors, as it should"
}

# _bytes 16M -> 16777216 (K, M, G suffixes).
_bytes() {
    local v=$1
    case $v in
    *K | *k) echo $((${v%?} * 1024)) ;;
    *M | *m) echo $((${v%?} * 1024 * 1024)) ;;
    *G | *g) echo $((${v%?} * 1024 * 1024 * 1024)) ;;
    *) echo "$v" ;;
    esac
}

# Short pure-performance run: 4k random read, QD32, 2 jobs.
PERF_RUNTIME_S=${PERF_RUNTIME_S:-10}
fio_perf() {
    step "fio perf randread bs=4k qd=32 jobs=2 ${PERF_RUNTIME_S}s" fio_run perf-randread-4k \
        --rw=randread --bs=4k --iodepth=32 --numjobs=2 --size=64M \
        --time_based --runtime="$PERF_RUNTIME_S" --ramp_time=2 &&
        fio_result perf-randread-4k read randread_4k_qd32_j2
}

disconnect() {
    local nqn=$1 out
    out=$(nvme disconnect -n "$nqn") || return 1
    echo "$out"
    grep -q 'disconnected 1 controller' <<<"$out" || return 1
    wait_for 10 bash -c "! grep -qx '$nqn' /sys/class/nvme/nvme*/subsysnqn 2>/dev/null" ||
        { echo "controller for $nqn still present"; return 1; }
}

# initiator_suite NQN SERIAL MODEL SIZE_BYTES: everything a host does, in order.
initiator_suite() {
    local nqn=$1 serial=$2 model=$3 bytes=$4 t
    step "nvme discover (plain)" nvme discover -t "$TRTYPE" -a "$NVMF_VM_ADDR" -s "$TRSVCID"
    must "nvme discover: log entries" discover_check "$nqn"
    t=$(date +%s%N)
    must "nvme connect ${CONNECT_ARGS[*]}" connect "$nqn" "${CONNECT_ARGS[@]}"
    result connect_ms $((($(date +%s%N) - t) / 1000000))
    step "nvme list" check_nvme_list "$serial"
    step "nvme id-ctrl: serial and model" check_id_ctrl "$serial" "$model"
    step "nvme id-ns: size" check_id_ns "$bytes"
    step "nvme smart-log" check_smart_log
    fio_verify_suite
    step "1 MiB nvme write/read passthrough" passthrough_1m
    fio_perf
    step "nvme disconnect" disconnect "$nqn"
}
