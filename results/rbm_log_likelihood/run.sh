#!/usr/bin/env bash
# Log-likelihood of 784-500 RBMs on binarised Fashion-MNIST, bracketed by AIS and RAISE: CD-1, CD-3
# and CD-25 (configs/rbm500_ais.yaml: Salakhutdinov & Murray 2008's setting, whose MNIST figures are
# -125.5, -105.5 and -86.3 nats), then PCD, parallel tempering and centring at the compute of CD-25,
# each under a constant rate and under a decayed one (the _decay rows).
# Writes results.jsonl (one evaluate summary per sampler) and the run folders. From the repository root:
#   bash results/rbm_log_likelihood/run.sh [DATA_ROOT] [EPOCHS_CD25]
# SUMMARY_ONLY=1 skips training and evaluation and rewrites results.md from the run folders of an
# earlier full run on this machine (cd{k}/lightning_logs: not committed, so not in a fresh clone).
set -euo pipefail
ROOT=${1:-/usr/share/datasets/fashion-mnist}
EPOCHS_CD25=${2:-10}  # CD-25 costs ~10x a CD-1 epoch; the paper trained far longer
OUT=results/rbm_log_likelihood
DECAY="--model.pretrain_lr_schedule linear --model.final_momentum 0.5"
# name|epochs|options: CD-1 and CD-3 as in the paper; then samplers at the compute of CD-25, the same
# epochs and 2,500 Gibbs sweeps per update (chains x steps x temperatures: 100 x 25 x 1, or 100 x 5 x 5)
SAMPLERS=(  # the equal-compute ones first, the cheap CD-1 and CD-3 last
  "cd25|$EPOCHS_CD25|--model.cd_k 25"
  "pcd25|$EPOCHS_CD25|--model.cd_k 25 --model.persistent true"
  "pt5x5|$EPOCHS_CD25|--model.cd_k 5 --model.pt_temperatures 5 --model.pcd_chains 100"
  "centred_cd25|$EPOCHS_CD25|--model.cd_k 25 --model.centring true"
  # persistent chains take smaller steps (Tieleman 2008 decays the rate): the rate decayed linearly
  # and the momentum held at 0.5; CD-25 the same way, for a like-for-like comparison
  "pcd25_decay|$EPOCHS_CD25|--model.cd_k 25 --model.persistent true $DECAY"
  "cd25_decay|$EPOCHS_CD25|--model.cd_k 25 $DECAY"
  "centred_cd25_decay|$EPOCHS_CD25|--model.cd_k 25 --model.centring true $DECAY"
  "pt5x5_decay|$EPOCHS_CD25|--model.cd_k 5 --model.pt_temperatures 5 --model.pcd_chains 100 $DECAY"
  "cd3|20|--model.cd_k 3"
  "cd1|20|--model.cd_k 1"
)
ONLY=${ONLY:-}  # e.g. ONLY="pcd25 pt5x5" runs those only; the table keeps the newest row of each sampler
for entry in "${SAMPLERS[@]}"; do
  IFS='|' read -r name epochs options <<< "$entry"
  [ "${SUMMARY_ONLY:-0}" = 1 ] && break
  [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]] && continue
  # shellcheck disable=SC2086  # the options are words
  python train.py fit --config configs/rbm500_ais.yaml --data.class_path dbn_init.FashionMNISTDataModule \
    --data.root "$ROOT" --data.download false $options --model.pretrain_epochs "$epochs" \
    --trainer.default_root_dir "$OUT/$name"
  run=$(ls -td "$OUT/$name"/lightning_logs/version_* | head -1)
  python -m dbn_init.experiments.evaluate "$run/pretrained.safetensors" --dataset fashion_mnist --root "$ROOT" --binarize \
    --raise-images 1000 | tee "$OUT/$name.txt" | tail -1 | python -c "
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
d = json.load(sys.stdin)
logs = EventAccumulator('$run').Reload()
swap = logs.Scalars('rbm1/pt_swap_rate')[-1].value if 'rbm1/pt_swap_rate' in logs.Tags()['scalars'] else None
d.update(sampler='$name', epochs=$epochs, options='$options', pt_swap_rate=swap)
print(json.dumps(d))" >> "$OUT/results.jsonl"
done

# results.md: the table, the independent-pixel baseline, the stage-end AIS figure from the logs.
python - "$ROOT" "$OUT" <<'PY'
import json, shutil, sys
from pathlib import Path
from dbn_init.data import FashionMNISTDataModule

root, out = sys.argv[1], Path(sys.argv[2])
dm = FashionMNISTDataModule(root=root, download=False, binarize=True)
dm.setup("fit")
p = dm.pretrain_x.mean(0).clamp(1e-3, 1 - 1e-3)
base = float((dm.test_x * p.log() + (1 - dm.test_x) * (1 - p).log()).sum(1).mean())
rows = ["| sampler | epochs | Gibbs sweeps per update | log Z (3-s.e. interval) | test log p(v), AIS | "
        "1,000 test images: RAISE <= log p(v) <= AIS | train log p(v) | PT swap rate |",
        "|---|---|---|---|---|---|---|---|"]
latest = {}  # a rerun of a sampler appends its row; the newest one per sampler is the table's
for line in (out / "results.jsonl").read_text().splitlines():
    r = json.loads(line)
    latest[r.get("sampler") or f"cd{r['cd_k']}"] = r
SWEEPS = {"cd1": "100 x 1", "cd3": "100 x 3", "cd25": "100 x 25", "pcd25": "100 x 25", "pt5x5": "100 x 5 x 5",
          "centred_cd25": "100 x 25", "cd25_decay": "100 x 25", "pcd25_decay": "100 x 25",
          "centred_cd25_decay": "100 x 25", "pt5x5_decay": "100 x 5 x 5"}
for name, r in sorted(latest.items(), key=lambda item: list(SWEEPS).index(item[0]) if item[0] in SWEEPS else 99):
    run = Path(r["weights"]).parent  # a run of an earlier session may be gone: its pictures are copied already
    swap = "" if r.get("pt_swap_rate") is None else f"{r['pt_swap_rate']:.2f}"
    low = "-inf" if r["log_z_low"] is None else f"{r['log_z_low']:.1f}"
    bracket = (f"{r['raise_mean_log_prob']:.1f} <= . <= {r['raise_ais_mean_log_prob']:.1f}"
               if r.get("raise_mean_log_prob") is not None else "")
    rows.append(f"| {name} | {r['epochs']} | {SWEEPS.get(name, '')} | {r['log_z']:.1f} ({low}, {r['log_z_high']:.1f}) | "
                f"{r['mean_log_prob']:.1f} | {bracket} | {r['train_mean_log_prob']:.1f} | {swap} |")
    for picture in ("filters", "samples") if run.is_dir() else ():
        shutil.copy(run / "pictures" / f"rbm1_{picture}.png", out / f"{name}_{picture}.png")
text = ["Average log-probability per image (nats) of 784-500 Bernoulli RBMs on binarised Fashion-MNIST",
        "(pixels > 0.5), batch 100, learning rate 0.05. Made by `bash results/rbm_log_likelihood/run.sh`.", "",
        *rows, "",
        "AIS: 100 chains, 10,000 betas, base-rate start. It tends to underestimate log Z, so its log p(v) is",
        "optimistic (Salakhutdinov & Murray 2008); a log Z interval whose lower end is -inf means a few chains",
        "dominate the weights. RAISE (Burda, Grosse & Salakhutdinov 2015; reverse annealing from each test",
        "image over the same 10,000 betas) errs the other way: the two bracket the test log-likelihood.",
        "Equal compute: the rows from cd25 on train as many epochs with as many Gibbs sweeps per update",
        "(chains x steps x temperatures). PT: parallel tempering, 5 inverse temperatures from 0.9 to 1.",
        "_decay: the rate decayed linearly over the epochs and the momentum held at 0.5 (the other rows:",
        "a constant rate, momentum 0.9 from epoch 6).",
        f"Independent pixels (each pixel Bernoulli with its training mean): {base:.1f} nats per test image.",
        "Filters and 1000-step Gibbs samples: {sampler}_filters.png, {sampler}_samples.png."]
(out / "results.md").write_text("\n".join(text) + "\n")
print("\n".join(text))
PY
