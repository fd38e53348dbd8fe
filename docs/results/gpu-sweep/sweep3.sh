#!/bin/bash
# Device sweep 3: reference teachers on the original Imagenette JPEGs, staged in three parts
# (/tmp/stage/part.aa and .ab by earlier calls, .ab's sibling .ac carried with this one).
set -u
cp .gpudata2/part.ac /tmp/stage/ || exit 1
mkdir -p /tmp/orig && cat /tmp/stage/part.* | tar xf - -C /tmp/orig || exit 1
DATA=/tmp/orig/imagenette; ls $DATA/train | wc -l; find $DATA -name '*.JPEG' | wc -l
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=3
nvidia-smi -L; nproc
LIMIT=${LIMIT:-330}; EP=${EP:-50}; R=/tmp/sweep3; rm -rf $R; mkdir -p $R
T="--set epochs=$EP --set eval_every=10"
T0=$(date +%s)
timeout $LIMIT python3 -m models.train_reference --data $DATA --out $R/T1 --device cuda $T > $R/T1.log 2>&1 &
timeout $LIMIT python3 -m models.train_reference --data $DATA --out $R/T2 --device cuda $T --set model=resnet18 > $R/T2.log 2>&1 &
timeout $LIMIT python3 -m models.train_reference --data $DATA --out $R/T3 --device cuda $T --set model=resnet18 --set ema_decay=0.999 > $R/T3.log 2>&1 &
timeout $LIMIT python3 -m models.train_reference --data $DATA --out $R/T4 --device cuda $T --set ema_decay=0.999 > $R/T4.log 2>&1 &
wait
echo "all done after $(( $(date +%s) - T0 )) s"
for n in T1 T2 T3 T4; do echo "== $n"; grep -h '"val' $R/$n/log.jsonl | tail -6; tail -c 300 $R/$n.log; done
tar czf $OUT/runs3.tgz -C $R --exclude='*.pt' --exclude='*.onnx' --exclude='*.tmp' .
# The best finished teacher's bundle comes back in 11 MB pieces (the device returns files up to ~12 MB).
BEST=$(EP=$EP python3 - <<'PY'
import json, glob, os
best = None
for p in glob.glob("/tmp/sweep3/T*/log.jsonl"):
    for line in open(p):
        v = json.loads(line).get("val", {})
        if v.get("epoch") == int(os.environ.get("EP", "50")) and "val_top1_clean" in v:
            if best is None or v["val_top1_clean"] > best[0]:
                best = (v["val_top1_clean"], os.path.dirname(p))
print(best[1] if best else "")
PY
)
echo "best: $BEST"
[ -n "$BEST" ] && tar cf - -C $BEST bundle | split -b 11000000 - $OUT/best.$(basename $BEST).tar.
ls -la $OUT
