#!/usr/bin/env bash
# Online vs offline DPO at a matched number of preference pairs (Tang et al. 2024, in miniature).
#
#   bash scripts/study_online_vs_offline.sh TAG [overrides applied to both arms]
#   bash scripts/study_online_vs_offline.sh lr5e-5 training.learning_rate=5e-5
#
# Needs the proxy reward model of recipes/online_dpo.yaml (python -m alignment recipes/reward_model.yaml).
# The online arm samples pairs from the current policy and labels them with the proxy; the offline arm
# trains on as many fixed pairs of base-model samples labelled from the gold reward. Both are judged by the
# gold reward against the base model. Results: runs/study/TAG/{online,offline}/eval.json and a table.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=$1; shift
OUT=runs/study/$TAG
python -m alignment recipes/online_dpo.yaml output_dir=$OUT/online "$@"
PAIRS=$(python -c "import json; print(json.load(open('$OUT/online/online_stats.json'))['pairs_total'])")
python -m alignment recipes/dpo.yaml data.train.args.n=$PAIRS output_dir=$OUT/offline "$@"
python scripts/results_table.py $OUT/online $OUT/offline
