#!/usr/bin/env bash
# Training on a Cloud TPU VM, one or many workers. Every worker runs this
# same script with the same arguments; JAX finds the other workers itself
# (config.distributed.initialize='on'). Run it on all workers at once from
# your machine, after copying the repository to each (same path):
#
#   gcloud compute tpus tpu-vm ssh NAME --zone=ZONE --worker=all \
#     --command='cd aad && launch/tpu_vm.sh --config=configs/aesc_stain.py \
#                --workdir=/mnt/shared/runs/aesc_stain'
#
# The first run on a worker creates ./.venv with requirements.txt and the
# TPU build of JAX. AAD_MODULE=aad.sweep runs a sweep the same way. The
# workdir must be a file system all workers see (e.g. a Filestore mount):
# checkpoints are written by one worker and read by all.
set -euo pipefail

cd "$(dirname "$0")/.."
if [[ ! -f .venv/bin/activate ]]; then
  python3 -m venv .venv
  .venv/bin/pip install -q -r requirements.txt
  .venv/bin/pip install -q -U "jax[tpu]==0.10.2"
fi
. .venv/bin/activate
exec python -m "${AAD_MODULE:-aad.main}" "$@" \
  --config.distributed.initialize=on
