# Sourced by guest scripts inside the VM (busybox sh): run.sh puts it in
# /payload beside guest.sh.

# Waits until something listens on TCP port $1 (perftest's client fails at
# once if its server is not up yet).
wait_listen() {
  i=0
  while ! netstat -ltn 2>/dev/null | grep -q ":$1 "; do
    i=$((i + 1))
    [ "$i" -lt 300 ] || return 1
    sleep 0.1
  done
}

# Waits until file $1 exists (ready files are written whole, then renamed).
wait_for() {
  i=0
  while [ ! -f "$1" ]; do
    i=$((i + 1))
    [ "$i" -lt 600 ] || return 1
    sleep 0.05
  done
}
