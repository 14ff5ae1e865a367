#!/usr/bin/env bash
# Issue 15 on a CPU: the 1% x2 set's zero-step start (the selected pool), and the same start after matching
# on trained ESPCNs (gradient matching, performance matching), judged under one protocol with the baselines
# of the same size: the config's espcn-converged (about 3 h on 2 CPU cores), or sr.protocol=quick (about
# 75 min). Each step's wall time goes to $OUT/times.txt; run folders go under $OUT.
#   bash benchmarks/sr_matching_x2.sh [OUT] [extra key=value ...]     (PYTHON=.venv/bin/python to choose one)
#   python benchmarks/sr_acceptance.py --start OUT/start --distilled OUT/gm     (the acceptance table)
set -euo pipefail
OUT=${1:-outputs/sr15}; shift || true
CONFIG=configs/sr_x2_matching.yaml
mkdir -p "$OUT"
step() {  # step NAME VERB ARGS...: run one latentdistill verb unless its run folder is done, log it, time it
  local name=$1; shift
  [ -f "$OUT/$name/report.json" ] || [ -f "$OUT/$name.done" ] && return 0
  local started=$(date +%s)
  "${PYTHON:-python}" -m latentdistill "$@" > "$OUT/$name.log" 2>&1
  echo "$name $(( $(date +%s) - started )) s" >> "$OUT/times.txt"
  touch "$OUT/$name.done"
}
step buffer buffer --config "$CONFIG" "$@"  # first: the config names its objective's buffer, even for zero steps
step start run --config "$CONFIG" distill.iterations=0 output_dir="$OUT/start" "$@"
step gm run --config "$CONFIG" output_dir="$OUT/gm" "$@"
step pm run --config "$CONFIG" distill.objective=pm distill.iterations=150 distill.syn_steps=10 distill.syn_batch=32 distill.syn_lr=0.001 \
  output_dir="$OUT/pm" "$@"
