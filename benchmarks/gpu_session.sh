#!/usr/bin/env bash
# The GPU checks of this project, in order of value, for the lent GPU machine (one H200;
# Python 3.12, torch, torchvision, numpy, pandas, matplotlib, pyyaml, pytest; no ray,
# optuna, pydantic or fvcore; no network):
#
#   bash benchmarks/gpu_session.sh all      # every step below, within BUDGET_S (default 540 s)
#   bash benchmarks/gpu_session.sh smoke    # every step at toy size on a CPU (how this script is kept working)
#   bash benchmarks/gpu_session.sh STEP     # one of: davidnet public airbench gputests throughput search dispatch compound
#
#   davidnet    seed 003's winner (ResNet-9, 24 epochs) over RUNS=5 seeds: mean/min/max test accuracy
#   public      airbench94's own script, unchanged (AIRBENCH94, default .gpudata/airbench94.py: bring a
#               copy, never commit it), on the same GPU and the same images (benchmarks/airbench_data.py)
#   airbench    airbench94's network on archscale's trainer, EPOCHS=10, RUNS=5
#   gputests    pytest -m gpu tests/gpu: probe, cap, bf16, SWA, EMA, SAM, compile, latency on CUDA
#   throughput  CIFAR-10 + ResNet-9: archscale's trainer against a DataLoader loop
#   search      a `gpu: auto` search packing several trials on the GPU     } only where Ray was brought:
#   dispatch    benchmarks/dispatch_overhead.py --job airbench: archscale   } see "Bringing Ray" below
#               run against a plain loop, airbench-size trials, 2 per GPU   }
#   compound    stage 1 of CIFAR-10 compound scaling (the 27-point grid)   }
#   workers     a search whose trials are 2 data-parallel workers (Ray Train) }
#               on the one GPU, 0.5 GPU each: one GPU cannot hold two NCCL     }
#               ranks, so archscale uses gloo on GPU shares (host.backend says) }
#
# Data: ARCHSCALE_DATA/cifar10.npz, else .gpudata/cifar10.npz, else unpacked here from
# .gpudata/cifar10.part-{a,b}.npz with cifar_pack.py (in .gpudata/ or ../shared/data/).
# Ray & co: a folder of unpacked wheels at ARCHSCALE_PYDEPS (default .pydeps/), put on PYTHONPATH.
# archscale is imported from this checkout (PYTHONPATH), never installed. Python: python3 on PATH.
# Output: $OUT/session.log (everything, as it goes) and $OUT/figures.txt (each step's status,
# seconds and closing lines, appended as each step ends): a timeout loses nothing written.
#
# Rehearsal on a CPU: `OUT=/tmp/smoke_out bash benchmarks/gpu_session.sh smoke` runs every step at
# toy size (tests/test_gpu_session.py runs it). Run it with PYTHONPATH=benchmarks/gpu_image, whose
# sitecustomize.py makes ray, optuna, fvcore, iopath, yacs, pydantic and mlxtend unimportable, as
# on the GPU image (a simulation: no separate environment is made); the trainer's steps import
# only what that image has. With Ray present, the search and compound steps run too.
#
# Bringing Ray (the search, dispatch and compound steps). The image has no Ray, optuna, pydantic
# or fvcore and no network, and one call to the machine carries at most 64 MiB. Here, with
# network, fetch the cp312 wheels into .whl/wheels:
#     pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#         --platform manylinux_2_28_x86_64 -d .whl/wheels "ray[tune]==2.60.0" "optuna>=4,<6" \
#         "pydantic>=2.5" iopath yacs tabulate termcolor
# build fvcore with `pip wheel --no-deps fvcore`, and remove the wheels of what the image has
# (numpy, pandas, pyyaml, pillow, filelock, fsspec, packaging, typing_extensions, tzdata): 32
# wheels, 138.7 MiB (ray 76, pyarrow 53: Ray Tune does not import without pyarrow).
# `python3 benchmarks/pydeps.py pack` cuts them into .whl/part.00..02 (60, 60, 18.7 MiB). Carry
# one part per call, back to back (the machine keeps ignored files only ~30 s between calls);
# there, `python3 benchmarks/pydeps.py unpack` joins them, checks the digest and unzips every
# wheel into .pydeps/ with file modes kept (Ray's gcs_server must stay executable; 4 s, 392 MiB),
# and this script puts .pydeps/ on PYTHONPATH. Rehearsed with Python 3.12 and only the image's
# packages: from those parts, a 3-trial Tune run with 0.4999 GPU each on a node declaring one
# GPU took 36 s. A session then costs 3 calls for Ray, 2 for CIFAR-10's parts (see
# ../shared/data/README.md), the last of which runs `all`.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
mode="${1:?usage: gpu_session.sh all|smoke|davidnet|public|airbench|gputests|throughput|search|dispatch|compound|workers}"
PY="$(command -v python3 || command -v python)" || { echo "no python3 on PATH" >&2; exit 2; }
OUT="${OUT:-$ROOT/.gpudata/out}"
mkdir -p "$OUT"
LOG="$OUT/session.log"; FIG="$OUT/figures.txt"
WORK="${WORK:-$(mktemp -d /tmp/gpu_session.XXXXXX)}"
PYDEPS="${ARCHSCALE_PYDEPS:-$ROOT/.pydeps}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [ -d "$PYDEPS" ]; then export PYTHONPATH="$PYTHONPATH:$PYDEPS" ARCHSCALE_PYDEPS="$PYDEPS"; fi
SMOKE=0; [ "$mode" = smoke ] && SMOKE=1
BUDGET_S="${BUDGET_S:-$([ $SMOKE = 1 ] && echo 1500 || echo 540)}"
FAILED=0
T0=$SECONDS

say() { echo "$*" | tee -a "$LOG"; }

# step NAME LIMIT_S CMD...: runs CMD under min(LIMIT_S, what is left of BUDGET_S); logs as it goes
step() {
  local name="$1" limit="$2"; shift 2
  local left=$((BUDGET_S - (SECONDS - T0)))
  if [ "$left" -lt 30 ]; then echo "$name: skipped, ${left}s of BUDGET_S left" | tee -a "$LOG" >>"$FIG"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  say "=== $name: $* (limit ${limit}s, $(date -u +%H:%M:%S))"
  local t=$SECONDS part="$WORK/$name.out"
  timeout --kill-after=10 "$limit" "$@" >"$part" 2>&1 &
  local pid=$!
  tail -n +1 --pid=$pid -f "$part" >>"$LOG" 2>/dev/null   # copied to session.log as it is written
  wait $pid; local rc=$?
  local status=ok; [ $rc -ne 0 ] && status="FAILED rc=$rc"; [ $rc -eq 124 ] && status="TIMEOUT after ${limit}s"
  [ $rc -ne 0 ] && FAILED=$((FAILED + 1))
  { echo "$name: $status, $((SECONDS - t))s"; tail -n "${TAIL:-4}" "$part" | sed 's/^/    /'; } | tee -a "$LOG" >>"$FIG"
  return 0
}

have_ray() { "$PY" -c "import ray, optuna, pydantic, fvcore" >/dev/null 2>&1; }

find_data() {
  if [ -n "${ARCHSCALE_DATA:-}" ] && [ -f "$ARCHSCALE_DATA/cifar10.npz" ]; then return; fi
  export ARCHSCALE_DATA="$ROOT/.gpudata"
  [ -f "$ARCHSCALE_DATA/cifar10.npz" ] && return
  local pack
  for pack in "$ROOT/.gpudata/cifar_pack.py" "$ROOT/../shared/data/cifar_pack.py"; do
    if [ -f "$pack" ] && [ -f "$ROOT/.gpudata/cifar10.part-a.npz" ]; then
      say "unpacking CIFAR-10 from .gpudata/cifar10.part-*.npz"
      (cd "$ROOT/.gpudata" && "$PY" "$pack" unpack . cifar10.npz) 2>&1 | tee -a "$LOG"; return
    fi
  done
  echo "no cifar10.npz: set ARCHSCALE_DATA, or carry .gpudata/cifar10.part-{a,b}.npz and cifar_pack.py" >&2; exit 2
}

header() {
  say "### gpu_session.sh $mode  $(date -u +%FT%TZ)  commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$LOG" || true
  "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.is_available())" 2>&1 | tee -a "$LOG"
  "$PY" -c "import archscale.trainer, archscale.space; print('archscale from', archscale.__path__[0])" 2>&1 | tee -a "$LOG"
  have_ray && say "ray: $("$PY" -c 'import ray; print(ray.__version__, ray.__file__)')" || say "ray: not importable (search and compound will be skipped)"
}

# ------------------------------------------------------------------ the steps (toy sizes under smoke)
davidnet() {
  if [ $SMOKE = 1 ]; then step davidnet 300 "$PY" benchmarks/davidnet_94.py --runs 1 --epochs 1 --subset 0.5
  else step davidnet 240 "$PY" benchmarks/davidnet_94.py --runs "${RUNS:-5}"; fi
}
public() {
  local script="${AIRBENCH94:-$ROOT/.gpudata/airbench94.py}"
  if [ ! -f "$script" ]; then echo "public: skipped, no airbench94.py at $script (bring a copy)" | tee -a "$LOG" >>"$FIG"; return; fi
  step public-data 120 "$PY" benchmarks/airbench_data.py "$WORK/airbench"
  cp "$script" "$WORK/airbench/airbench94.py"
  if "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    step public 180 bash -c 'cd "$1" && exec "$2" airbench94.py' _ "$WORK/airbench" "$PY"
  else  # airbench94 hard-codes .cuda(): on a CPU only its syntax and its data are checked
    step public 60 "$PY" -c "import ast, sys; ast.parse(open(sys.argv[1]).read()); print('public: airbench94.py parses; runs only on CUDA')" "$WORK/airbench/airbench94.py"
  fi
}
airbench() {
  if [ $SMOKE = 1 ]; then step airbench 300 "$PY" benchmarks/davidnet_94.py --arch airbench94 --epochs 1 --runs 1 --subset 0.5
  else step airbench 120 "$PY" benchmarks/davidnet_94.py --arch airbench94 --epochs "${EPOCHS:-10}" --runs "${RUNS:-5}"; fi
}
gputests() { TAIL=12 step gputests 240 "$PY" -m pytest -m gpu tests/gpu -q -p no:cacheprovider -rs; }
throughput() {
  if [ $SMOKE = 1 ]; then step throughput 300 "$PY" benchmarks/trainer_throughput.py --images 512 --epochs 1 --workers 0 --threads 1 --repeats 1 --jobs 1
  else step throughput 150 "$PY" benchmarks/trainer_throughput.py --workers 0 8 --threads 8 --repeats 1 --jobs 1; fi
}
search() {
  if ! have_ray; then echo "search: skipped, ray/optuna/pydantic/fvcore not importable (bring them: README)" | tee -a "$LOG" >>"$FIG"; return; fi
  local size=(--set train.epochs=2 --set search.num_trials=8)
  [ $SMOKE = 1 ] && size=(--set train.epochs=1 --set search.num_trials=2 --set data.subset=0.2)
  TAIL=8 step search 240 "$PY" -m archscale run examples/cifar10_140k_techniques.yaml --out "$WORK/search" \
    --set search.resources_per_trial.gpu=auto --set search.resources_per_trial.cpu=2 --set search.max_concurrent=6 "${size[@]}"
  "$PY" - "$WORK/search" <<'PYEOF' 2>&1 | tee -a "$LOG" >>"$FIG"
import json, pathlib, sys
hosts = [json.loads(p.read_text()).get("host", {}) for p in pathlib.Path(sys.argv[1]).glob("trials/*/result.json")]
print("    search: GPU shares of completed trials:", sorted(h.get("gpus") for h in hosts))
PYEOF
}
compound() {
  if ! have_ray; then echo "compound: skipped, ray/optuna/pydantic/fvcore not importable" | tee -a "$LOG" >>"$FIG"; return; fi
  local size=(--set train.epochs=3); [ $SMOKE = 1 ] && size=(--set train.epochs=1 --set data.subset=0.2 --set train.batch_size=64)
  TAIL=8 step compound 300 "$PY" -m archscale run examples/cifar10_compound_scaling.yaml --out "$WORK/compound" \
    --set search.stages=null --set space.params.phi=1.0 --set search.sampler=grid \
    --set search.resources_per_trial.gpu=auto --set search.resources_per_trial.cpu=2 --set search.max_concurrent=6 "${size[@]}"
}

workers() {
  if ! have_ray; then echo "workers: skipped, ray/optuna/pydantic/fvcore not importable" | tee -a "$LOG" >>"$FIG"; return; fi
  local gpu=0.5 cpu=2; [ $SMOKE = 1 ] && gpu=0 cpu=1   # smoke: two CPU workers (gloo)
  TAIL=6 step workers 240 "$PY" -m archscale run examples/quickstart.yaml --out "$WORK/workers" \
    --set search.num_trials=2 --set search.max_concurrent=1 --set train.epochs=2 \
    --set search.resources_per_trial.workers=2 --set search.resources_per_trial.cpu=$cpu \
    --set search.resources_per_trial.gpu=$gpu
  "$PY" - "$WORK/workers" <<'PYEOF' 2>&1 | tee -a "$LOG" >>"$FIG"
import json, pathlib, sys
hosts = [json.loads(p.read_text()).get("host", {}) for p in pathlib.Path(sys.argv[1]).glob("trials/*/result.json")]
print("    workers: per trial (backend, devices):",
      [(h.get("backend"), [w.get("device") for w in h.get("worker_hosts", [])]) for h in hosts])
PYEOF
}

dispatch() {
  if ! have_ray; then echo "dispatch: skipped, ray/optuna/pydantic/fvcore not importable" | tee -a "$LOG" >>"$FIG"; return; fi
  if [ $SMOKE = 1 ]; then TAIL=30 step dispatch 600 "$PY" benchmarks/dispatch_overhead.py --job airbench --device cpu --epochs 1 --subset 0.02 --trials 2 --reps 1
  else TAIL=30 step dispatch 240 "$PY" benchmarks/dispatch_overhead.py --job airbench --device cuda --trials 8 --reps 1; fi
}

case "$mode" in
  smoke)
    "$PY" benchmarks/toy_data.py "$WORK/data" >/dev/null
    export ARCHSCALE_DATA="$WORK/data"
    header; davidnet; public; airbench; gputests; throughput; search; dispatch; compound; workers ;;
  all)
    find_data; header; davidnet; public; airbench; gputests; throughput; search; dispatch; compound; workers ;;
  davidnet|public|airbench|gputests|throughput|search|dispatch|compound|workers)
    find_data; header; "$mode" ;;
  *)
    echo "unknown step '$mode'" >&2; exit 2 ;;
esac
say "### done in $((SECONDS - T0))s, $FAILED step(s) failed; figures in $FIG"
[ "$FAILED" -eq 0 ]
