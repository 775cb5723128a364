#!/usr/bin/env bash
# The README's main job: pretrain a tiny BERT on the bundled sample corpus, on CPU, then ask it
# to fill in masks. Each step is one of the user-facing commands, so this doubles as their demo.
#
#   bash launch/quickstart.sh [WORKDIR [--config.KEY=VALUE ...]]   (default /tmp/bert_quickstart)
#
# Steps: WordPiece vocabulary -> NSP pretraining data with a held-out split -> configs/tiny.py
# pretraining (progress line every log step, held-out MLM accuracy at the end) -> fill-mask ->
# fine-tuning on the sample pair task (configs/finetune_tiny.py) -> predict.
# FINETUNE_ARGS (environment) adds --config.KEY=VALUE overrides to the fine-tuning step.
# Re-running resumes: a finished vocabulary/data dir is reused and training picks up from the
# latest checkpoint in WORKDIR/run.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR="${1:-/tmp/bert_quickstart}"
CORPUS="bert_jax/data/sample_corpus.txt"
mkdir -p "$WORKDIR"

# This checkout's bert_jax, whatever else is installed; `python -c` alone would find it through
# the current directory while launch/build_vocab.py (run from launch/) would not.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! python -c "import bert_jax.train" 2>/dev/null; then
  echo "== installing bert_jax (pip install -e .)"
  python -m pip install -q -e .
fi

echo "== 1/5 vocabulary ($WORKDIR/vocab)"
if [[ ! -f "$WORKDIR/vocab/vocab.txt" ]]; then
  python launch/build_vocab.py --input="$CORPUS" --output="$WORKDIR/vocab" \
      --vocab_size=4000 --kind=wordpiece --lowercase
fi

echo "== 2/5 pretraining data ($WORKDIR/data)"
if [[ ! -f "$WORKDIR/data/meta.json" ]]; then
  python launch/prepare_data.py --input="$CORPUS" --vocab="$WORKDIR/vocab" \
      --output="$WORKDIR/data" --max_seq_length=64 --eval_fraction=0.05
fi

echo "== 3/5 pretraining configs/tiny.py ($WORKDIR/run)"
python launch/pretrain.py --config=configs/tiny.py --workdir="$WORKDIR/run" \
    --config.train_data="$WORKDIR/data" --config.eval_data="$WORKDIR/data" "${@:2}"
python - "$WORKDIR/run/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
last = [r for r in rows if "eval_mlm_accuracy" in r][-1]
print(f"held-out at step {last['step']}: MLM accuracy {last['eval_mlm_accuracy']:.3f}, "
      f"NSP accuracy {last['eval_nsp_accuracy']:.3f}")
PY

echo "== 4/5 fill-mask with the trained model"
for text in "hais deadrend works as a [MASK]." \
            "on [MASK] the farmers come to the market." \
            "a wethowl has two [MASK]."; do
  python launch/fill_mask.py --model="$WORKDIR/run" --text="$text" --top_k=3
done

echo "== 5/5 fine-tuning on the sample pair task ($WORKDIR/ft), then predict"
python -m bert_jax.data.sample_pairs "$WORKDIR/pairs" >/dev/null
# shellcheck disable=SC2086
python launch/finetune.py --config=configs/finetune_tiny.py --workdir="$WORKDIR/ft" \
    --config.init_checkpoint="$WORKDIR/run" --config.train_file="$WORKDIR/pairs/train.jsonl" \
    --config.validation_file="$WORKDIR/pairs/validation.jsonl" \
    --config.test_file="$WORKDIR/pairs/test.jsonl" ${FINETUNE_ARGS:-}
python - "$WORKDIR/ft/best/best.json" <<'PY'
import json, sys
best = json.load(open(sys.argv[1]))
print(f"best {best['metric']} {best['value']:.3f} at step {best['step']} (chance: 0.333)")
PY
python - "$WORKDIR/ft/test_predictions.tsv" "$WORKDIR/pairs/test.jsonl" <<'PY'
import json, sys
predicted = [line.split("\t")[1] for line in open(sys.argv[1]).read().splitlines()[1:]]
gold = [json.loads(line)["label"] for line in open(sys.argv[2])]
parts = []
for label in ("entailment", "neutral", "contradiction"):
  rows = [p for p, g in zip(predicted, gold) if g == label]
  parts.append(f"{label} {sum(p == label for p in rows) / max(len(rows), 1):.2f}")
print(f"test accuracy per class ({len(gold)} pairs): " + ", ".join(parts))
PY
python launch/predict.py --model="$WORKDIR/ft/best" \
    --text="Pufax Mubeark works as a cook. Pufax likes the colour orange best." \
    --text_pair="Pufax has never worked as a cook."
