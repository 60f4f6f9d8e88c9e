#!/usr/bin/env bash
# A training burst of the embedded model on a lent GPU machine, as one command (docs/model_card.md,
# "GPU training burst").
#
#   scripts/gpu_burst.sh PACK RUN [--device cuda] [--max-minutes 8] [--batch-size 128] [--seconds 4]
#                        [--lr 2e-3] [--workers N] [--no-amp] [--out DIR] [--python PY] [-- TRAIN-ARGS...]
#   scripts/gpu_burst.sh --fetch-wheels [DIR]   # here, once: the wheels the GPU machine lacks (default cache/wheels)
#   scripts/gpu_burst.sh --carry-size PATH...   # here: working tree + carried paths, against the 64 MiB limit
#
# PACK is a folder from `samstream data pack`; RUN a run folder (resumed when it holds checkpoint.pt).
# Steps: pick a Python (this checkout's .venv when there is one; else python3 with the wheels from
# cache/wheels and an import shim for the samstream namespace, which is what the GPU machine needs),
# unpack PACK to 16-bit WAV stems in a temporary folder, train RUN for --max-minutes with the schedule
# fitted to that time, print steps/s, examples/s and the last losses, and with --out (default: $OUT
# when it is set) write the run folder there as run.tar.part-NN pieces of 15 MiB (a device run returns
# files of at most 16 MiB; checkpoint.pt is ~21 MB) plus burst_summary.json.
# Dry run here: scripts/gpu_burst.sh cache/pack /tmp/burst --device cpu --max-minutes 0.5 --out /tmp/burst_out
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
WHEEL_NAMES=(soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 soxr==1.1.0)

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  dir=${2:-$REPO/cache/wheels}
  mkdir -p "$dir"
  # The GPU machine runs CPython 3.12 on x86-64 (/work/.library/device/KINDS.md); these are the only
  # packages training needs that its image lacks (soundfile bundles libsndfile with Opus).
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$dir" "${WHEEL_NAMES[@]}"
  du -ch "$dir"/*.whl
  exit 0
fi

if [[ "${1:-}" == "--carry-size" ]]; then
  # What a device run would carry: tracked + untracked-not-ignored files, plus the paths named in carry.
  shift
  tree=$(cd "$REPO" && { git ls-files -z; git ls-files -z --others --exclude-standard; } \
         | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
  carried=$(find "$@" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
  awk -v t="$tree" -v c="$carried" 'BEGIN {m = 1048576; printf "tree %.1f MiB + carried %.1f MiB = %.1f MiB of 64 MiB\n", t/m, c/m, (t+c)/m; exit (t + c < 64*m) ? 0 : 1}'
  exit
fi

usage() { sed -n '2,/^[^#]/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 2; }
[[ $# -ge 2 ]] || usage
PACK=$1 RUN=$2
shift 2
DEVICE=cuda MINUTES=8 BATCH= SECONDS_= LR= WORKERS= AMP= OUTDIR=${OUT:-} PY= EXTRA=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --device) DEVICE=$2; shift 2 ;;
    --max-minutes) MINUTES=$2; shift 2 ;;
    --batch-size) BATCH=$2; shift 2 ;;
    --seconds) SECONDS_=$2; shift 2 ;;
    --lr) LR=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --no-amp) AMP=no; shift ;;
    --out) OUTDIR=$2; shift 2 ;;
    --python) PY=$2; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "gpu_burst: unknown option $1" >&2; usage ;;
  esac
done
if [[ $DEVICE == cuda* ]]; then
  # The H200 recipe: big batches of longer crops; lr scaled up from the CPU runs' 1e-3 at batch 4-8.
  # Two cores stay free for the training loop (kernel launches) and the pin-memory thread.
  : "${BATCH:=128}" "${SECONDS_:=4}" "${LR:=2e-3}" "${AMP:=yes}" "${WORKERS:=$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))}"
else
  : "${BATCH:=8}" "${SECONDS_:=2.5}" "${LR:=1e-3}" "${AMP:=no}" "${WORKERS:=1}"
fi

# -- Python -------------------------------------------------------------------------------------------------
SHIM=
if [[ -z $PY && -x $REPO/.venv/bin/python ]]; then
  PY=$REPO/.venv/bin/python
else
  PY=${PY:-python3}
  SHIM=${TMPDIR:-/tmp}/samstream-site
  mkdir -p "$SHIM/samstream"
  if ! "$PY" -c "import soundfile, soxr" 2>/dev/null; then
    WHEELS=${SAMSTREAM_WHEELS:-$REPO/cache/wheels}
    ls "$WHEELS"/*.whl >/dev/null 2>&1 || { echo "gpu_burst: no wheels in $WHEELS: carry cache/wheels (--fetch-wheels)" >&2; exit 1; }
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SHIM" "$WHEELS"/*.whl
  fi
  # samstream.model/.stream/.clients are this checkout's model/, stream/, clients/ (pyproject's package-dir)
  for part in model stream clients; do ln -sfn "$REPO/$part" "$SHIM/samstream/$part"; done
  export PYTHONPATH=$SHIM${PYTHONPATH:+:$PYTHONPATH}
fi
# One thread per process: the data workers are the parallelism (no BLAS thread pools fighting them).
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=${TQDM_MININTERVAL:-20} OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
samstream() { "$PY" -m samstream "$@"; }

echo "== gpu burst: $(date -u +%FT%TZ) device=$DEVICE minutes=$MINUTES batch=$BATCH seconds=$SECONDS_ lr=$LR workers=$WORKERS amp=$AMP"
"$PY" - "$DEVICE" <<'EOF'
import os, sys, torch
import samstream.model
device = sys.argv[1]
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, {os.cpu_count()} cpus, "
      f"samstream from {os.path.dirname(samstream.model.__file__)}", end="")
if device.startswith("cuda"):
    if not torch.cuda.is_available():
        sys.exit("\ngpu_burst: --device cuda but torch sees no GPU")
    props = torch.cuda.get_device_properties(0)
    print(f", {props.name} {props.total_memory / 2**30:.0f} GiB", end="")
print()
EOF

# Worker processes hand batches over through shared memory (~100 MB per batch of 128 x 4 s, two in
# flight per worker): a small /dev/shm would stop the loader.
if [[ $DEVICE == cuda* && $WORKERS -gt 0 && -d /dev/shm ]]; then
  shm_gb=$(df -BG --output=size /dev/shm | tail -1 | tr -dc 0-9)
  if (( shm_gb < 8 )) && [[ $(id -u) == 0 ]]; then mount -o remount,size=16G /dev/shm 2>/dev/null || true; fi
  echo "/dev/shm:$(df -h --output=size /dev/shm | tail -1)"
fi

# -- data ---------------------------------------------------------------------------------------------------
DATA=${BURST_DATA:-${TMPDIR:-/tmp}/samstream-burst-data}
samstream data unpack "$PACK" "$DATA" --workers "$(nproc)" --json | tail -1

# -- training -----------------------------------------------------------------------------------------------
mkdir -p "$RUN"
START=$(date +%s)
AMP_FLAG=()
[[ $AMP == yes ]] && AMP_FLAG=(--amp)
set +e
samstream train --run "$RUN" --data "$DATA" --device "$DEVICE" --batch-size "$BATCH" --seconds "$SECONDS_" \
  --lr "$LR" --warmup 200 --sisdr-weight 0.2 --t0-probability 0.8 --workers "$WORKERS" --threads 1 \
  --max-minutes "$MINUTES" --fit-horizon "${AMP_FLAG[@]}" "${EXTRA[@]}" --json
STATUS=$?
set -e

# -- report and hand back -----------------------------------------------------------------------------------
SUMMARY=$("$PY" - "$RUN" "$START" "$BATCH" "$STATUS" <<'EOF'
import json, sys
from pathlib import Path
run, start, batch, status = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rows = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()] if (run / "log.jsonl").is_file() else []
mine = [r for r in rows if r["time"] >= start]
out = {"run": str(run), "status": status, "logged_steps": len(mine)}
if len(mine) >= 2:
    rate = (mine[-1]["step"] - mine[0]["step"]) / max(mine[-1]["time"] - mine[0]["time"], 1e-9)
    out.update(steps_per_s=round(rate, 3), examples_per_s=round(rate * batch, 1))
if mine:
    out.update({k: v for k, v in mine[-1].items() if k != "time"})
config = run / "config.json"
if config.is_file():
    out["config"] = json.loads(config.read_text())
print(json.dumps(out))
EOF
)
echo "$SUMMARY"
if [[ -n $OUTDIR ]]; then
  mkdir -p "$OUTDIR"
  echo "$SUMMARY" > "$OUTDIR/burst_summary.json"
  tar -cf - -C "$(dirname "$RUN")" "$(basename "$RUN")" | split -b 15m -d - "$OUTDIR/run.tar.part-"
  ls -l "$OUTDIR"
fi
exit $STATUS
