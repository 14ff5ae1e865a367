#!/usr/bin/env bash
# The super-resolution GPU figures in one call (BENCHMARKS.md, "Super-resolution"): SR distillation variants and their
# evaluations with the baselines of the same size, all with configs/sr_x2.yaml's protocol (ESPCN or FSRCNN,
# L1, Adam 1e-3, 3,000 iterations of 32 patches, 3 runs; PSNR/SSIM on Y of Set5 and BSD100).
#
#   stage 1: every distillation at once (the GPU is mostly idle under one small SR network)
#   stage 2: every evaluation at once: one per baseline group (scale, net, budget) with its baselines, the
#            other x2 ESPCN 10% sets alone (their baselines are x2_gm_pool10's)
#
# Data: $SRDATA holds yang91, bsd200, set5, bsd100 and taef2 (the weights); the lent GPU takes at most
# 64 MiB per call, so `bash benchmarks/gpu_super_resolution.sh stage DIR` copies a part of it there first.
# Results land in $OUT: results.json (every report so far), log.txt. SMOKE=1 shrinks every step.
set -u
if [ "${1:-}" = stage ]; then mkdir -p "${SRDATA:-/tmp/ld_sr}" && cp -r "$2"/. "${SRDATA:-/tmp/ld_sr}/" && ls "${SRDATA:-/tmp/ld_sr}"; exit; fi
OUT=${OUT:-outputs/gpu_super_resolution}
PY=${PY:-python3}
SRDATA=${SRDATA:-/tmp/ld_sr}
RUNS=${RUNS:-/tmp/ld_sr_runs}
mkdir -p "$OUT" "$RUNS"
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 LATENTDISTILL_CACHE=${LATENTDISTILL_CACHE:-/tmp/ld_cache}
for part in yang91 bsd200 set5 bsd100 taef2; do [ -d "$SRDATA/$part" ] || { echo "missing $SRDATA/$part"; exit 3; }; done
if [ "${SMOKE:-0}" = 1 ]; then
  GM=2; DM=2; EXTRA="sr.iterations=20 sr.runs=1"
else
  GM=${GM:-500}; DM=${DM:-200}; EXTRA=""
fi
COMMON="--config configs/sr_x2.yaml sr.train=[$SRDATA/yang91,$SRDATA/bsd200] sr.test=[$SRDATA/set5,$SRDATA/bsd100] autoencoder.name_or_path=$SRDATA/taef2 threads=2 $EXTRA"
LD="$PY -m latentdistill --no-progress"
LOG="$OUT/log.txt"
: > "$LOG"
(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU: $(nproc) CPU cores") | tee -a "$LOG"

collect() {  # every report and distillation log so far into $OUT/results.json (what a killed call still brings back)
  $PY - "$RUNS" "$OUT" <<'PY'
import glob, json, os, sys
runs, out = sys.argv[1:3]
results = {}
for folder in sorted(glob.glob(f"{runs}/*/")):
    name = os.path.basename(folder.rstrip("/"))
    entry = {}
    if os.path.exists(f"{folder}/report.json"):
        entry["report"] = json.load(open(f"{folder}/report.json"))
    if os.path.exists(f"{folder}/distill_log.jsonl"):
        rows = [json.loads(line) for line in open(f"{folder}/distill_log.jsonl")]
        if rows:
            entry["distill"] = {"iterations": len(rows), "seconds_per_iteration": sum(r["seconds"] for r in rows) / len(rows),
                                "first_loss": rows[0]["loss"], "last_loss": rows[-1]["loss"]}
    results[name] = entry
json.dump(results, open(f"{out}/results.json", "w"), indent=1)
PY
}
job() {  # job NAME LIMIT command...: one timed step in the background, its output in $RUNS/NAME.log
  local name=$1 limit=$2; shift 2
  ( start=$SECONDS; timeout "$limit" "$@" > "$RUNS/$name.log" 2>&1; rc=$?
    echo "STEP $name rc=$rc seconds=$((SECONDS - start))" | tee -a "$LOG"; grep "^| \|rror" "$RUNS/$name.log" >> "$LOG" ) &
}
declare -A VARIANT=(
  [x2_gm_pool10]="distill.objective=gm distill.iterations=$GM sr.pool=0.1"
  [x2_init_pool10]="distill.objective=gm distill.iterations=0 sr.pool=0.1"
  [x2_gm_all]="distill.objective=gm distill.iterations=$GM sr.pool=1.0"
  [x2_gm_pool30]="distill.objective=gm distill.iterations=$GM sr.pool=0.3"
  [x2_dm_pool10]="distill.objective=dm distill.iterations=$DM sr.pool=0.1"
  [x2_gm_budget5]="distill.objective=gm distill.iterations=$GM sr.budget=0.05 sr.pool=0.05"
  [x2_gm_budget1]="distill.objective=gm distill.iterations=$GM sr.budget=0.01 sr.pool=0.01"
  [x2_fsrcnn_gm_pool10]="distill.objective=gm distill.iterations=$GM sr.pool=0.1 sr.net=fsrcnn"
  [x4_gm_pool10]="distill.objective=gm distill.iterations=$GM sr.pool=0.1 sr.scale=4"
)
ONLY=${ONLY:-${!VARIANT[*]}}  # a subset of the variants, by name (SMOKE runs use it)
chosen() { [[ " $ONLY " == *" $1 "* ]]; }
# the latents are encoded and the x2 patches ranked once (the x2 variants share them; x4 ranks its own),
# then every distillation runs at once
job encode 300 $LD distill $COMMON distill.iterations=0 sr.pool=0.1 output_dir=$RUNS/encode; wait
for name in "${!VARIANT[@]}"; do
  chosen "$name" && job "distill_$name" ${DISTILL_LIMIT:-400} $LD distill $COMMON ${VARIANT[$name]} output_dir=$RUNS/$name
done; wait
collect
# evaluations at once: one per baseline group (scale, net, budget) trains and caches its baselines; the
# other x2 ESPCN 10% sets are trained alone (their baselines are x2_gm_pool10's: same protocol and seeds)
for name in x2_gm_pool10 x2_gm_budget5 x2_gm_budget1 x2_fsrcnn_gm_pool10 x4_gm_pool10; do
  chosen "$name" && job "evaluate_$name" ${EVAL_LIMIT:-400} $LD evaluate $RUNS/$name/distilled.safetensors $COMMON ${VARIANT[$name]} output_dir=$RUNS/${name}_evaluation
done
for name in x2_init_pool10 x2_gm_all x2_gm_pool30 x2_dm_pool10; do
  chosen "$name" && job "evaluate_$name" ${EVAL_LIMIT:-400} $LD evaluate $RUNS/$name/distilled.safetensors $COMMON ${VARIANT[$name]} "sr.baselines=[bicubic]" output_dir=$RUNS/${name}_evaluation
done; wait
collect
cp "$LATENTDISTILL_CACHE"/sr-*-baselines.json "$OUT/" 2>/dev/null
[ -f "$RUNS/x2_gm_pool10/distilled.safetensors" ] && cp "$RUNS/x2_gm_pool10/distilled.safetensors" "$OUT/x2_gm_pool10.safetensors"
echo done | tee -a "$LOG"
