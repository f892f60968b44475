#!/usr/bin/env bash
# What registering files and buffers with an io_uring is worth for O_DIRECT
# reads at the disk tier's sizes, measured with Debian's fio (apt-get
# install fio): random reads of a 512 MiB file, 64 KiB at depth 64 and
# 1 MiB at depth 16, each with --registerfiles and --fixedbufs off and on,
# alternating, three rounds. Prints GB/s per job.
#   benchmarks/fio_registration.sh [DIR]      (default /var/tmp)
set -euo pipefail
dir=${1:-/var/tmp}
file=$dir/corokv-fio-$$.dat
trap 'rm -f "$file"' EXIT
fio --name=prep --filename="$file" --size=512M --rw=write --bs=1M --direct=1 --output=/dev/null
for round in 1 2 3; do
  for job in "64k 64" "1m 16"; do
    read -r bs depth <<<"$job"
    for files_bufs in "0 0" "1 0" "0 1" "1 1"; do
      read -r files bufs <<<"$files_bufs"
      gbps=$(fio --name=r --filename="$file" --size=512M --rw=randread --bs="$bs" --iodepth="$depth" --direct=1 \
        --ioengine=io_uring --registerfiles="$files" --fixedbufs="$bufs" --time_based --runtime=3 \
        --output-format=json | /usr/bin/python3 -c \
        'import json, sys; print(round(json.load(sys.stdin)["jobs"][0]["read"]["bw_bytes"] / 1e9, 3))')
      echo "round=$round bs=$bs iodepth=$depth registerfiles=$files fixedbufs=$bufs GB/s=$gbps"
    done
  done
done
