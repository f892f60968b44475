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

wait_listen() {
  i=0
  while ! netstat -ltn 2>/dev/null | grep -q ":$1 "; do
    i=$((i + 1))
    [ "$i" -lt 300 ] || return 1
    sleep 0.1
  done
}

# ib_read_bw's average bandwidth (MB/sec, where perftest's MB is 2^20 bytes)
# for messages of $1 bytes, reads outstanding as the device allows.
raw_read_bw() {
  port=$((port + 1))
  timeout 120 ib_read_bw -d "$dev" -x 0 -s "$1" -D "$seconds" -F -p "$port" >/tmp/ib_server.log 2>&1 &
  server=$!
  wait_listen "$port" || { echo "ib_read_bw server never listened" >&2; return 1; }
  timeout 120 ib_read_bw -d "$dev" -x 0 -s "$1" -D "$seconds" -F -p "$port" 127.0.0.1 >/tmp/ib_client.log 2>&1
  wait "$server"
  awk -v size="$1" '$1 == size && NF >= 5 { print $4 }' /tmp/ib_client.log | tail -n 1
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
    raw=$(raw_read_bw "$size") || status=1
    ours=$(corokv_read_bw "$shape") || status=1
    ratio=$(awk -v a="$ours" -v b="$raw" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }')
    echo "round $round  $shape  corokv $ours MiB/s  ib_read_bw $raw MiB/s  ratio $ratio"
    echo "$shape $ratio $ours $raw" >>/tmp/ratios
  done
done
for shape in 64x65536 16x1048576; do
  grep "^$shape " /tmp/ratios | sort -k2 -n | awk -v s="$shape" '{ r[NR] = $2 } END { printf "median ratio %s: %s (of %d rounds)\n", s, r[int((NR + 1) / 2)], NR }'
done
exit $status
