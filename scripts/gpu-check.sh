#!/usr/bin/env bash
# scripts/gpu-check.sh — every GPU measurement and GPU test the issues ask for, in one go, into one folder.
#
#   scripts/gpu-check.sh [--out DIR] [--smoke] [--budget SECONDS] [--limit STEP=SECONDS]... [--hs-dense N] [--keep-work]
#   .venv/bin/advlc bench fold DIR        # then: fold DIR's results into docs/BENCHMARKS.md
#
# On one H100/H200-class GPU it takes about 6 minutes and never more than 8 minutes: each step runs under
# `timeout` with its own limit (a step that overruns is cut, reported as `cut`, and the next one
# starts), and no step may run past the whole budget (--budget, default 450 s; then the report,
# at most 15 s). Steps, in order, with the time each should take on an H100 and its limit:
#
#   step           GPU     limit  what
#   env             5 s     20 s  GPUs, driver, torch/CUDA/cuDNN, Python, commit            -> env.json
#   data           10 s     40 s  a random CIFAR-10 folder in torchvision's on-disk format
#                                 (cifar-10-batches-py pickles, 50,000 + 10,000 images) in the
#                                 work folder (deleted at the end unless --keep-work)       -> data.json
#   pytest         60 s     90 s  pytest -m gpu over the test files that mark tests `gpu` (only
#                                 those are imported: the app's tests need packages a bare GPU
#                                 image may lack)                       -> pytest.json, pytest.xml
#   train          60 s     90 s  advlc run paper/table1/fgsm_n-advlc --set data.root=<generated>
#                                 --set train.epochs=2 --set train.device=cuda (final AutoAttack off),
#                                 through a store in the work folder: epoch time, images/s, eval
#                                 time, peak GPU memory                -> train.json, train-run/
#   hs             40 s     75 s  advlc bench hs --run <that run>: exact vs Lanczos on 2000 test
#                                 images, vs power iteration on the first 100 (PreActResNet18,
#                                 3x32x32)                                                  -> hs.json
#   epoch          60 s     90 s  advlc bench epoch: FGSM-N, FGSM-N + AdvLC, PGD10, PGD10 + AdvLC,
#                                 CURE, GradAlign; reference loop vs fast path fp32 and bf16, 20
#                                 batches each (extrapolated to 500); per-epoch evaluation cost
#                                 on 10,000 images, HS cost on 2000                      -> epoch.json
#   epoch_compile 100 s    130 s  the same six, reference loop vs fast path bf16 + torch.compile
#                                 (most of it is compiling)                      -> epoch_compile.json
#   step_cost      20 s     40 s  advlc bench steps: the step cost of the same methods, ratio to their
#                                 base attack                                        -> step_cost.json
#   report          2 s     15 s  summary.json, summary.md, one .md per result, gpu-check.md (the
#                                 block `advlc bench fold DIR` writes into docs/BENCHMARKS.md)
#
# --limit STEP=SECONDS replaces a step's limit (e.g. --limit epoch_compile=200 where compiling is slow).
# Every step's output goes to DIR/logs/<step>.log and one line of DIR/status.jsonl (status ok, cut,
# failed or skipped; seconds; limit). Exit status: 0 when every step is ok, 1 otherwise, 2 for bad
# arguments, 3 when there is no CUDA device (without --smoke).
#
# --smoke: every step with tiny sizes on the CPU (cnn_small, 100 + 50 generated images, one epoch,
# a few batches per benchmark, fewer methods where compiling or timing them is slow there; pytest -m
# gpu skips without CUDA): about 70 s on 2 cores, budget 180 s.
# tests/bench/test_gpu_check.py runs it.
#
# Nothing is downloaded: the data are generated, the benchmarks use synthetic tensors.

set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY="$ROOT/.venv/bin/python"
[[ -x "$PY" ]] || PY=$(command -v python3)
HELPER="$ROOT/scripts/gpu_check.py"

SMOKE=0
LIMITS=()
OUT=""
BUDGET=""
HS_DENSE=0
KEEP=0
usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --out) OUT=${2:?--out needs a folder}; shift ;;
    --out=*) OUT=${1#--out=} ;;
    --budget) BUDGET=${2:?--budget needs seconds}; shift ;;
    --hs-dense) HS_DENSE=${2:?--hs-dense needs a number}; shift ;;
    --limit) [[ ${2:-} =~ ^[a-z_]+=[0-9]+$ ]] || { echo "gpu-check: --limit STEP=SECONDS" >&2; exit 2; }
             LIMITS+=("$2"); shift ;;
    --keep-work) KEEP=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu-check: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
[[ "$BUDGET" =~ ^[0-9]*$ && "$HS_DENSE" =~ ^[0-9]+$ ]] || { echo "gpu-check: --budget and --hs-dense take whole numbers" >&2; exit 2; }
BUDGET=${BUDGET:-$(( SMOKE ? 180 : 450 ))}
OUT=${OUT:-gpu-check-$(date +%Y%m%d-%H%M%S)$( ((SMOKE)) && echo -smoke)}
if [[ -d "$OUT" && -n "$(ls -A "$OUT")" ]]; then    # a folder of an earlier check is reused, nothing else
  [[ -f "$OUT/status.jsonl" ]] || { echo "gpu-check: --out $OUT is not empty" >&2; exit 2; }
  (cd "$OUT" && rm -rf -- logs train-run status.jsonl pytest.xml ./*.json ./*.json.part ./*.md)
fi
mkdir -p "$OUT/logs" || exit 2
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/advlc-gpu-check.XXXXXX") || exit 2
((KEEP)) || trap 'rm -rf "$WORK"' EXIT
export ADVLC_HOME="$WORK/store"       # never the user's store
export PYTHONDONTWRITEBYTECODE=1
if ((SMOKE)); then
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # tiny models on a shared CPU: one thread each
fi
cd "$ROOT" || exit 2

# the project's advlc (.venv/bin/advlc; without it, the same entry point through the interpreter)
advlc() { if [[ -x "$ROOT/.venv/bin/advlc" ]]; then "$ROOT/.venv/bin/advlc" "$@"; else
          "$PY" -c 'import sys; from tui.cli import main; sys.exit(main(sys.argv[1:]))' "$@"; fi; }
export -f advlc
export ROOT PY HELPER OUT WORK SMOKE HS_DENSE

START=$(date +%s)
DEADLINE=$(( START + BUDGET ))
FAILED=0

# run_step NAME LIMIT EXPECTED RESULT CMD: CMD (a bash command line) under `timeout`, output to
# logs/NAME.log, its status to status.jsonl; RESULT (a JSON file, or -) must exist and parse.
run_step() {
  local name=$1 limit=$2 expected=$3 result=$4 cmd=$5 now left cap t0 t1 rc status note="" l
  for l in ${LIMITS[@]+"${LIMITS[@]}"}; do [[ ${l%%=*} == "$name" ]] && limit=${l#*=}; done   # --limit STEP=SECONDS
  now=$(date +%s); left=$(( DEADLINE - now ))
  cap=$(( limit < left ? limit : left ))
  if (( cap < 3 )); then
    status=skipped; rc=-1; t0=$now; t1=$now
    if (( limit < 3 )); then note="--limit $name=$limit"; else note="no time left of the ${BUDGET} s budget"; fi
  else
    echo "gpu-check: $name (limit ${cap} s, ~${expected} s on a GPU)" >&2
    t0=$(date +%s.%N)
    timeout -k 5 "$cap" bash -c "$cmd" >"$OUT/logs/$name.log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    if (( rc == 124 || rc == 137 )) && (( $(date +%s) - ${t0%.*} >= cap )); then
      status=cut; note="cut after ${cap} s"; (( cap < limit )) && note+=" (the rest of the ${BUDGET} s budget)"
    elif (( rc != 0 )); then
      status=failed; note="exit $rc: $(grep -v '^\s*$' "$OUT/logs/$name.log" | tail -n 1 | cut -c1-200)"
    elif [[ "$result" != "-" ]] && ! "$PY" -c 'import json, sys; json.load(open(sys.argv[1]))' "$OUT/$result" 2>/dev/null; then
      status=failed; note="exit 0 but $result is missing or does not parse"
    else
      status=ok
    fi
  fi
  [[ $status == ok ]] || FAILED=1
  "$PY" "$HELPER" status "$OUT" "$name" "$status" "$rc" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')" \
        "$cap" "$expected" "$cmd" "$note"
  echo "gpu-check: $name $status${note:+ ($note)}" >&2
}

if ((SMOKE)); then
  DEV=cpu; ARCH=cnn_small; N_TRAIN=100; N_TEST=50; EPOCHS=1
  TRAIN_SETS="--set model.arch=cnn_small --set train.batch_size=50 --set eval.hs_every=0"
  HS_ARGS="--n 4 --power-n 2"
  EPOCH_ARGS="--iters 2 --rounds 1 --warmup 1 --n-train 200 --batch 20 --workers 0 --eval-n 40 --hs-n 20"
  COMPILE_METHODS="fgsm_n+advlc,fgsm_n+cure"   # compiling takes a while on a CPU (cure: not compiled)
  STEP_METHODS="fgsm_n,advlc"
  COMPILE_ARGS="--iters 2 --rounds 1 --warmup 1 --n-train 200 --batch 20 --workers 0"
  STEP_ARGS="--iters 2 --warmup 1 --rounds 2 --batch 20"
else
  DEV=cuda; ARCH=preact_resnet18; N_TRAIN=50000; N_TEST=10000; EPOCHS=2
  TRAIN_SETS=""; COMPILE_METHODS=""; STEP_METHODS="fgsm_n,pgd,advlc,cure,gradalign"
  HS_ARGS="--n 2000 --power-n 100"
  EPOCH_ARGS="--iters 20 --rounds 2 --warmup 2 --eval-n 10000 --hs-n 2000"
  COMPILE_ARGS="--iters 20 --rounds 2 --warmup 3"
  STEP_ARGS="--iters 20 --warmup 3 --rounds 4"
fi
METHODS="fgsm_n,fgsm_n+advlc,pgd,pgd+advlc,fgsm_n+cure,fgsm_n+gradalign"
COMPILE_METHODS=${COMPILE_METHODS:-$METHODS}
PRESET=paper/table1/fgsm_n-advlc

run_step env 20 5 env.json "\"\$PY\" \"\$HELPER\" env \"\$OUT\" $( ((SMOKE)) && echo --smoke)"
if [[ $(tail -n 1 "$OUT/status.jsonl" 2>/dev/null) == *'"rc": 3'* ]]; then
  echo "gpu-check: no CUDA device here; run with --smoke for the CPU dry run" >&2
  "$PY" "$HELPER" report "$OUT" >/dev/null 2>&1
  exit 3
fi
run_step data 40 10 data.json "\"\$PY\" \"\$HELPER\" make-cifar \"\$WORK/data\" --train $N_TRAIN --test $N_TEST --out \"\$OUT\""
run_step pytest 90 60 pytest.json "PYTHONPATH=\"\$ROOT/scripts\${PYTHONPATH:+:\$PYTHONPATH}\" \"\$PY\" -m pytest -m gpu \
  -p gpu_check_pytest -p no:cacheprovider -q -rfEs --timeout 120 --junitxml=\"\$OUT/pytest.xml\" \
  \$(grep -rl --include='test_*.py' 'mark\.gpu' tests | sort); rc=\$?; \
  \"\$PY\" \"\$HELPER\" pytest-summary \"\$OUT/pytest.xml\" \"\$OUT/pytest.json\"; exit \$rc"
run_step train 90 60 train.json "\"\$PY\" \"\$HELPER\" train \"\$OUT\" --home \"\$ADVLC_HOME\" --preset $PRESET \
  --set data.root=\"\$WORK/data\" --set train.epochs=$EPOCHS --set train.device=$DEV --set 'eval.final=[]' $TRAIN_SETS"
run_step hs 75 40 hs.json "rid=\$(\"\$PY\" -c 'import json, sys; print(json.load(open(sys.argv[1]))[\"run\"])' \"\$OUT/train.json\") \
  || { echo 'no trained run in train.json'; exit 1; }; \
  advlc bench hs --run \"\$rid\" --ckpt last $HS_ARGS --dense-samples \$HS_DENSE --device $DEV --json > \"\$OUT/hs.json.part\" && mv \"\$OUT/hs.json.part\" \"\$OUT/hs.json\""
run_step epoch 90 60 epoch.json "advlc bench epoch --methods $METHODS --model $ARCH --device $DEV --amp off,bf16 \
  $EPOCH_ARGS --json > \"\$OUT/epoch.json.part\" && mv \"\$OUT/epoch.json.part\" \"\$OUT/epoch.json\""
run_step epoch_compile 130 100 epoch_compile.json "advlc bench epoch --methods $COMPILE_METHODS --model $ARCH --device $DEV \
  --amp bf16+compile --eval-n 0 --hs-n 0 $COMPILE_ARGS --json > \"\$OUT/epoch_compile.json.part\" && mv \"\$OUT/epoch_compile.json.part\" \"\$OUT/epoch_compile.json\""
run_step step_cost 40 20 step_cost.json "advlc bench steps --methods $STEP_METHODS --model $ARCH \
  --device $DEV $STEP_ARGS --json > \"\$OUT/step_cost.json.part\" && mv \"\$OUT/step_cost.json.part\" \"\$OUT/step_cost.json\""

# the report is not part of the budget: it always runs
DEADLINE=$(( $(date +%s) + 15 ))
run_step report 15 2 summary.json "\"\$PY\" \"\$HELPER\" report \"\$OUT\""
echo "gpu-check: $(( $(date +%s) - START )) s; results in $OUT (summary.md); fold them into docs/BENCHMARKS.md with:" >&2
echo "  $ROOT/.venv/bin/advlc bench fold $OUT" >&2
exit $FAILED
