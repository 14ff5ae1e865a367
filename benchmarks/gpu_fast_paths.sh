#!/usr/bin/env bash
# Issue 12's GPU figures in one call (BENCHMARKS.md, "Fast paths"): first the speed table (benchmarks/speed.py:
# gm outer step per-class vs batched at IPC 1/10/50, dm iteration, 10 experts sequential vs parallel, a
# 5-network evaluation row sequential vs batched), then the published budgets on CIFAR-10 side by side in
# taef2's latent space and in pixel space (configs/published/: gm 1,000 iterations, dm 20,000; ConvNet-3,
# DSA, 1,000 epochs, 5 runs, random real in the same run), cheapest first, each with its wall time. Every
# step has its own timeout, cut to what is left of DEADLINE (seconds, default 570: one device call is at most
# 600) and skipped when under a minute is left; a failure does not stop the rest; results.json in $OUT is
# rewritten after each step, so every finished row comes back. What one call holds (estimates from
# ../shared/docs/gpu.md): the speed table about 3 min, gm IPC 1 about 1.5 min per space, dm IPC 10 at 20,000
# iterations about 4 min per space; gm IPC 10 (1,000 x 10 matching steps and 9 x 50 inner epochs) and dm
# IPC 50 need a call of their own each: STEPS="gm_ipc10_taef2" etc.
#
# Needs gpu/ (ignored): cifar10.safetensors (python benchmarks/pack_folder.py pack ../shared/data/cifar10
# gpu/cifar10.safetensors) and taef2/ (cp -r ../shared/weights/taef2 gpu/). Then, on the device:
#   run(command="OUT=$OUT bash benchmarks/gpu_fast_paths.sh", carry=["gpu"], timeout_s=600)
# STEPS="gm_ipc10_taef2 gm_ipc10_pixels" (names as in log.txt) runs only those steps; a call on the still-warm
# machine keeps the unpacked data and caches in /tmp.
# SMOKE=1 shrinks every step, to check the script on a CPU before spending GPU time.
set -u
OUT=${OUT:-outputs/gpu_fast_paths}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 LATENTDISTILL_CACHE=${LATENTDISTILL_CACHE:-/tmp/ld_cache}
DATA=${DATA:-/tmp/ld_data/cifar10}
RUNS=/tmp/ld_runs
if [ "${SMOKE:-0}" = 1 ]; then
  SPEED="--device cpu --ipcs 1 --repeats 1 --expert-images 512 --eval-epochs 2"
  SMALL="distill.iterations=2 evaluate.epochs=2 evaluate.runs=2 data.val_per_class=10 precision=fp32"; RUNS=/tmp/ld_runs_smoke; rm -rf "$RUNS"
  DEADLINE=${DEADLINE:-100000}; SPEED_LIMIT=3000  # no device-call limit on a CPU check
else
  SPEED="--device cuda --ipcs 1 10 50 --repeats 5 --eval-epochs 300"; SMALL=""; SPEED_LIMIT=200
fi
COMMON="data.root=$DATA autoencoder.name_or_path=${AUTOENCODER:-gpu/taef2} $SMALL"
LOG="$OUT/log.txt"
: > "$LOG"
mkdir -p "$RUNS"
(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU: $(nproc) CPU cores") | tee -a "$LOG"
[ -d "$DATA" ] || $PY benchmarks/pack_folder.py unpack gpu/cifar10.safetensors "$DATA" >> "$LOG" 2>&1

collect() {  # every report and distillation log so far, with wall times, into $OUT/results.json
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
        entry["distill"] = {"iterations": len(rows), "seconds": round(sum(r["seconds"] for r in rows), 1),
                            "first_loss": rows[0]["loss"], "last_loss": rows[-1]["loss"]}
    if os.path.exists(f"{folder}/wall_seconds"):
        entry["wall_seconds"] = int(open(f"{folder}/wall_seconds").read())
    results[name] = entry
json.dump(results, open(f"{out}/results.json", "w"), indent=1)
PY
}
step() {  # step NAME TIMEOUT command...: run and time one step; a failure does not stop the rest
  local name=$1 limit=$2; shift 2
  case " ${STEPS:-all} " in *" all "*|*" $name "*) ;; *) return 0 ;; esac
  local left=$((${DEADLINE:-570} - SECONDS))
  if [ "$left" -lt 60 ]; then echo "STEP $name skipped: ${left}s left of DEADLINE" | tee -a "$LOG"; return 0; fi
  [ "$limit" -gt "$left" ] && limit=$left
  rm -rf "${RUNS:?}/$name"  # a step always starts afresh (a killed run's checkpoint would refuse a new start)
  local start=$SECONDS
  echo "=== $name: $*" >> "$LOG"
  timeout "$limit" "$@" >> "$LOG" 2>&1
  local rc=$?
  mkdir -p "$RUNS/$name"; echo $((SECONDS - start)) > "$RUNS/$name/wall_seconds"
  echo "STEP $name rc=$rc seconds=$((SECONDS - start))" | tee -a "$LOG"
  collect
}
LD="$PY -m latentdistill --no-progress"

# 1. The speed table (the encode of the latent cache happens here, once).
step speed $SPEED_LIMIT $PY benchmarks/speed.py $SPEED --json "$OUT/speed.json" $COMMON
cat "$OUT/speed.json" >> "$LOG" 2>/dev/null
# 2. Published budgets, latent (taef2) then pixel space, cheapest first.
for spec in gm_ipc1 dm_ipc10 gm_ipc10 dm_ipc50; do
  for space in taef2 pixels; do
    extra=""; [ "$space" = pixels ] && extra="autoencoder.kind=pixels"
    step "${spec}_$space" 540 $LD run --config "configs/published/$spec.yaml" $COMMON $extra output_dir="$RUNS/${spec}_$space"
  done
done
echo "done: $(ls "$RUNS" | tr "\n" " ")" | tee -a "$LOG"
