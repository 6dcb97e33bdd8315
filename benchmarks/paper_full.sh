#!/usr/bin/env bash
# The paper's full Lenet-300-100 protocol (examples/lenet_mnist_paper.yaml: 50,000 iterations
# per round, both controls, down to 1.9%, three trials), on MNIST and then Fashion-MNIST: one
# process per trial, in turn. Resumable: run it again after an interruption and every trial
# goes on after its last committed round (finished trials are skipped). Long (hours per
# trial on 2 CPU cores): run it in the background, e.g.
#
#   RUNS=/work/runs nohup benchmarks/paper_full.sh > /work/runs/paper_full.log 2>&1 &
#
# Afterwards the merged tables (mean and spread of the trials) are in
# $RUNS/paper_{mnist,fashion_mnist}/results.*; `python benchmarks/paper_tables.py
# $RUNS/paper_mnist` writes them beside the reference and the paper's claims into
# benchmarks/results/ (tables, results.csv/json, plots; never the weights).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs}
DATA=${DATA:-../shared/data}
for dataset in mnist fashion_mnist; do
    for trial in 0 1 2; do
        started=$(date +%s)
        tf-lottery run "examples/lenet_${dataset}_paper.yaml" "run_dir=$RUNS/paper_$dataset" \
            "data_dir=$([ "$dataset" = mnist ] && echo null || echo "$DATA/fashion-mnist")" \
            --trial "$trial"
        echo "paper_$dataset trial $trial: $(( $(date +%s) - started )) s wall time"
    done
    tf-lottery report "$RUNS/paper_$dataset"
done
