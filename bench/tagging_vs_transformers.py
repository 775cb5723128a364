r"""NER fine-tuning: bert_jax (`launch/finetune.py --config.task=conll`) vs transformers'
BertForTokenClassification, same Hugging Face BERT dir, same CoNLL files, same recipe.

  python bench/tagging_vs_transformers.py --model=HF_BERT_DIR [--data=DIR] [--epochs=3]

`--model` is any Hugging Face BERT dir. Offline, make one by pretraining the tiny
config on the sample corpus and converting it:
  bash launch/quickstart.sh /tmp/qs && \
  python launch/convert.py --input=/tmp/qs/run --output=/tmp/qs_hf --to=hf
`--data` holds {train,validation}.conll CoNLL files (default: the sample NER set of
`bert_jax.data.sample_tasks`, generated into a temporary dir). Recipe:
`bench/finetune_common.py` (batch 32, lr 5e-4, 10% warmup, max_seq_length 64).
transformers labels each word's first piece (word_ids), as bert_jax does, and is
scored with seqeval on the same words. Prints seq/s and entity F1 of both sides,
the ratios, and the machine load.
"""

import os
import tempfile

import common  # bench/common.py: puts this checkout's bert_jax first on the path
import finetune_common as recipe

MAX_SEQ = 64


def run_transformers(model_dir, paths, labels, steps):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from seqeval import metrics  # pylint: disable=g-import-not-at-top
  from bert_jax.data.readers import conll  # pylint: disable=g-import-not-at-top

  label_to_id = {l: i for i, l in enumerate(labels)}
  tok = transformers.BertTokenizerFast.from_pretrained(model_dir)

  def encode(sentences, with_labels):
    rows = []
    for s in sentences:
      enc = tok(s.words, is_split_into_words=True, truncation=True, max_length=MAX_SEQ)
      tags, firsts, previous = [], {}, None
      for pos, w in enumerate(enc.word_ids()):
        first = w is not None and w != previous
        tags.append(label_to_id[s.labels[w]] if first and with_labels else -100)
        if first:
          firsts[w] = pos
        previous = w
      rows.append((enc["input_ids"], tags, firsts))
    return rows

  train_rows = encode(conll.read_conll(paths["train"]), True)
  recipe.seed_torch()
  model = transformers.BertForTokenClassification.from_pretrained(
      model_dir, num_labels=len(labels), id2label=dict(enumerate(labels)),
      label2id=label_to_id, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)

  def inputs(idx):
    ids = recipe.pad([train_rows[i][0] for i in idx])
    return dict(input_ids=ids, attention_mask=(ids != 0).long(),
                labels=recipe.pad([train_rows[i][1] for i in idx], -100))

  seq_per_sec = recipe.torch_train(model, inputs, len(train_rows), steps)
  sentences = conll.read_conll(paths["validation"])
  gold, pred = [], []
  for s, (ids, _, firsts) in zip(sentences, encode(sentences, False)):
    with torch.no_grad():
      out = model(input_ids=torch.tensor([ids])).logits[0].argmax(-1).numpy()
    gold.append(s.labels)
    pred.append([labels[out[firsts[w]]] if w in firsts else "O" for w in range(len(s.words))])
  return {"seq_per_sec": seq_per_sec, "f1": metrics.f1_score(gold, pred)}


def main():
  args = recipe.parse_args(__doc__, "dir with train.conll and validation.conll", epochs=3.0)
  from bert_jax.data.readers import conll  # pylint: disable=g-import-not-at-top

  with tempfile.TemporaryDirectory() as tmp:
    paths = recipe.task_files(args.data, tmp, "conll", "ner")
    train = conll.read_conll(paths["train"])
    labels = conll.label_list(train)
    steps = recipe.steps_for(len(train), args.epochs)
    print(f"{len(train)} training sentences, {steps} steps of {recipe.RECIPE['batch_size']}; "
          f"{common.load_line()}")
    ours = recipe.run_bert_jax_recipe(os.path.join(tmp, "run"), "conll", args.model, paths,
                                      MAX_SEQ, steps)
    theirs = run_transformers(args.model, paths, labels, steps)
  recipe.print_results(ours, theirs, steps, [("entity F1", ours["eval"]["eval_f1"], theirs["f1"])],
                       peer="BertForTokenClassification, seqeval", ratio_label="F1")

if __name__ == "__main__":
  main()
