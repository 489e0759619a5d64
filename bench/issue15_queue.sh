#!/usr/bin/env bash
# Issue 15's measurement queue: one run per call of bench/view_bank.py, sequential, most
# important first (so the figures that matter exist if time runs out). One JSON per run in
# docs/benchmarks/issue15/, a log per run in $LOGS; a run whose JSON exists is skipped, so a
# queue can be restarted. `rest` runs what issue 15 still lacks, most important first.
#   nohup bash bench/issue15_queue.sh main > /tmp/issue15-queue.log 2>&1 &
#   nohup nice -n 10 bash bench/issue15_queue.sh side > /tmp/issue15-side.log 2>&1 &
#   nohup bash bench/issue15_queue.sh rest > /tmp/issue15-rest.log 2>&1 &
#   nohup flock /work/notes/bench.lock bash bench/issue15_queue.sh next > /tmp/issue15-next.log 2>&1 &
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
LOGS=${LOGS:-/tmp/issue15-logs}
OUT=docs/benchmarks/issue15
export KERAS_HOME=${KERAS_HOME:-$(cd .. && pwd)/shared/keras-home} TF_CPP_MIN_LOG_LEVEL=2
mkdir -p "$OUT" docs/benchmarks/issue15-quiet "$LOGS"
COMMON=(--backbone mobilenet_v2 --weights imagenet --counts 2000,1000,1000 --work /tmp/15ref/runs)
mkdir -p /tmp/15ref/runs

run() {  # name strategy paths views seed [epochs fine_tune_epochs]
  local name=$1 strategy=$2 paths=$3 views=$4 seed=$5 epochs=${6:-30} ft=${7:-30}
  local json="$OUT/$name-s$seed.json" onbank=(--fine-tune-on-bank)
  [ -n "${HYBRID:-}" ] && onbank=()
  if [ -s "$json" ]; then echo "$(date +%T) skip $name seed $seed (done)"; return; fi
  echo "$(date +%T) start $name seed $seed (commit $(git rev-parse --short HEAD), load $(cut -d' ' -f1-3 /proc/loadavg))"
  "$PY" bench/view_bank.py "${COMMON[@]}" --strategy "$strategy" --paths "$paths" \
    --views "$views" --seeds "$seed" --epochs "$epochs" --fine-tune-epochs "$ft" \
    ${BLEND:+--blend-views} ${REACH:+--blend-reach "$REACH"} \
    "${onbank[@]}" \
    --json-out "$json.part" > "$LOGS/15ref-$name-s$seed.log" 2>&1
  local rc=$?
  if [ $rc -eq 0 ]; then
    "$PY" - "$json.part" "$(git rev-parse HEAD)" "$(df -B1 --output=avail /tmp | tail -1)" <<'PYEOF'
import json, sys
path, commit, free = sys.argv[1], sys.argv[2], int(sys.argv[3])
report = json.loads(open(path).read())
report["commit"], report["tmp_free_bytes_after"] = commit, free
open(path, "w").write(json.dumps(report, indent=1))
PYEOF
    mv "$json.part" "$json"
  fi
  echo "$(date +%T) end $name seed $seed rc=$rc (load $(cut -d' ' -f1-3 /proc/loadavg))"
}

chapter_time() {  # strategies: bench/run.py's time section (ours, then the chapter's code)
  echo "$(date +%T) start chapter time $1 (load $(cut -d' ' -f1-3 /proc/loadavg))"
  "$PY" bench/run.py --sections time --strategies "$1" --epochs 30 --fine-tune-epochs 30 \
    --accuracy-backbone mobilenet_v2:160 > "$LOGS/chapter-time-$1.log" 2>&1
  echo "$(date +%T) end chapter time $1 rc=$? (load $(cut -d' ' -f1-3 /proc/loadavg))"
}

# Measured at 81-128 s per on-the-fly epoch on the shared CPU (load 10-12), fine_tune 30 + 30 on
# the fly would take 1.5-2 h alone: the main queue runs the on-the-fly reference for the head
# phase only (feature_extraction_augmented, the same training as fine_tune's head phase), then
# the bank runs. The side queue (nice 10, so it takes only what the main one leaves) runs fast
# feature extraction.
case "${1:-main}" in
  main)
    run fea-onthefly feature_extraction_augmented reference 3 1 30 1
    run fea-auto feature_extraction_augmented bank auto 1 30 1
    run ft-k3 fine_tune bank 3 1
    run ft-auto fine_tune bank auto 1
    run fea-k3 feature_extraction_augmented bank 3 1 30 1
    for seed in 2 3; do run ft-auto fine_tune bank auto $seed; done
    for seed in 2 3; do run fea-onthefly feature_extraction_augmented reference 3 $seed 30 1; done
    ;;
  side)
    for seed in 1 2 3; do run fe feature_extraction reference 3 $seed 30 1; done
    ;;
  main2)  # the main queue again with fine_tune's product default first (the figure that
           # decides the chapter's order), as the time left would not reach both
    run ft-auto fine_tune bank auto 1
    run ft-k3 fine_tune bank 3 1
    for seed in 2 3; do run ft-auto fine_tune bank auto $seed; done
    ;;
  rest)  # the seeds and the reference still missing (docs/BENCHMARKS.md, issue 15: "Not run");
          # fine_tune's seeds first: shorter, and they decide the chapter's order on 3 seeds
    for seed in 2 3; do run ft-auto fine_tune bank auto $seed; done
    for seed in 2 3; do run fea-onthefly feature_extraction_augmented reference 3 $seed 30 1; done
    run ft-onthefly fine_tune reference 3 1
    ;;
  side2)  # after the first side queue, while the main one runs
    run fea-k3 feature_extraction_augmented bank 3 1 30 1
    for seed in 2 3; do run fea-auto feature_extraction_augmented bank auto $seed 30 1; done
    ;;
  s8)  # session 8, after `rest`: fine_tune with 10 views (each read 6 times over 30 + 30
        # epochs), then the chapter's code against ours for fast feature extraction
    run ft-k10 fine_tune bank 10 1
    chapter_time feature_extraction
    ;;
  s8-quiet)  # the default fine_tune bank again on seed 1 on a quiet machine (its seed-1 run
              # shared the CPU), for a like-for-like wall time; kept apart from the 3-seed set
    OUT=docs/benchmarks/issue15-quiet run ft-auto fine_tune bank auto 1
    ;;
  s9)  # session 9: fine_tune on the fly, seeds 2 and 3. Each used about one core of two, so
        # they ran side by side (seed 3 from a copy of this script started 23 minutes later)
    for seed in 2 3; do run ft-onthefly fine_tune reference 3 $seed; done
    ;;
  s10)  # session 10: fine_tune on a bank of 10 whose fine-tuning phase blends two views per
         # photo (a new input every epoch); one seed per call ($2), three calls side by side
    BLEND=1 run ft-k10-blend fine_tune bank 10 "${2:-1}"
    ;;
  s10b)  # the same with blends that reach half a view-difference beyond both views
    BLEND=1 REACH=0.5 run ft-k10-extrapolate fine_tune bank 10 "${2:-1}"
    ;;
  s10c)  # K = 10 unblended on seeds 2 and 3 (seed 1 ran in session 8): the control the blends
          # were measured against, and the one bank row that stood on one seed
    run ft-k10 fine_tune bank 10 "${2:-2}"
    ;;
  s11)  # session 11: fine_tune's new default, the head on the bank (auto: 10 views) and the
         # fine-tuning phase on the fly; one seed per call ($2). Every case above ran its
         # fine-tuning phase on the bank, which is now --fine-tune-on-bank (on unless HYBRID)
    HYBRID=1 run ft-hybrid fine_tune bank auto "${2:-1}"
    ;;
  next)  # what issue 15 still lacks after session 10: the chapter's code for fine-tuning
          # against ours (about 2 h; strategy 2's ran in session 10, 20261130-045021.json)
    chapter_time fine_tune
    ;;
esac
echo "$(date +%T) queue ${1:-main} done"
