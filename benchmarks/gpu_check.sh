#!/usr/bin/env bash
# GPU checks for a machine with one CUDA device (CI has none and never runs this).
#   bash benchmarks/gpu_check.sh [FASHION_MNIST_ROOT]
# 1. the CD gradient's distance from fp32 under bf16 autocast and TF32, and ms per CD step;
# 2. the quickstart on the GPU; 3. one Fashion-MNIST DBN fit in fp32, then with TF32 matmuls and
# bf16-mixed precision, printing wall time per run.
set -euo pipefail
cd "$(dirname "$0")/.."
root="${1:-/usr/share/datasets/fashion-mnist}"
python - <<'PY'
import torch, sys
if not torch.cuda.is_available():
    sys.exit("no CUDA device: this script checks the GPU path only")
print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)
PY
python -m pytest -q tests/test_data.py -k "gpu"  # batches cut on the device, no host copies
python benchmarks/cd_precision.py --data-root "$root"  # CD gradient under bf16 / TF32 vs fp32, ms per step
common=(--trainer.accelerator gpu --trainer.devices 1 --trainer.enable_progress_bar false)
time python train.py fit --config configs/quickstart.yaml "${common[@]}"
fashion=(--config configs/fashion_mnist_dbn.yaml --data.root "$root" --data.download false "${common[@]}")
for precision in 32-true bf16-mixed; do
    echo "== Fashion-MNIST DBN, precision $precision"
    time python train.py fit "${fashion[@]}" --trainer.precision "$precision"
done
echo "== TF32 matmuls (fp32 storage)"
time python -c "import torch, sys; torch.backends.cuda.matmul.allow_tf32 = True; from dbn_init.cli import main; sys.argv[0] = 'train.py'; main(['fit', *sys.argv[1:]])" "${fashion[@]}"
