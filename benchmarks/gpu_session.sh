#!/usr/bin/env bash
# The GPU measurements of seed 003 / airbench, one step per call (each fits a 10-minute call):
#
#   ARCHSCALE_DATA=/root/data bash benchmarks/gpu_session.sh davidnet    # 5 runs x 24 epochs, the seed's winner
#   ARCHSCALE_DATA=/root/data bash benchmarks/gpu_session.sh airbench    # airbench94's network, archscale's trainer
#   ARCHSCALE_DATA=/root/data AIRBENCH94=path/to/airbench94.py bash benchmarks/gpu_session.sh public
#                                                                        # airbench94's own script, unchanged
#   ARCHSCALE_DATA=/root/data bash benchmarks/gpu_session.sh throughput  # CIFAR-10 + ResNet-9, archscale vs DataLoader
#
# ARCHSCALE_DATA must hold cifar10.npz (see ../shared/data/README.md for moving it in two parts).
# airbench94.py (KellerJordan/cifar10-airbench) is not part of this project: bring your own copy;
# `public` runs it in a scratch directory whose cifar10/*.pt are written from the same npz
# (benchmarks/airbench_data.py), so it needs no network. Every step prints nvidia-smi's GPU line
# first, so figures from different calls can be matched to one GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
step="${1:?usage: gpu_session.sh davidnet|airbench|public|throughput}"
: "${ARCHSCALE_DATA:?set ARCHSCALE_DATA to the folder holding cifar10.npz}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
case "$step" in
  davidnet)
    python benchmarks/davidnet_94.py --runs "${RUNS:-5}" ;;
  airbench)
    python benchmarks/davidnet_94.py --arch airbench94 --epochs "${EPOCHS:-10}" --runs "${RUNS:-5}" ;;
  public)
    : "${AIRBENCH94:?set AIRBENCH94 to a copy of airbench94.py}"
    work="${WORK:-/tmp/airbench_work}"
    python benchmarks/airbench_data.py "$work"
    cp "$AIRBENCH94" "$work/airbench94.py"
    (cd "$work" && python airbench94.py) ;;
  throughput)
    python benchmarks/trainer_throughput.py --workers 0 4 8 --repeats "${REPEATS:-2}" ;;
  *)
    echo "unknown step '$step': davidnet, airbench, public or throughput" >&2; exit 2 ;;
esac
