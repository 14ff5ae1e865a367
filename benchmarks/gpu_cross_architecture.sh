#!/usr/bin/env bash
# The cross-architecture GPU figures in one call (BENCHMARKS.md, "Cross-architecture"): DM at IPC 10 with random-real
# and k-means starts, ConvNet-D3 over 5 runs for DM, DM-kmeans and the CPU-distilled GM set, then the
# cross-architecture table (ConvNet, AlexNet, VGG-11, ResNet-18, ViT; 3 runs; with and without DSA; full
# training set) for DM and GM with DD-Ranking's scores.
#
# Needs gpu/ (ignored): cifar10.safetensors (benchmarks/pack_folder.py pack ../shared/data/cifar10 ...),
# taef2/ (the weights) and gm_ipc10.safetensors (outputs/cifar10_ipc10/distilled.safetensors).
# Results land in $OUT: results.json (every report), log.txt, baselines.json, the two DM sets.
# SMOKE=1 shrinks every step, to check the script on a CPU before spending GPU time.
set -u
OUT=${OUT:-outputs/gpu_cross_architecture}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 LATENTDISTILL_CACHE=${LATENTDISTILL_CACHE:-/tmp/ld_cache}
DATA=${DATA:-/tmp/ld_data/cifar10}
RUNS=/tmp/ld_runs
if [ "${SMOKE:-0}" = 1 ]; then
  ITERS=2; RUNS5=1; RUNS3=1; EPOCHS=2; FULL=1; NETS=${NETS:-convnet}; RUNS=/tmp/ld_runs_smoke; rm -rf "$RUNS"
  EXTRA="data.val_per_class=10"
else
  ITERS=1000; RUNS5=5; RUNS3=3; EPOCHS=300; FULL=5; NETS=convnet,alexnet,vgg11,resnet18,vit; EXTRA=""
fi
COMMON="data.root=$DATA autoencoder.name_or_path=${AUTOENCODER:-gpu/taef2} $EXTRA"
LOG="$OUT/log.txt"
: > "$LOG"
(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU: $(nproc) CPU cores") | tee -a "$LOG"
[ -d "$DATA" ] || $PY benchmarks/pack_folder.py unpack gpu/cifar10.safetensors "$DATA" >> "$LOG" 2>&1

collect() {  # gather every report so far into $OUT/results.json (what a killed call still brings back)
  $PY - "$RUNS" "$OUT" <<'PY'
import glob, json, os, shutil, sys
runs, out = sys.argv[1:3]
results = {os.path.basename(p)[len("report-"):-len(".json")]: json.load(open(p)) for p in sorted(glob.glob(f"{runs}/report-*.json"))}
for name in ("dm", "dm_kmeans"):
    log = f"{runs}/{name}/distill_log.jsonl"
    if os.path.exists(log):
        rows = [json.loads(line) for line in open(log)]
        results[f"{name}_distill"] = {"iterations": len(rows), "seconds_per_iteration": sum(r["seconds"] for r in rows) / len(rows),
                                      "first_loss": rows[0]["loss"], "last_loss": rows[-1]["loss"]}
    if os.path.exists(f"{runs}/{name}/distilled.safetensors"):
        shutil.copy(f"{runs}/{name}/distilled.safetensors", f"{out}/{name}.safetensors")
for path in glob.glob(os.environ["LATENTDISTILL_CACHE"] + "/*/train/baselines.json"):
    shutil.copy(path, f"{out}/baselines.json")
json.dump(results, open(f"{out}/results.json", "w"), indent=1)
PY
}
step() {  # step NAME TIMEOUT REPORT_DIR command...: run and time one step; keep its report; a failure does not stop the rest
  local name=$1 limit=$2 folder=$3; shift 3
  local start=$SECONDS
  echo "=== $name: $*" >> "$LOG"
  timeout "$limit" "$@" >> "$LOG" 2>&1
  local rc=$?
  echo "STEP $name rc=$rc seconds=$((SECONDS - start))" | tee -a "$LOG"
  # each evaluation has its own folder; a copy of its report sits beside the others
  if [ "$rc" = 0 ] && [ -n "$folder" ] && [ -f "$folder/report.json" ]; then cp "$folder/report.json" "$RUNS/report-$name.json"; fi
  collect
}
mkdir -p "$RUNS/gm"; cp gpu/gm_ipc10.safetensors "$RUNS/gm/distilled.safetensors"
LD="$PY -m latentdistill --no-progress"  # a word list, not a function: `timeout` runs programs

# DM: 20 iterations to time it, then the same run resumed and extended to ITERS, or to what fits in
# DM_SECONDS when the GPU is slower than expected (the k-means run gets the same count).
step dm_probe 90 "" $LD distill --config configs/cifar10_ipc10_dm.yaml $COMMON output_dir=$RUNS/dm_probe distill.iterations=20
ITERS=$($PY -c "
import json, sys
rows = [json.loads(line) for line in open('$RUNS/dm_probe/distill_log.jsonl')][5:]
per = sum(r['seconds'] for r in rows) / max(1, len(rows))
print(max(20, min($ITERS, int(${DM_SECONDS:-75} / max(per, 1e-6)))))" 2>> "$LOG" || echo 20)
echo "DM iterations: $ITERS" | tee -a "$LOG"
# a finished run is never extended in place: its checkpoint continues in a new run folder
mkdir -p "$RUNS/dm"; cp "$RUNS/dm_probe/checkpoint.safetensors" "$RUNS/dm/"
step dm 120 "" $LD distill --resume --config configs/cifar10_ipc10_dm.yaml $COMMON output_dir=$RUNS/dm distill.iterations=$ITERS
# evaluations read every path from the config they are given and write into their own output_dir
DM_EVAL="--config configs/cifar10_ipc10_dm.yaml $COMMON"
GM_EVAL="--config configs/cifar10_ipc10.yaml $COMMON"
step dm_convnet 60 $RUNS/dm_convnet $LD evaluate $RUNS/dm/distilled.safetensors $DM_EVAL evaluate.runs=$RUNS5 evaluate.epochs=$EPOCHS output_dir=$RUNS/dm_convnet
step gm_convnet 60 $RUNS/gm_convnet $LD evaluate $RUNS/gm/distilled.safetensors $GM_EVAL evaluate.runs=$RUNS5 evaluate.epochs=$EPOCHS output_dir=$RUNS/gm_convnet
CROSS="evaluate.runs=$RUNS3 evaluate.epochs=$EPOCHS evaluate.without_augment=true evaluate.full_data=true evaluate.full_epochs=$FULL"
step dm_cross 270 $RUNS/dm_cross $LD evaluate $RUNS/dm/distilled.safetensors --nets $NETS $DM_EVAL $CROSS output_dir=$RUNS/dm_cross
step gm_cross 150 $RUNS/gm_cross $LD evaluate $RUNS/gm/distilled.safetensors --nets $NETS $GM_EVAL $CROSS output_dir=$RUNS/gm_cross

step dm_kmeans 120 "" $LD distill --config configs/cifar10_ipc10_dm.yaml $COMMON output_dir=$RUNS/dm_kmeans distill.iterations=$ITERS distill.init=kmeans
step dm_kmeans_convnet 60 $RUNS/dm_kmeans_convnet $LD evaluate $RUNS/dm_kmeans/distilled.safetensors $DM_EVAL evaluate.runs=$RUNS5 evaluate.epochs=$EPOCHS output_dir=$RUNS/dm_kmeans_convnet

echo "results: $(ls "$RUNS" | grep report- | tr "\n" " ")"
