#!/usr/bin/env bash
# Everything a lent GPU is used for, as one call (it has minutes, not hours): the GPU epoch
# benchmark (issue 16: benchmarks/gpu_epoch.py), then best_mlp runs sharing the card (issue 18:
# experiments/best_mlp_runs.py). Each part has its own time limit and writes as it goes, so a part
# that runs late costs only itself. Run from the repository root:
#
#   OUT=studies/gpu bash experiments/gpu_lease.sh ../shared/data/cifar10-jpeg
#
# On a machine without the project installed, wheels in .whl/ are installed to /tmp/site first
# (jsonargparse and its two needs: the GPU image has torch and Lightning). Smoke check on a CPU:
#   SMOKE=1 OUT=/tmp/lease bash experiments/gpu_lease.sh ../shared/data/cifar10-jpeg
set -u
DATA=${1:-../shared/data/cifar10-jpeg}
OUT=${OUT:-studies/gpu}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} DEEPTRAIN_CACHE_DIR=${DEEPTRAIN_CACHE_DIR:-/tmp/deeptrain-cache} PYTHONUNBUFFERED=1
PY=${PY:-python3}

if [ -n "${SMOKE:-}" ]; then
  BENCH=(--device cpu --images 2000 --repeats 1 --batch-sizes 1000 --small-batch 0)
  SMALL=(--device cpu --images 640 --repeats 1 --batch-sizes)
  RUNS=(exercise_shape:0:1 no_dropout:0:1); DEADLINE=120
else
  BENCH=(--repeats 2 --small-batch 0)  # part 1: batch 128 and 1000 (on an H200: ~120 s with the warm-ups)
  SMALL=(--images 11250 --repeats 1 --batch-sizes)  # part 2: batch 32, four compile modes (~100 s)
  RUNS=(full:0:60 full:1:60 full:2:60 full:3:60 full:4:60
        no_augmentation:0:60 no_batchnorm:0:60 no_dropout:0:60 no_label_smoothing:0:60
        no_weight_decay:0:60 no_onecycle:0:60 exercise_shape:0:60
        full:0:120 wide:0:60 deep:0:60)
  DEADLINE=${DEADLINE:-230}  # with both parts above, the call stays under the 10-minute limit
fi

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1; nproc; lscpu | grep "Model name"
  $PY -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"; } > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

# The CIFAR-10 cache is decoded on the CPUs while the benchmark (random bytes) uses the GPU.
$PY -c "from deeptrain.data.sources import load_source; load_source('image_folder', '$DATA')" > "$OUT/decode.log" 2>&1 &
timeout 150 $PY benchmarks/gpu_epoch.py "${BENCH[@]}" --json "$OUT/gpu_epoch.json" 2>&1 | tee "$OUT/gpu_epoch.txt" | grep -v Warning
timeout 150 $PY benchmarks/gpu_epoch.py "${SMALL[@]}" --json "$OUT/gpu_epoch_small.json" 2>&1 | tee "$OUT/gpu_epoch_small.txt" | grep -v Warning
wait

timeout $((DEADLINE + 60)) $PY experiments/best_mlp_runs.py --data_dir "$DATA" --out /tmp/best_mlp_runs \
  --runs "${RUNS[@]}" --parallel ${#RUNS[@]} --deadline "$DEADLINE" > "$OUT/runs.txt" 2>&1
tail -25 "$OUT/runs.txt"
tar czf "$OUT/best_mlp_runs.tgz" --exclude='*.ckpt' -C /tmp/best_mlp_runs .
ls -la "$OUT"
