#!/usr/bin/env bash
# The CUDA checks run on a lent GPU machine (see BENCHMARKS.md): GPU tests, then the paper-width U-Net
# (base_channels 64) trained on the membrane data. Expects .whl/ (missing wheels) and .shared/ (a link
# to ../shared) carried beside the repo. Results land in $OUT.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
export PYTHONUNBUFFERED=1
nvidia-smi -L | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_train.py 2>&1 | tail -5 | tee "$OUT/pytest.txt"
sed 's#../../../shared/data#../../.shared/data#' configs/data/membrane.yaml > configs/data/membrane_gpu.yaml
python3 -m pixelwise train configs/membrane_unet.yaml --out "$OUT/membrane64" --quiet \
  --set data.dataset=configs/data/membrane_gpu.yaml --set model.params.base_channels=64 \
  --set train.epochs=200 --set train.val_every=20 --set train.num_workers=8 2>&1 | tail -30 | tee "$OUT/membrane64.log"
python3 -m pixelwise evaluate --model "$OUT/membrane64/best.ckpt" --data configs/data/membrane_gpu.yaml \
  --split val --out "$OUT/membrane64_val.json" --quiet 2>&1 | tail -8 | tee -a "$OUT/membrane64.log"
rm -f "$OUT"/membrane64/*.ckpt
