r"""SQuAD-style QA fine-tuning: bert_jax (`launch/finetune.py --config.task=squad_json`) vs
transformers' BertForQuestionAnswering, same Hugging Face BERT dir, same JSON files, same recipe.

  python bench/qa_vs_transformers.py --model=HF_BERT_DIR [--data=DIR] [--epochs=8]

`--model`: any Hugging Face BERT dir (offline: see bench/tagging_vs_transformers.py).
`--data` holds {train,validation}.json in SQuAD v1.1/v2.0 format (default: the
sample QA set of `bert_jax.data.sample_tasks`, v2.0 with unanswerable questions).
Both sides train on the same rows (BERT's windows from `bert_jax.data.readers.squad`:
max_seq_length 96, doc_stride 32, max_query_length 24; [CLS] for no answer) with
the recipe of `bench/finetune_common.py`, and both are scored the same way
(BERT's n-best selection, null threshold 0, the official EM/F1), so the figures
compare the training, not the pre/postprocessing. Prints seq/s and exact match
of both sides, the ratios, and the machine load.
"""

import os
import tempfile

import numpy as np

import common  # bench/common.py: puts this checkout's bert_jax first on the path
import finetune_common as recipe

MAX_SEQ, STRIDE, MAX_QUERY = 96, 32, 24


def _features(path, tok, training):
  from bert_jax.data.readers import squad  # pylint: disable=g-import-not-at-top
  examples, stats = squad.read_squad_json(path)
  examples = squad.check_examples(examples, stats, path, training)
  return examples, squad.encode(examples, tok, MAX_SEQ, STRIDE, MAX_QUERY, path)


def run_transformers(model_dir, paths, steps):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from bert_jax import tokenization  # pylint: disable=g-import-not-at-top
  from bert_jax.heads import squad_eval  # pylint: disable=g-import-not-at-top

  tok = tokenization.load_tokenizer(model_dir)
  _, train = _features(paths["train"], tok, True)
  recipe.seed_torch()
  model = transformers.BertForQuestionAnswering.from_pretrained(
      model_dir, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)

  def inputs(idx):
    ids = recipe.pad([train.input_ids[i] for i in idx])
    return dict(input_ids=ids, token_type_ids=recipe.pad([train.token_type_ids[i] for i in idx]),
                attention_mask=(ids != 0).long(),
                start_positions=torch.tensor(train.start_positions[idx], dtype=torch.long),
                end_positions=torch.tensor(train.end_positions[idx], dtype=torch.long))

  seq_per_sec = recipe.torch_train(model, inputs, len(train), steps)
  examples, dev = _features(paths["validation"], tok, False)
  start = np.full((len(dev), MAX_SEQ), -1e9, np.float32)
  end = start.copy()
  for i in range(0, len(dev), 64):
    idx = np.arange(i, min(i + 64, len(dev)))
    ids = recipe.pad([dev.input_ids[j] for j in idx])
    with torch.no_grad():
      out = model(input_ids=ids, token_type_ids=recipe.pad([dev.token_type_ids[j] for j in idx]),
                  attention_mask=(ids != 0).long())
    for b, j in enumerate(idx):
      n = len(dev.input_ids[j])
      start[j, :n], end[j, :n] = out.start_logits[b, :n].numpy(), out.end_logits[b, :n].numpy()
  version_2 = any(ex.is_impossible for ex in examples)
  answers = squad_eval.best_answers(examples, dev, np.arange(len(dev)), start, end,
                                    version_2=version_2)
  return {"seq_per_sec": seq_per_sec, **squad_eval.score(examples, answers)}


def main():
  args = recipe.parse_args(__doc__, "dir with train.json and validation.json", epochs=8.0)
  from bert_jax import tokenization  # pylint: disable=g-import-not-at-top

  with tempfile.TemporaryDirectory() as tmp:
    paths = recipe.task_files(args.data, tmp, "json", "squad")
    rows = len(_features(paths["train"], tokenization.load_tokenizer(args.model), True)[1])
    steps = recipe.steps_for(rows, args.epochs)
    print(f"{rows} training rows, {steps} steps of {recipe.RECIPE['batch_size']}; "
          f"{common.load_line()}")
    ours = recipe.run_bert_jax_recipe(
        os.path.join(tmp, "run"), "squad_json", args.model, paths, MAX_SEQ, steps,
        **{"qa.doc_stride": STRIDE, "qa.max_query_length": MAX_QUERY})
    theirs = run_transformers(args.model, paths, steps)
  recipe.print_results(
      ours, theirs, steps, [("EM", ours["eval"]["eval_exact_match"], theirs["exact_match"]),
                            ("F1", ours["eval"]["eval_f1"], theirs["f1"])],
      peer="BertForQuestionAnswering", ratio_label="EM")

if __name__ == "__main__":
  main()
