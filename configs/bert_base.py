r"""BERT-base phase 1 (Devlin et al. 2018): seq 128, batch 256, AdamW 1e-4, 10k warmup, 1M steps.

  python launch/prepare_data.py --input=WIKI_AND_BOOKS_FILES --vocab=VOCAB_DIR \
      --output=gs://BUCKET/bert_data_128 --max_seq_length=128 --eval_fraction=0.001
  python launch/pretrain.py --config=configs/bert_base.py --workdir=gs://BUCKET/bert_base \
      --config.train_data=gs://BUCKET/bert_data_128

Expect (the paper's recipe on Wikipedia + BooksCorpus; published figures, not measured in
this repo): MLM accuracy ~0.65-0.70 and NSP accuracy ~0.98 at the end of phase 1, which the
paper ran in ~4 days on 16 TPU v3 chips (4 Cloud TPUs). Then run configs/bert_base_phase2.py.
"""

from configs import default


def get_config():
  """The paper's phase-1 recipe: default.py already holds it (base model, batch 256, seq 128,
  20 predictions, AdamW 1e-4, 10k warmup, linear decay over 1M steps, eval and checkpoint
  every 10k); this adds the log period. Compute dtype is default.py's 'auto': bfloat16 on
  GPU/TPU."""
  c = default.get_config()
  # Log every 1000 steps: a 1M-step run needs no more.
  c.log_every_steps = 1000
  return c
