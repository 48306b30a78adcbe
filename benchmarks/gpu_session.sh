#!/usr/bin/env bash
# The GPU figures that benchmarks/RESULTS.md still lacks (issue 17), in one prepared run of about
# ten minutes for a session lent a GPU. Run from the repository root with the project's
# environment, e.g. `bash benchmarks/gpu_session.sh` (OUT: where the logs go; PYTHON: the
# interpreter). Each part has its own time limit so one slow part cannot eat the others' time;
# the logs say what ran and how long. Nothing here downloads anything.
#
#   1. drug networks: sequential vs stacked fits on the GPU, 30 / 300 / 3,000 target fine-tunes
#      and 200 permutation refits (29 samples, 6,163 genes, 20 epochs), with the roofline; the
#      members are built one stacked chunk at a time, and the sequential time of 3,000 fits is
#      that of its first 300, scaled (the output says so);
#   2. MGMT: one training step per speed option (fp32, bf16, channels_last_3d, cohort resident
#      as float16), ResNet-50 at 70x86x86, batch 12, and the paper protocol extrapolated;
#   3. MGMT: 1, 2 and 4 trainings sharing the GPU (aggregate steps/s).
set -u
OUT=${OUT:-benchmarks/gpu_out}
PYTHON=${PYTHON:-python}
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT"

part() {  # part NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    echo "== $name (limit ${limit}s) $(date -u +%FT%TZ)" | tee -a "$OUT/summary.txt"
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    echo "== $name rc $rc in $((SECONDS - start))s" | tee -a "$OUT/summary.txt"
    tail -n 25 "$OUT/$name.txt"
}

{ nvidia-smi; "$PYTHON" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } \
    > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"

part drug_stacked 300 "$PYTHON" benchmarks/bench_drug.py --device cuda --samples 300 --epochs 2 \
    --genes 6163 --batch-sizes 32 --stack-fits 30 300 3000 --sequential-fits 300 \
    --stack-permutations 200 --stack-epochs 20
part mgmt_protocol 180 "$PYTHON" benchmarks/bench_mgmt.py --device cuda --protocol --calls 5 \
    --json "$OUT/mgmt_protocol.json"
part mgmt_sharing 120 "$PYTHON" benchmarks/bench_mgmt.py --device cuda --share 1 2 4 \
    --share-steps 20 --json "$OUT/mgmt_sharing.json"
