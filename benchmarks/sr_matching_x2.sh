#!/usr/bin/env bash
# Issue 15 on a CPU: the 1% x2 set's zero-step start (the selected pool) and the same start after gradient
# matching on trained ESPCNs, judged under one protocol with the baselines of the same size. Each step's
# wall time goes to $OUT/times.txt; run folders go under $OUT.
#   bash benchmarks/sr_matching_x2.sh [OUT] [extra key=value ...]     (PYTHON=.venv/bin/python to choose one)
set -euo pipefail
OUT=${1:-outputs/sr15}; shift || true
CONFIG=configs/sr_x2_matching.yaml
mkdir -p "$OUT"
step() {  # step NAME VERB ARGS...: run one latentdistill verb, log it, time it
  local name=$1; shift
  local started=$(date +%s)
  "${PYTHON:-python}" -m latentdistill "$@" > "$OUT/$name.log" 2>&1
  echo "$name $(( $(date +%s) - started )) s" >> "$OUT/times.txt"
}
step start run --config "$CONFIG" distill.iterations=0 output_dir="$OUT/start" "$@"
step buffer buffer --config "$CONFIG" "$@"
step gm run --config "$CONFIG" output_dir="$OUT/gm" "$@"
