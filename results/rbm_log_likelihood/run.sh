#!/usr/bin/env bash
# AIS log-likelihood of 784-500 RBMs trained with CD-1, CD-3 and CD-25 on binarised Fashion-MNIST
# (configs/rbm500_ais.yaml: Salakhutdinov & Murray 2008's setting, whose MNIST figures are
# -125.5, -105.5 and -86.3 nats). Writes results.jsonl (one evaluate summary per CD-k) and the
# run folders. From the repository root:
#   bash results/rbm_log_likelihood/run.sh [DATA_ROOT] [EPOCHS_CD25]
set -euo pipefail
ROOT=${1:-/usr/share/datasets/fashion-mnist}
EPOCHS_CD25=${2:-10}  # CD-25 costs ~10x a CD-1 epoch; the paper trained far longer
OUT=results/rbm_log_likelihood
for k in 1 3 25; do
  epochs=20
  [ "$k" = 25 ] && epochs=$EPOCHS_CD25
  python train.py fit --config configs/rbm500_ais.yaml --data.class_path dbn_init.FashionMNISTDataModule \
    --data.root "$ROOT" --data.download false --model.cd_k "$k" --model.pretrain_epochs "$epochs" \
    --trainer.default_root_dir "$OUT/cd$k"
  run=$(ls -td "$OUT/cd$k"/lightning_logs/version_* | head -1)
  python -m dbn_init.evaluate "$run/pretrained.safetensors" --dataset fashion_mnist --root "$ROOT" --binarize \
    | tee "$OUT/cd$k.txt" | tail -1 | python -c "import json,sys; d=json.load(sys.stdin); d.update(cd_k=$k, epochs=$epochs); print(json.dumps(d))" >> "$OUT/results.jsonl"
done
