#!/bin/sh
# Runs inside the Soft-RoCE VM (benchmarks/rdma_vm.sh): corokv's RDMA
# batch_get with query results against perftest's ib_read_bw on the same
# device, shape by shape, in turns, for several rounds. Prints one line per
# round and shape, then the median ratio per shape.
cd /payload || exit 1
dev=${COROKV_RDMA_DEV:-rxe0}
seconds=${corokv_bench_seconds:-3}  # from the kernel command line (rdma_vm.sh)
rounds=${corokv_bench_rounds:-3}
port=18600
# shellcheck source=SCRIPTDIR/../tests/vm/guest_lib.sh
. ./guest_lib.sh

# ib_read_bw's average bandwidth (MB/sec, where perftest's MB is 2^20 bytes)
# for messages of $1 bytes with $2 reads posted at a time (-t).
ib_read_bw_at() {
  port=$((port + 1))
  timeout 120 ib_read_bw -d "$dev" -x 0 -s "$1" -t "$2" -D "$seconds" -F -p "$port" >/tmp/ib_server.log 2>&1 &
  server=$!
  wait_listen "$port" || { echo "ib_read_bw server never listened" >&2; return 1; }
  timeout 120 ib_read_bw -d "$dev" -x 0 -s "$1" -t "$2" -D "$seconds" -F -p "$port" 127.0.0.1 >/tmp/ib_client.log 2>&1
  wait "$server"
  awk -v size="$1" '$1 == size && NF >= 5 { print $4 }' /tmp/ib_client.log | tail -n 1
}

# The limit: the better of perftest's default depth (128) and the depth a
# batch of the shape has ($2 keys): on the emulated link too many large
# reads in flight lose packets and wait for retransmission.
raw_read_bw() {
  deep=$(ib_read_bw_at "$1" 128) || return 1
  matched=$(ib_read_bw_at "$1" "$2") || return 1
  echo "  ib_read_bw -s $1: depth 128 $deep MiB/s, depth $2 $matched MiB/s" >&2
  awk -v a="$deep" -v b="$matched" 'BEGIN { print (a > b ? a : b) }'
}

# corokv's MiB/s for one shape KEYSxBYTES.
corokv_read_bw() {
  ./rdma_bench --seconds "$seconds" --device "$dev" --shapes "$1" --json "/tmp/rdma_bench_$1.json" >/tmp/bench.log 2>&1 ||
    { cat /tmp/bench.log >&2; return 1; }
  awk '$1 == "rdma" && $2 == "batch_get" { print $7 }' /tmp/bench.log
}

status=0
: >/tmp/ratios
for round in $(seq "$rounds"); do
  for shape in 64x65536 16x1048576; do
    size=${shape#*x}
    raw=$(raw_read_bw "$size" "${shape%x*}") || status=1
    ours=$(corokv_read_bw "$shape") || status=1
    if awk -v b="$raw" 'BEGIN { exit !(b > 0) }'; then
      ratio=$(awk -v a="$ours" -v b="$raw" 'BEGIN { printf "%.2f", a / b }')
      echo "round $round  $shape  corokv $ours MiB/s  ib_read_bw $raw MiB/s  ratio $ratio"
      echo "$shape $ratio $ours $raw" >>/tmp/ratios
      echo "RESULT {\"round\":$round,\"shape\":\"$shape\",\"corokv_mib_per_s\":$ours,\"ib_read_bw_mib_per_s\":$raw,\"ratio\":$ratio}"
    else
      # perftest under emulation sometimes stalls and reports 0: no limit, no ratio.
      echo "round $round  $shape  corokv $ours MiB/s  ib_read_bw measured nothing this round: left out"
    fi
  done
done
for shape in 64x65536 16x1048576; do
  grep "^$shape " /tmp/ratios | sort -k2 -n | awk -v s="$shape" '{ r[NR] = $2 } END { printf "median ratio %s: %s (of %d rounds)\n", s, r[int((NR + 1) / 2)], NR }'
done
exit $status
