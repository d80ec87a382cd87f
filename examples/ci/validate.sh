#!/usr/bin/env bash
# Export a checkpoint and validate the bundles on your own labelled data, writing JUnit and
# Markdown reports. Both CI examples (github-actions.yml, gitlab-ci.yml) call this script, and
# bert-export's own test suite runs it, so what you copy is what we test.
#
#   bash examples/ci/validate.sh CHECKPOINT_DIR DATA_FILE REPORT_DIR
#
# Environment (all optional):
#   BERT_EXPORT_FAMILY      bert | modernbert                      [bert]
#   BERT_EXPORT_TASK        seq-cls | token-cls | qa | mlm | embed [seq-cls]
#   BERT_EXPORT_MAX_SEQ     longest sequence the bundles accept    [128]
#   BERT_EXPORT_PRECISIONS  bundles to build and gate              ["fp32 int8"]
#   BERT_EXPORT_MAX_DROP    largest metric drop vs PyTorch, points [0.5]
#   BERT_EXPORT_EXPECT_OPS  a JSON of fused-op counts (or a bundle) the optimized bundles must keep
#
# Exit status: 0 every gate passed, 1 a gate failed (reports are still written), 2 bad input.
set -euo pipefail

ckpt=${1:?usage: validate.sh CHECKPOINT_DIR DATA_FILE REPORT_DIR}
data=${2:?usage: validate.sh CHECKPOINT_DIR DATA_FILE REPORT_DIR}
out=${3:?usage: validate.sh CHECKPOINT_DIR DATA_FILE REPORT_DIR}
family=${BERT_EXPORT_FAMILY:-bert}
task=${BERT_EXPORT_TASK:-seq-cls}
max_seq=${BERT_EXPORT_MAX_SEQ:-128}
precisions=${BERT_EXPORT_PRECISIONS:-fp32 int8}
max_drop=${BERT_EXPORT_MAX_DROP:-0.5}

mkdir -p "$out"
status=0
for precision in $precisions; do
  flag=""
  [ "$precision" = fp32 ] || flag="--$precision"
  bert-export "$family" --task "$task" --model "$ckpt" --max-seq "$max_seq" $flag --out "$out/bundle-$precision" --force -q
  ops=()
  if [ -n "${BERT_EXPORT_EXPECT_OPS:-}" ]; then ops=(--expect-ops "$BERT_EXPORT_EXPECT_OPS"); fi
  # keep going after a failed gate so every bundle gets its report; remember the worst status
  rc=0
  bert-export validate "$out/bundle-$precision" --model "$ckpt" --data "$data" --max-metric-drop "$max_drop" "${ops[@]}" \
    --report "$out/$precision.json" --junit "$out/$precision.xml" --markdown "$out/$precision.md" -q || rc=$?
  if [ "$rc" -gt "$status" ]; then status=$rc; fi
done
exit "$status"
