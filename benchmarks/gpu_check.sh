#!/usr/bin/env bash
# GPU checks for a machine with one CUDA device (CI has none and never runs this).
#   bash benchmarks/gpu_check.sh [FASHION_MNIST_ROOT]
# Sized for about 6 minutes on an H200 (each timed epoch runs in its own subprocess), so that it
# fits twice into a 15-minute lease with the machine's start:
# 1. the CUDA-only tests: batches cut on the device, and no host synchronisation inside a CD step
#    (torch.cuda.set_sync_debug_mode("error"));
# 2. benchmarks/rbm_throughput.py on the GPU: 784->512 CD-1 epochs at batch 128 and 2000 in fp32,
#    with the CUDA-graph floor, the compiled CD step and the peers (rbms, learnergy when installed);
#    then TF32 matmuls and bf16-mixed at batch 2000;
# 3. the CD gradient's distance from fp32 under bf16 autocast and TF32;
# 4. the quickstart end to end on the GPU.
# Peers: `pip install rbms learnergy` (on a machine without an index, carry their wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
root="${1:-/usr/share/datasets/fashion-mnist}"
python - <<'PY'
import torch, sys
if not torch.cuda.is_available():
    sys.exit("no CUDA device: this script checks the GPU path only")
print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)
PY
python -m pytest -q tests/test_data.py tests/test_models.py -k "gpu or cuda"
bench=(python benchmarks/rbm_throughput.py --device cuda --data-root "$root" --rounds 2)
cd_only=--skip=naive_torch,dbn_init_loss,finetune
for batch in 128 2000; do
    echo "== fp32, batch $batch"
    "${bench[@]}" --batch-size "$batch" "$cd_only"
done
echo "== TF32 matmuls, batch 2000"
"${bench[@]}" --batch-size 2000 --matmul-precision high --skip=naive_torch,dbn_init_loss,finetune,learnergy,rbms,compiled_cd
echo "== bf16-mixed stage, batch 2000"
"${bench[@]}" --batch-size 2000 --precision bf16-mixed --skip=naive_torch,cd_grad_sgd,compiled,finetune,learnergy,rbms,matmul_graph
python benchmarks/cd_precision.py --data-root "$root"  # CD gradient under bf16 / TF32 vs fp32, ms per step
time python train.py fit --config configs/quickstart.yaml --trainer.accelerator gpu --trainer.devices 1 \
    --trainer.enable_progress_bar false
