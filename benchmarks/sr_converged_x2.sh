#!/usr/bin/env bash
# Issue 15 on a 2-core CPU: the sets benchmarks/sr_matching_x2.sh made (the zero-step start, gm, pm) judged
# again under another SR protocol (default espcn-converged: 12,000 batches of 32, where ESPCN x2 has
# converged), with every baseline of the same size. The sets are only read; a set does not depend on the
# protocol that judges it. Two evaluations run side by side on one thread each and split the baselines
# (sr.baselines=[...]): the 18 trainings took 2 h on 2 cores (about 3 h one after another).
#   bash benchmarks/sr_converged_x2.sh SRC OUT [PROTOCOL]     (SRC: sr_matching_x2.sh's folder; PYTHON=...)
#   python benchmarks/sr_acceptance.py --start OUT/start --distilled OUT/gm
#   python benchmarks/sr_acceptance.py --start OUT/start --distilled OUT/pm --baselines OUT/gm
set -euo pipefail
SRC=${1:?the folder benchmarks/sr_matching_x2.sh wrote}; OUT=${2:?an output folder}; PROTOCOL=${3:-espcn-converged}
mkdir -p "$OUT"
judge() {  # judge NAME BASELINES: evaluate SRC/NAME's set under PROTOCOL into OUT/NAME, unless done; time it
  local name=$1 baselines=$2
  [ -f "$OUT/$name/report.json" ] && return 0
  local started=$(date +%s)
  OMP_NUM_THREADS=1 "${PYTHON:-python}" -m latentdistill evaluate "$SRC/$name/distilled.safetensors" \
    --config "$SRC/$name/config.yaml" sr.protocol="$PROTOCOL" "sr.baselines=$baselines" output_dir="$OUT/$name" \
    > "$OUT/$name.log" 2>&1 || { echo "$name: $(tail -n 1 "$OUT/$name.log") (log: $OUT/$name.log)" >&2; return 1; }
  echo "$name (baselines $baselines) $(( $(date +%s) - started )) s" >> "$OUT/times.txt"
}
(judge start "[full,bicubic]" && judge pm "[bicubic]") &
first=$!
judge gm "[random,pruned,bicubic]"
wait "$first"
