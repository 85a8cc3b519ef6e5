#!/usr/bin/env bash
# Issue 18's Beauty acceptance run, after train_foreign.py has trained a RecBole teacher on Beauty
# (benchmarks/recbole/README.md, "The real acceptance run"). Run from the repository root:
#
#   bash benchmarks/recbole/accept_beauty.sh distill onnx   # student from the ONNX export (.venv)
#   bash benchmarks/recbole/accept_beauty.sh distill pth    # from the .pth, run by RecBole's code
#   bash benchmarks/recbole/accept_beauty.sh export onnx    # the student's .onnx, INT8 and ANN
#   bash benchmarks/recbole/accept_beauty.sh export pth
#   bash benchmarks/recbole/accept_beauty.sh bench          # idle box: both teachers, both students
#
# MODEL (default CORE) names the teacher's run folder out/foreign/<MODEL>-beauty (RUN=<folder>
# for another, e.g. RUN=CORE128-beauty ACCEPT=benchmarks/recbole/out/accept_core128). STUDENT (default
# "gru_small --arg hidden=192") is the student's preset and arguments, TAG (default gru) the
# prefix of its folders; choose the student's size by benchmarks/recbole/probe_students.py (speed
# alone, on untrained weights) before distilling. Issue 18's gate was met with RUN=CORE128-beauty and
# STUDENT="sasrec --arg dim=64 --arg layers=1 --arg heads=2" TAG=sasrec_l1 (docs/benchmarks.md). For bench, SIDES (default "onnx pth") picks
# the students by their teacher and MODULE=0 leaves the module teacher out. The two distils
# can run side by side (one thread each); the benchmark wants the machine to itself. The student
# settings are recipes/beauty.yaml's GRU student without the parts a scores-only teacher cannot
# give (alignment needs user vectors, PCA initialisation an item table).
set -euo pipefail
R=benchmarks/recbole
MODEL="${MODEL:-CORE}"
T=$R/out/foreign/${RUN:-$MODEL-beauty}  # RUN: train_foreign.py's --run-name, if it had one
D=$R/out/data/beauty/beauty.inter
A=${ACCEPT:-$R/out/accept}  # students, caches, exports and benchmarks of this teacher
E=$A/export
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
STUDENT="${STUDENT:-gru_small --arg hidden=192}"
TAG="${TAG:-gru}"
pth() { ls "$T"/"$MODEL"-*.pth | head -1; }

case "${1:-}" in
distill)
    if [ "$2" = onnx ]; then BIN=.venv/bin/recshrink; TEACH=$T/$MODEL.onnx
    else BIN=$R/.venv/bin/recshrink; TEACH=$(pth); fi
    $BIN distill --teacher "$TEACH" --data $D --student $STUDENT \
        --loss sampled --negatives 1024 --lr 0.002 --patience 8 --lr-decay 0.3 --lr-patience 2 \
        --max-minutes "${MINUTES:-25}" --threads 1 \
        --kd gt_weight=0.5 --kd kd_weight=0.5 --kd temperature=1.0 --kd kd_scope=topm \
        --kd top_m=100 --kd kd_tail=weighted --kd rank_weight=0.3 \
        --cache-dir $A/cache_"$2" --out $A/"$TAG"_"$2" --no-progress
    ;;
export)
    S=$A/"$TAG"_$2; O=$E/"$TAG"_$2; mkdir -p $E
    .venv/bin/recshrink export --model "$S" --data $D --out "$O".onnx
    .venv/bin/recshrink export --model "$S" --data $D --out "$O".dynamic.onnx --quantized dynamic
    .venv/bin/recshrink export --model "$S" --data $D --retrieval ann --out "$O".ann
    ;;
bench)
    args=(--model teacher=$T/$MODEL.onnx)
    [ "${MODULE:-1}" = 0 ] || args+=(--model teacher_module="$(pth)")
    for s in ${SIDES:-onnx pth}; do  # SIDES=onnx: only the students distilled from the .onnx
      for t in $TAG; do  # TAG may name several students: TAG="gru gru_tiny"
        args+=(--model "$t"_$s=$A/"$t"_$s --model "$t"_$s.onnx=$E/"$t"_$s.onnx
               --model "$t"_$s.dynamic.onnx=$E/"$t"_$s.dynamic.onnx --model "$t"_$s.ann=$E/"$t"_$s.ann)
      done
    done
    $R/.venv/bin/recshrink benchmark "${args[@]}" --data $D --threads 1 --batch 1,16,256 \
        --budget 3 --out "${BENCH_OUT:-$A/bench}"
    ;;
*)
    echo "usage: $0 distill onnx|pth | export onnx|pth | bench" >&2; exit 2 ;;
esac
