#!/usr/bin/env bash
# Runs sample.py or train.py on every worker of a Cloud TPU VM (single slice, any size).
#
#   scripts/tpu_launch.sh setup  TPU_NAME ZONE              # copy the repo, create the venv on all workers
#   scripts/tpu_launch.sh sample TPU_NAME ZONE [ARGS...]    # python sample.py ARGS on all workers
#   scripts/tpu_launch.sh train  TPU_NAME ZONE [ARGS...]    # python train.py ARGS on all workers
#
# Every worker runs the same command; jax.distributed.initialize() (stepvideo_jax.distributed) finds
# the other workers through the TPU runtime, and only process 0 writes videos, logs and manifests.
# Checkpoints and data must be readable at the same path on every worker (a GCS bucket mounted with
# gcsfuse, or a persistent disk attached read-only to all of them).
# Environment: PROJECT (gcloud project, optional), REMOTE_DIR (default ~/stepvideo-jax),
# JAX_VERSION (default: the version pinned in this checkout's venv).
set -euo pipefail

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[[ $# -ge 3 ]] || usage
action=$1 tpu=$2 zone=$3
shift 3

remote_dir=${REMOTE_DIR:-'~/stepvideo-jax'}
project_flag=()
[[ -n "${PROJECT:-}" ]] && project_flag=(--project "$PROJECT")
repo_root=$(cd "$(dirname "$0")/.." && pwd)

on_all() {
  gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" "${project_flag[@]}" --worker=all --command "$1"
}

case "$action" in
  setup)
    jax_version=${JAX_VERSION:-$("$repo_root/.venv/bin/python" -c 'import jax; print(jax.__version__)' 2>/dev/null || echo 0.10.2)}
    tarball=$(mktemp -t stepvideo-jax.XXXXXX.tar.gz)
    git -C "$repo_root" ls-files -z | tar -C "$repo_root" --null -T - -czf "$tarball"
    gcloud compute tpus tpu-vm scp "$tarball" "$tpu:/tmp/stepvideo-jax.tar.gz" --zone "$zone" "${project_flag[@]}" --worker=all
    rm -f "$tarball"
    on_all "set -e; mkdir -p $remote_dir && tar -xzf /tmp/stepvideo-jax.tar.gz -C $remote_dir && cd $remote_dir \
      && python3 -m venv .venv && .venv/bin/pip install -q --upgrade pip \
      && .venv/bin/pip install -q 'jax[tpu]==$jax_version' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html \
      && .venv/bin/pip install -q -e . && .venv/bin/python -c 'import jax; print(jax.process_index(), jax.device_count())'"
    ;;
  sample|train)
    args=$(printf ' %q' "$@")
    # STEPVIDEO_DISTRIBUTED=1: initialise the multi-process runtime even where the pod check is unsure.
    on_all "cd $remote_dir && STEPVIDEO_DISTRIBUTED=1 .venv/bin/python $action.py$args 2>&1 | tee -a /tmp/stepvideo-$action.log"
    ;;
  *)
    usage
    ;;
esac
