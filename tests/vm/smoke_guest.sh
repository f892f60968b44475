#!/bin/sh
# Guest-side smoke test (busybox sh): perftest RDMA WRITE and READ between two
# processes over Soft-RoCE rxe0 inside the VM. Run via: run.sh smoke_guest.sh
dev=${COROKV_RDMA_DEV:-rxe0}
# GID 0 is the MAC-derived link-local IPv6 GID; it works between processes on
# one rxe device. TCG-emulated bandwidth is tens of MB/s: keep transfers small.
common="-d $dev -x ${COROKV_GID_INDEX:-0} -s 65536 -n 200 -F"
# shellcheck source=SCRIPTDIR/guest_lib.sh
. /payload/guest_lib.sh

run_pair() {
  tool=$1 port=$2
  echo "=== $tool ==="
  # shellcheck disable=SC2086  # $common is a word list on purpose
  timeout 120 "$tool" $common -p "$port" >"/tmp/$tool.server" 2>&1 &
  spid=$!
  if ! wait_listen "$port"; then
    echo "$tool: server never listened"; cat "/tmp/$tool.server"; kill "$spid" 2>/dev/null
    return 1
  fi
  # shellcheck disable=SC2086
  timeout 120 "$tool" $common -p "$port" 127.0.0.1
  crc=$?
  wait "$spid"
  src=$?
  echo "--- $tool server output ---"
  cat "/tmp/$tool.server"
  echo "$tool: client rc=$crc server rc=$src"
  [ "$crc" -eq 0 ] && [ "$src" -eq 0 ]
}

rdma link show

rc=0
run_pair ib_write_bw 18515 || rc=1
run_pair ib_read_bw 18516 || rc=1
[ "$rc" -eq 0 ] && echo "smoke: PASS" || echo "smoke: FAIL"
exit "$rc"
