#!/usr/bin/env bash
# The paper's full Lenet-300-100 protocol (examples/lenet_mnist_paper.yaml: 50,000 iterations
# per round, both controls, down to 1.9%, three trials), on MNIST and Fashion-MNIST: one
# process per trial, a dataset's trials in turn. The two datasets run one after the other,
# or both at once with PARALLEL=1 (two processes: on 2 CPU cores each training takes
# 1.2-1.6x as long, the pair does ~1.4x the work per hour; BENCHMARKS.md). Resumable: run
# it again after an interruption and every trial goes on after its last committed round
# (finished trials are skipped). Long (hours per trial on 2 CPU cores): run it in the
# background, e.g.
#
#   RUNS=/work/runs PARALLEL=1 nohup benchmarks/paper_full.sh > /work/runs/paper_full.log 2>&1 &
#
# Pause it with SIGSTOP/SIGCONT; a SIGKILL or Ctrl-C costs at most the epoch under way.
# Afterwards the merged tables (mean and spread of the trials) are in
# $RUNS/paper_{mnist,fashion_mnist}/results.*; `python benchmarks/paper_tables.py
# $RUNS/paper_mnist` writes them beside the reference and the paper's claims into
# benchmarks/results/ (tables, results.csv/json, plots; never the weights).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs}
DATA=${DATA:-../shared/data}

run_dataset() {
    local dataset=$1 trial started
    for trial in 0 1 2; do
        started=$(date +%s)
        tf-lottery run "examples/lenet_${dataset}_paper.yaml" "run_dir=$RUNS/paper_$dataset" \
            "data_dir=$([ "$dataset" = mnist ] && echo null || echo "$DATA/fashion-mnist")" \
            --trial "$trial"
        echo "paper_$dataset trial $trial: $(( $(date +%s) - started )) s wall time"
    done
    tf-lottery report "$RUNS/paper_$dataset"
}

if [ "${PARALLEL:-0}" = 1 ]; then
    run_dataset mnist & mnist=$!
    run_dataset fashion_mnist & fashion=$!
    status=0
    wait "$mnist" || status=$?
    wait "$fashion" || status=$?
    exit "$status"
else
    run_dataset mnist
    run_dataset fashion_mnist
fi
