#!/usr/bin/env bash
# SSLD on the digits (docs/training.md, "SSLD"): for each seed, a PP-LCNet x1.0 teacher
# trained on 300 labelled images (300 steps), then PP-LCNet x0.25 trained 900 steps on the
# labels alone and 900 steps by SSLD from the teacher on those images plus 1,197 unlabelled
# ones.
# Prints the held-out accuracy after the last step, one line per seed, and the means.
# Needs target/data/digits (scripts/data_setup.py) and a built oar (cargo build --bin oar).
#
#     bash scripts/ssld_digits.sh [SEEDS...]      (default: 1 2 3; OUT=/tmp/oar-ssld)
set -euo pipefail
cd "$(dirname "$0")/.."
OAR=${OAR:-target/debug/oar}
OUT=${OUT:-/tmp/oar-ssld}
SEEDS=${*:-1 2 3}
mkdir -p "$OUT"
# The first 600 digits of a fixed shuffle are labelled (half of them held out for
# evaluation by each run's seeded split); the other 1,197 lose their labels.
python3 - "$OUT" <<'PY'
import json, os, sys
import numpy as np
out = sys.argv[1]
x = np.load("target/data/digits/images.npy"); y = np.load("target/data/digits/labels.npy")
p = np.random.default_rng(0).permutation(len(y))
for d in ("labeled", "unlabeled"):
    os.makedirs(os.path.join(out, d), exist_ok=True)
np.save(os.path.join(out, "labeled/images.npy"), x[p[:600]])
np.save(os.path.join(out, "labeled/labels.npy"), y[p[:600]])
json.dump({"classes": 10}, open(os.path.join(out, "labeled/meta.json"), "w"))
np.save(os.path.join(out, "unlabeled/images.npy"), x[p[600:]])
PY
last() { sed -n 's/^best eval accuracy .*(last \([0-9.]*\)%.*/\1/p' "$1"; }
for s in $SEEDS; do
  data=(--data "$OUT/labeled" --batch 32 --image-size 16 --holdout 0.5 --schedule cosine
        --warmup 20 --seed "$s")
  common=("${data[@]}" --steps 900 --lr 0.01 --eval-every 300)
  # The teacher sees only the seed's labelled training half, as the students do (kept
  # between runs: delete OUT to retrain it).
  teacher="$OUT/teacher-$s/step-00000300/shard-00000-of-00001.safetensors"
  [ -f "$teacher" ] ||
    "$OAR" train lcnet_x1_0 "${data[@]}" --steps 300 --lr 0.02 --eval-every 100 \
      --save "$OUT/teacher-$s" > "$OUT/teacher-$s.log" 2>&1
  "$OAR" train lcnet_x0_25 "${common[@]}" > "$OUT/labels-$s.log" 2>&1
  "$OAR" train lcnet_x0_25 "${common[@]}" --distill-from lcnet_x1_0 \
    --teacher-weights "$teacher" \
    --unlabeled "$OUT/unlabeled" > "$OUT/ssld-$s.log" 2>&1
  echo "seed $s: teacher $(last "$OUT/teacher-$s.log")%, labels only $(last "$OUT/labels-$s.log")%, SSLD $(last "$OUT/ssld-$s.log")%"
done | tee "$OUT/summary.txt"
awk '{gsub("%,?",""); t+=$4; l+=$7; s+=$9; n++} END {printf "mean over %d seeds: teacher %.2f%%, labels only %.2f%%, SSLD %.2f%%\n", n, t/n, l/n, s/n}' "$OUT/summary.txt"
