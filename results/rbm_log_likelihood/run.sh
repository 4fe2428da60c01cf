#!/usr/bin/env bash
# AIS log-likelihood of 784-500 RBMs trained with CD-1, CD-3 and CD-25 on binarised Fashion-MNIST
# (configs/rbm500_ais.yaml: Salakhutdinov & Murray 2008's setting, whose MNIST figures are
# -125.5, -105.5 and -86.3 nats). Writes results.jsonl (one evaluate summary per CD-k) and the
# run folders. From the repository root:
#   bash results/rbm_log_likelihood/run.sh [DATA_ROOT] [EPOCHS_CD25]
# SUMMARY_ONLY=1 skips training and evaluation and rewrites results.md from the run folders of an
# earlier full run on this machine (cd{k}/lightning_logs: not committed, so not in a fresh clone).
set -euo pipefail
ROOT=${1:-/usr/share/datasets/fashion-mnist}
EPOCHS_CD25=${2:-10}  # CD-25 costs ~10x a CD-1 epoch; the paper trained far longer
OUT=results/rbm_log_likelihood
for k in $([ "${SUMMARY_ONLY:-0}" = 1 ] || echo 1 3 25); do
  epochs=20
  [ "$k" = 25 ] && epochs=$EPOCHS_CD25
  python train.py fit --config configs/rbm500_ais.yaml --data.class_path dbn_init.FashionMNISTDataModule \
    --data.root "$ROOT" --data.download false --model.cd_k "$k" --model.pretrain_epochs "$epochs" \
    --trainer.default_root_dir "$OUT/cd$k"
  run=$(ls -td "$OUT/cd$k"/lightning_logs/version_* | head -1)
  python -m dbn_init.evaluate "$run/pretrained.safetensors" --dataset fashion_mnist --root "$ROOT" --binarize \
    | tee "$OUT/cd$k.txt" | tail -1 | python -c "import json,sys; d=json.load(sys.stdin); d.update(cd_k=$k, epochs=$epochs); print(json.dumps(d))" >> "$OUT/results.jsonl"
done

# results.md: the table, the independent-pixel baseline, the stage-end AIS figure from the logs.
python - "$ROOT" "$OUT" <<'PY'
import json, shutil, sys
from pathlib import Path
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from dbn_init.data import FashionMNISTDataModule

root, out = sys.argv[1], Path(sys.argv[2])
dm = FashionMNISTDataModule(root=root, download=False, binarize=True)
dm.setup("fit")
p = dm.pretrain_x.mean(0).clamp(1e-3, 1 - 1e-3)
base = float((dm.test_x * p.log() + (1 - dm.test_x) * (1 - p).log()).sum(1).mean())
rows = ["| CD-k | epochs | log Z (3-s.e. interval) | test log p(v) | train log p(v) | val log p(v) at stage end |",
        "|---|---|---|---|---|---|"]
latest = {}  # a rerun of a CD-k appends its row; the newest one per CD-k is the table's
for line in (out / "results.jsonl").read_text().splitlines():
    latest[json.loads(line)["cd_k"]] = json.loads(line)
for r in sorted(latest.values(), key=lambda r: r["cd_k"]):
    run = Path(r["weights"]).parent
    acc = EventAccumulator(str(run)).Reload()
    val = acc.Scalars("rbm1/val_log_prob")[-1].value if "rbm1/val_log_prob" in acc.Tags()["scalars"] else float("nan")
    low = "-inf" if r["log_z_low"] is None else f"{r['log_z_low']:.1f}"
    rows.append(f"| {r['cd_k']} | {r['epochs']} | {r['log_z']:.1f} ({low}, {r['log_z_high']:.1f}) | "
                f"{r['mean_log_prob']:.1f} | {r['train_mean_log_prob']:.1f} | {val:.1f} |")
    for picture in ("filters", "samples"):
        shutil.copy(run / "pictures" / f"rbm1_{picture}.png", out / f"cd{r['cd_k']}_{picture}.png")
text = ["Average log-probability per image (nats) of 784-500 Bernoulli RBMs on binarised Fashion-MNIST",
        "(pixels > 0.5), log Z by AIS (100 chains, 10,000 betas, base-rate start). Made by",
        "`bash results/rbm_log_likelihood/run.sh`.", "", *rows, "",
        f"Independent pixels (each pixel Bernoulli with its training mean): {base:.1f} nats per test image.",
        "A log Z interval whose lower end is -inf means the importance weights are dominated by a few",
        "chains: log Z may be underestimated and log p(v) then overestimated (Salakhutdinov & Murray 2008).",
        "The last column is the stage's own estimate (--model.ais_chains 100: another AIS run, base rates",
        "from 1,000 training images, on the validation split); its distance to the test column is mostly",
        "that AIS uncertainty. Filters and 1000-step Gibbs samples: cd{k}_filters.png, cd{k}_samples.png."]
(out / "results.md").write_text("\n".join(text) + "\n")
print("\n".join(text))
PY
