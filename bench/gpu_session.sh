#!/usr/bin/env bash
# The GPU figures of bench/RESULTS.md, in one go on a lent CUDA machine whose python3 has torch:
#   bash bench/gpu_session.sh benches   # engine_overhead, lora_swap and train_throughput, SD 1.5 arch
#   bash bench/gpu_session.sh demo      # python -m app.demo.build on the GPU (after a determinism check), packed for the trip back
#   bash bench/gpu_session.sh star      # bench/star_lora_sweep.py side by side, one run per line of bench/star_runs.txt
#   bash bench/gpu_session.sh speed     # bench/gpu_speed.py: plain diffusers vs the engine and its speed settings (~8 min)
# Packages the image lacks (or has in other versions) travel as wheels in .whl/ and go to /tmp/site:
# fill it here with  bash bench/gather_wheels.sh  and name ".whl" in the run's carry.
# Logs and results land in $OUT (default: ./gpu-out).
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
[ -n "${SKIP_WHEELS:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-6}
nvidia-smi -L
python3 -c "import torch, diffusers, transformers, peft; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"

bench() {  # name, time limit, arguments...
  local name=$1 limit=$2; shift 2
  local started=$SECONDS
  timeout "$limit" python3 "bench/$name.py" "$@" > "$OUT/$name.log" 2>&1
  echo "== $name rc=$? in $((SECONDS - started)) s"
  grep -v "^\[transformers\]" "$OUT/$name.log" | tail -4
}

case "${1:-benches}" in
  benches)
    bench engine_overhead 110 --arch sd15 --size 512 --steps 20 --runs 5
    bench lora_swap 150 --arch sd15 --runs 4 --swaps 10
    bench train_throughput 160 --arch sd15 --batch 1 4 --steps 30
    ;;
  demo)  # the default build, after two quick builds that must give the same bytes (deterministic kernels)
    for run in 1 2; do
      python3 -m app.demo.build --quick --out "/tmp/demo-quick-$run" > "$OUT/quick-$run.log" 2>&1 &
    done
    wait
    for run in 1 2; do (cd "/tmp/demo-quick-$run" && sha256sum */*.safetensors) > "/tmp/quick-$run.sha"; done
    if cmp -s /tmp/quick-1.sha /tmp/quick-2.sha; then echo "== quick builds: same bytes"; else echo "== quick builds DIFFER"; fi
    cat /tmp/quick-1.sha
    started=$SECONDS
    timeout "${DEMO_LIMIT:-400}" python3 -m app.demo.build --out /tmp/demo-build/demo-shapes ${DEMO_ARGS:-} > "$OUT/build.log" 2>&1
    echo "== build rc=$? in $((SECONDS - started)) s"
    tail -1 "$OUT/build.log"
    if [ -f /tmp/demo-build/demo-shapes/build_info.json ]; then
      tar -C /tmp/demo-build -czf /tmp/demo-shapes.tar.gz demo-shapes && split -b 15M /tmp/demo-shapes.tar.gz "$OUT/demo-shapes.tar.gz.part-"
    fi
    ;;
  speed)  # phases starting after SPEED_DEADLINE seconds are skipped (null figures); the whole run is cut at SPEED_LIMIT
    # SPEED_ARGS="--no-sdxl" / "--no-sd15": one architecture a call, when both do not fit in one
    # shellcheck disable=SC2086  # SPEED_ARGS: separate words
    bench gpu_speed "${SPEED_LIMIT:-470}" --compile-mode "${COMPILE_MODE:-reduce-overhead}" --deadline-s "${SPEED_DEADLINE:-330}" ${SPEED_ARGS:-}
    grep '^\[' "$OUT/gpu_speed.log" | tail -40
    ;;
  star)  # each line of $STAR_RUNS: NAME JSON; logs gathered into two files (few files come back)
    mkdir -p /tmp/star-logs
    while read -r name settings; do
      case "$name" in ''|'#'*) continue ;; esac
      OMP_NUM_THREADS=2 timeout "${STAR_LIMIT:-420}" python3 bench/star_lora_sweep.py "$name" "$settings" \
        --device cuda --outputs-dir /tmp/star-sweep > "/tmp/star-logs/$name.log" 2>&1 &
    done < "${STAR_RUNS:-bench/star_runs.txt}"
    wait
    for log in /tmp/star-logs/*.log; do
      echo "== $log"; grep -v "^\[transformers\]" "$log" | tail -5
    done > "$OUT/star.log"
    for log in /tmp/star-logs/*.log; do tail -1 "$log" | grep '^{' ; done > "$OUT/star-results.jsonl"
    cut -c1-300 "$OUT/star-results.jsonl"
    ;;
esac
