#!/usr/bin/env bash
# The experiment queues as two lanes each, one thread a lane, each result committed as it
# finishes. Run from a git worktree pinned to one commit (see experiments/README.md):
#     experiments/lanes.sh a & experiments/lanes.sh b &                # issue 17, MNIST
#     experiments/lanes.sh cifar-a & experiments/lanes.sh cifar-b &    # issue 22, CIFAR-10
# An item is NAME:SEED or NAME:SEED:EVAL_LIMIT (test images of the evaluation report).
# Rerunning resumes: finished results are skipped, training resumes from its last epoch.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 TF_CPP_MIN_LOG_LEVEL=2
case "${1:-}" in
  a) queue="mnist_adr:0 mnist_pgd_at_he:0 mnist_adr_reference_init:0 mnist_adr:1
            mnist_pgd_at_he:1 mnist_adr:2 mnist_pgd_at_he:2 mnist_adr_lc:0 mnist_adr_gc:0
            mnist_adr_he:0 mnist_adr_ls:0" ;;
  b) queue="mnist_pgd_at:0 mnist_adr_features:0 mnist_pgd_at:1 mnist_pgd_at_no_dropout:0
            mnist_pgd_at_reference_init:0 mnist_pgd_at:2 mnist_adr_base:0 mnist_adr_ce:0" ;;
  # CIFAR-10: the PGD-AT pairs evaluated on 1,000 images, the rest on 500. Seeds 0 and 1 of the
  # pair first, then the cheap FastAT pair (about a quarter of a PGD-7 epoch) so every framework
  # has a row early, then seed 2 of the pair, TRADES and ADR. Lane b has one run fewer to the
  # end of ADR (about 6 lane-hours less): it fills them with seed 1 of the FastAT pair.
  cifar-a) queue="cifar10_pgd_at:0:1000 cifar10_pgd_at:1:1000 cifar10_fast_at:0:500
                  cifar10_pgd_at:2:1000 cifar10_trades:0:500 cifar10_adr:0:500" ;;
  cifar-b) queue="cifar10_pgd_at_he:0:1000 cifar10_pgd_at_he:1:1000 cifar10_fast_at_he:0:500
                  cifar10_pgd_at_he:2:1000 cifar10_trades_he:0:500 cifar10_fast_at:1:500
                  cifar10_fast_at_he:1:500" ;;
  *) echo "usage: experiments/lanes.sh a|b|cifar-a|cifar-b" >&2; exit 2 ;;
esac
# A failing item is reported and the lane goes on to the next (it runs unattended for hours);
# the lane's exit status says whether any item failed.
failed=""
for item in $queue; do
  IFS=: read -r name seed limit <<< "$item"
  if ! python experiments/run.py "$name" --seeds "$seed" --eval-limit "${limit:-500}" --commit
  then
    echo "lanes.sh: $item failed; going on with the rest of the queue" >&2
    failed="$failed $item"
  fi
done
if [ -n "$failed" ]; then
  echo "lanes.sh: failed:$failed" >&2
  exit 1
fi
