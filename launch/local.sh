#!/usr/bin/env bash
# Several processes on this machine joined by jax.distributed, with the
# coordinator on localhost: the multi-host code path without a cluster (the
# tests run it on fake CPU devices). Each process runs the same command:
#
#   launch/local.sh N [flags of python -m aad.main ...]
#
# e.g. 2 processes x 2 fake CPU devices, the global batch split over 4:
#
#   XLA_FLAGS=--xla_force_host_platform_device_count=2 \
#     launch/local.sh 2 --config=configs/test.py --workdir=/tmp/aad_2x2
#
# Environment: PYTHON (default: python3), AAD_MODULE (default: aad.main;
# aad.sweep runs a sweep this way), AAD_PORT (default: a free port).
# Output lines are prefixed with the process id; if one process fails, the
# others are stopped and the script exits with its status.
set -euo pipefail

if [[ $# -lt 1 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 NUM_PROCESSES [python -m aad.main flags...]" >&2
  exit 2
fi
n="$1"
shift
python="${PYTHON:-python3}"
module="${AAD_MODULE:-aad.main}"
free_port='import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
port="${AAD_PORT:-$("$python" -c "$free_port")}"
cd "$(dirname "$0")/.."

pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; }
trap 'stop; exit 130' INT TERM
for ((i = 0; i < n; i++)); do
  "$python" -m "$module" "$@" \
    --config.distributed.coordinator_address="127.0.0.1:$port" \
    --config.distributed.num_processes="$n" \
    --config.distributed.process_id="$i" \
    > >(sed -u "s/^/[process $i] /") 2>&1 &
  pids+=("$!")
done

status=0
for ((i = 0; i < n; i++)); do
  rc=0
  wait -n || rc=$?  # the next python to end (sed filters are not jobs)
  if ((rc != 0)); then
    status=$rc
    echo "launch/local.sh: a process exited with status $rc; stopping the" \
      "others." >&2
    stop
    break
  fi
done
wait "${pids[@]}" 2>/dev/null || true
exit "$status"
