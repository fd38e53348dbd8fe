#!/bin/bash
# Device sweep 2: the shipped ladder recipe with the EMA / Mixup / CutMix levers, and two stronger
# teachers, in parallel, each cut at LIMIT seconds (checkpoints are written every epoch).
set -u
python3 -m zipfile -e .gpu/data.zip /tmp/d || exit 1; DATA=/tmp/d/data
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=3
nvidia-smi -L; nproc
python3 -c "import torch, pydantic; print('torch', torch.__version__, torch.cuda.is_available())" || exit 1
LIMIT=${LIMIT:-480}; R=/tmp/sweep; rm -rf $R; mkdir -p $R
S="--config models/configs/spic-split-s16-ladder.json"
M="--set cutmix_alpha=1.0 --set mixup_alpha=0.2"
T0=$(date +%s)
timeout $LIMIT python3 -m models.train --data $DATA --out $R/A --device cuda $S --set ema_decay=0.999 > $R/A.log 2>&1 &
timeout $LIMIT python3 -m models.train --data $DATA --out $R/B --device cuda $S --set ema_decay=0.999 $M > $R/B.log 2>&1 &
timeout $LIMIT python3 -m models.train --data $DATA --out $R/C --device cuda $S --set ema_decay=0.9995 --set cutmix_alpha=1.0 > $R/C.log 2>&1 &
timeout $LIMIT python3 -m models.train_reference --data $DATA --out $R/TH --device cuda --set epochs=60 --set eval_every=10 --set ema_decay=0.999 $M > $R/TH.log 2>&1 &
timeout $LIMIT python3 -m models.train_reference --data $DATA --out $R/TF --device cuda --set model=resnet18 --set epochs=60 --set eval_every=10 --set ema_decay=0.999 $M > $R/TF.log 2>&1 &
wait
echo "all done after $(( $(date +%s) - T0 )) s"
python3 - <<'PYEOF'
import os, torch
R, OUT = "/tmp/sweep", os.environ["OUT"]
for name in ("A", "B", "C", "TH", "TF"):
    src = f"{R}/{name}/checkpoint.pt"
    if not os.path.exists(src):
        print(name, "no checkpoint"); continue
    ck = torch.load(src, map_location="cpu", weights_only=False)
    for k in ("optimizer", "scheduler", "torch_rng"):
        ck.pop(k, None)
    torch.save(ck, f"{OUT}/{name}.pt")
    print(name, "epoch", ck.get("epoch"), "wall", ck.get("wall_seconds"), os.path.getsize(f"{OUT}/{name}.pt"))
PYEOF
tar czf $OUT/runs.tgz -C $R --exclude='*.pt' --exclude='*.onnx' --exclude='*.tmp' .; for f in $R/*.log; do echo "== $f"; tail -c 1200 $f; done
ls -la $OUT
