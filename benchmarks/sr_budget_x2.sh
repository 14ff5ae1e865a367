#!/usr/bin/env bash
# Issue 15 at one budget on a 2-core CPU: the zero-step start (the selected pool) and the gm set made from it with
# configs/sr_x2_matching.yaml, judged under its protocol (espcn-converged) beside the random and loss-pruned
# subsets of the same size and the full set (from the baseline cache when an earlier evaluation trained it).
# Two one-thread chains side by side: the start, then its evaluation with [full,pruned,bicubic]; the gm
# distillation (ITERATIONS steps), then its evaluation with [random,bicubic]. Each step's wall time goes to
# OUT/times.txt; a finished step is skipped, and an interrupted one continues (distill --resume; an evaluation from
# OUT/NAME/progress).
# One OUT holds one table: other arguments need another OUT (the .done markers do not compare them).
#   bash benchmarks/sr_budget_x2.sh BUDGET ITERATIONS OUT [key=value ...]   (e.g. 0.1 500 outputs/sr15_10; PYTHON=...)
#   (a smoke check: ... 0.1 2 /tmp/smoke sr.runs=1 sr.protocol=quick sr.iterations=20, a few minutes)
#   python benchmarks/sr_acceptance.py --start OUT/start --distilled OUT/gm
set -euo pipefail
BUDGET=${1:?a budget, e.g. 0.1}; ITERATIONS=${2:?gm steps, e.g. 500}; OUT=${3:?an output folder}; shift 3
CONFIG=configs/sr_x2_matching.yaml
EXTRA=("$@")
export OMP_NUM_THREADS=1
mkdir -p "$OUT"
step() {  # step NAME VERB ARGS...: one latentdistill verb unless OUT/NAME.done says it finished; logged and timed
  local name=$1; shift
  [ -f "$OUT/$name.done" ] && return 0
  local started=$(date +%s)
  "${PYTHON:-python}" -m latentdistill "$@" > "$OUT/$name.log" 2>&1 || { echo "$name: $(tail -n 1 "$OUT/$name.log") (log: $OUT/$name.log)" >&2; return 1; }
  echo "$name $(( $(date +%s) - started )) s" >> "$OUT/times.txt"
  touch "$OUT/$name.done"
}
judge() {  # judge NAME BASELINES: evaluate OUT/NAME's set under the config's protocol, into its own folder
  step "$1-evaluation" evaluate "$OUT/$1/distilled.safetensors" --config "$OUT/$1/config.yaml" "sr.baselines=$2" output_dir="$OUT/$1" "${EXTRA[@]}"
}
step buffer buffer --config "$CONFIG" "${EXTRA[@]}"  # the experts (reused when trained before)
(step start distill --config "$CONFIG" sr.budget="$BUDGET" distill.iterations=0 output_dir="$OUT/start" --resume "${EXTRA[@]}" &&
   judge start "[full,pruned,bicubic]") &
first=$!
trap 'pkill -P "$first" 2>/dev/null; kill "$first" 2>/dev/null || true' EXIT  # a failed chain stops the other (both resume when run again)
step gm distill --config "$CONFIG" sr.budget="$BUDGET" distill.iterations="$ITERATIONS" output_dir="$OUT/gm" --resume "${EXTRA[@]}"
judge gm "[random,bicubic]"
wait "$first"
