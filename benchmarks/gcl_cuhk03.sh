#!/usr/bin/env bash
# Issue 32's runs on ../shared/data/cuhk03-detected in one command (docs/methods/gcl.md "Results on the shared
# data"): two warm starts, one GCL stage 2 from each, three seeds of stage 3 from each stage 2, then the summary.
#
#   bash benchmarks/gcl_cuhk03.sh OUT [SEEDS]          # from the repository root; SEEDS default "1 2 3"
#
# Warm starts (stage 1): the best camera-aware recipe (configs/camera_aware/
# cuhk03_detected_cpu_cbn_cap_clustering_lomo_online.yaml, camera-based BN) and plain Cluster Contrast
# (configs/cluster_contrast/cuhk03_detected_cpu.yaml), seed 1 each. Stage 2 (generator and discriminator, the
# encoder frozen) once per warm start with joint_epochs=0; stage 3 per seed from that stage 2's
# checkpoint_last.pth (method.gcl.stage2_checkpoint), so the seeds share one stage 2. Every step is skipped
# when its run has finished and continued with --resume when it has started, so the script can be rerun
# after an interruption. The stage-3 seeds run side by side with one thread each (STAGE3_PARALLEL=0: one after
# the other with the default threads). Cost on the 2-core CPU: about 7 hours, estimated (docs/BENCHMARKS.md "GCL").
# Extra key=value overrides for every run can be given in EXTRA (e.g. EXTRA="eval.batch_size=128"); device: auto
# takes a GPU where there is one. ARMS picks the warm starts and their order (default "ca cc"; e.g. ARMS="cc ca"
# finishes the cheaper Cluster Contrast arm first). STAGE2_EXTRA and STAGE3_EXTRA add overrides to the stage-2
# or the stage-3 runs only (e.g. STAGE2_EXTRA="method.gcl.generator_epochs=2" STAGE3_EXTRA="method.gcl.joint_epochs=1";
# the learning rates step after 10 epochs, so a shortened stage's epochs are those of the full schedule).
set -euo pipefail
OUT=${1:?usage: bash benchmarks/gcl_cuhk03.sh OUT [SEEDS]}
SEEDS=${2:-1 2 3}
EXTRA=${EXTRA:-}
ARMS=${ARMS:-ca cc}
STAGE2_EXTRA=${STAGE2_EXTRA:-}
STAGE3_EXTRA=${STAGE3_EXTRA:-}
GCL=configs/gcl/cuhk03_detected_cpu.yaml
mkdir -p "$OUT"

# train OUTPUT_DIR CONFIG [key=value ...]: skip a finished run, resume a started one, else start it
train() {
  local dir=$1; shift
  if [ -f "$dir/model_best.pth" ] && grep -q "training \[.*\] finished in" "$dir/train.log" 2>/dev/null; then
    echo "== $dir: finished, skipped"; return 0
  fi
  local resume=()
  # a started run (its config.yaml) is resumed, also one killed before its first epoch was committed
  # (--resume then starts it again from epoch 0; a fresh start would refuse the folder)
  { [ -f "$dir/checkpoint_last.pth" ] || [ -f "$dir/config.yaml" ]; } && resume=(--resume)
  echo "== $(date -u +%FT%TZ) $dir: unreid train $* output_dir=$dir $EXTRA ${resume[*]}"
  # shellcheck disable=SC2086
  unreid train "$@" output_dir="$dir" $EXTRA "${resume[@]}" > "$dir.log" 2>&1
}

declare -A WARM=(
  [ca]="configs/camera_aware/cuhk03_detected_cpu_cbn_cap_clustering_lomo_online.yaml"
  [cc]="configs/cluster_contrast/cuhk03_detected_cpu.yaml"
)
declare -A CBN=([ca]="model.camera_bn=true" [cc]="model.camera_bn=false")
for arm in $ARMS; do
  train "$OUT/${arm}_warm" "${WARM[$arm]}" seed=1
  # shellcheck disable=SC2086
  train "$OUT/${arm}_stage2" "$GCL" seed=1 "${CBN[$arm]}" method.gcl.joint_epochs=0 \
    method.gcl.init_checkpoint="$OUT/${arm}_warm/model_best.pth" $STAGE2_EXTRA
  pids=()
  for s in $SEEDS; do
    # shellcheck disable=SC2206
    args=("$OUT/${arm}_s$s" "$GCL" seed="$s" "${CBN[$arm]}" method.gcl.generator_epochs=0
          method.gcl.stage2_checkpoint="$OUT/${arm}_stage2/checkpoint_last.pth" $STAGE3_EXTRA)
    if [ "${STAGE3_PARALLEL:-1}" = 1 ]; then
      OMP_NUM_THREADS=1 train "${args[@]}" & pids+=($!)
    else
      train "${args[@]}"
    fi
  done
  for p in "${pids[@]}"; do wait "$p"; done
done

runs=()
for arm in $ARMS; do
  runs+=("${arm}_warm=$OUT/${arm}_warm")
  for s in $SEEDS; do runs+=("gcl_from_${arm}=$OUT/${arm}_s$s"); done
done
python benchmarks/results_table.py "${runs[@]}" --summary | tee "$OUT/summary.md"
