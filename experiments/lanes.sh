#!/usr/bin/env bash
# The issue-17 MNIST queue as two lanes, each one thread, each result committed as it
# finishes. Run from a git worktree pinned to one commit (see experiments/README.md):
#     experiments/lanes.sh a & experiments/lanes.sh b &
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
  *) echo "usage: experiments/lanes.sh a|b" >&2; exit 2 ;;
esac
for item in $queue; do
  python experiments/run.py "${item%%:*}" --seeds "${item##*:}" --commit
done
