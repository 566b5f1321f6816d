#!/usr/bin/env bash
# Every CUDA check and measurement in one go, for a lent GPU machine with no internet (its python3 holds
# torch): kornia, kornia_rs and tomli_w travel as wheels in .whl/, MNIST as .gz IDX files in .gpu-data/mnist.
#   bash bench/cuda_suite.sh          (every step)
#   ONLY="overhead-auto profile" bash bench/cuda_suite.sh   (just those)
# Each step's log goes to $LOGS/NAME.log; at the end they are packed into $OUT/logs.tgz (one file: the device tool
# returns at most eight) and the tail of each is printed.
set -u
OUT=${OUT:-/tmp/cuda-suite}
LOGS=${LOGS:-/tmp/cuda-suite-logs}
mkdir -p "$OUT" "$LOGS"
trap 'tar czf "$OUT/logs.tgz" -C "$LOGS" --exclude="*.safetensors" .' EXIT
export PYTHONUNBUFFERED=1 BABYSIT_DATA=$PWD/.gpu-data
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD:/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, kornia; print('torch', torch.__version__, 'kornia', kornia.__version__, torch.cuda.get_device_name())"

step() {  # step SECONDS NAME COMMAND...: run with a time limit, log to $OUT/NAME.log, say how it ended
  local limit=$1 name=$2; shift 2
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi  # ONLY="a b": just those steps
  local t0=$SECONDS
  echo "=== $name: $*"
  timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  grep -v '^W[0-9]' "$LOGS/$name.log" | tail -n "${TAIL:-25}"  # (torch.compile's recompile warnings left out)
  echo "=== $name: rc $rc, $((SECONDS - t0)) s"
}

step 90 tests python3 -m pytest -q -x -p no:cacheprovider tests/test_hardware.py tests/test_start.py \
    tests/train/test_step.py tests/train/test_step_cost.py tests/test_writer.py
TAIL=6 step 80 overhead-lecture python3 bench/loop_overhead.py --device cuda --data mnist --epochs 3 \
    --spec lecture --batch-size 64 --lr 0.05
TAIL=6 step 50 overhead-auto python3 bench/loop_overhead.py --device cuda --data mnist --epochs 3
TAIL=4 step 50 overhead-auto-noprobes python3 bench/loop_overhead.py --device cuda --data mnist --epochs 3 \
    --set monitor.stats_every=0
TAIL=4 step 50 overhead-auto-sync1000 python3 bench/loop_overhead.py --device cuda --data mnist --epochs 3 \
    --set monitor.stats_every=0 --set train.sync_every=1000 --set checkpoint.every=100000
TAIL=3 step 60 profile python3 bench/profile_fit.py --data mnist --epochs 2 --device cuda --top 40
TAIL=3 step 60 profile-lecture python3 bench/profile_fit.py --data mnist --epochs 2 --device cuda --top 40 \
    --set model.spec=lecture --set train.batch_size=64 --set optim.lr=0.05
TAIL=20 step 60 train-defaults python3 -m babysit train --data.name=mnist --out "$LOGS/runs" --name defaults
TAIL=8 step 170 soak-deterministic python3 scripts/kill_resume_soak.py --kills 3 \
    --train-arg=--train.deterministic=true
TAIL=8 step 150 time-to-accuracy python3 bench/time_to_accuracy.py --data mnist --seeds 5 --only babysit,bn \
    --json "$LOGS/tta_mnist.json"
TAIL=6 step 90 time-to-accuracy-lr0.1 python3 bench/time_to_accuracy.py --data mnist --seeds 5 --only babysit \
    --set optim.lr=0.1
TAIL=10 step 150 options python3 bench/hardware_options.py --data mnist --epochs 3 --device cuda
