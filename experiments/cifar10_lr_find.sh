#!/usr/bin/env bash
# LR range test (`deeptrain lr-find`) of each CIFAR-10 config of exercise 8, one after another
# (one thread each: the machine is shared). Output: the printed suggestions (copy them into
# reports/cifar10/tuning.md) and one PNG per config under reports/cifar10/runs/lr_find/ (gitignored).
#   DEEPTRAIN_DATA_DIR=../shared/data bash experiments/cifar10_lr_find.sh onecycle selu batchnorm best
set -euo pipefail
DATA_DIR=${CIFAR10_DIR:-${DEEPTRAIN_DATA_DIR:-../shared/data}/cifar10-jpeg}
OUT=reports/cifar10/runs/lr_find
mkdir -p "$OUT"
for name in "${@:-baseline batchnorm selu alpha_dropout onecycle best}"; do
  for n in $name; do
    echo "=== $n"
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 deeptrain lr-find --config "configs/cifar10/$n.yaml" --out "$OUT/$n.png" \
      --data.dataset image_folder --data.data_dir "$DATA_DIR"
  done
done
