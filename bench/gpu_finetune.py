r"""The GPU suite's fine-tuning lines (bench/gpu_suite.py): the user's command on short text.

Why a line of its own: issue 16 measured that users' fine-tuning data is short (GLUE's SST-2
and CoLA are 10-13 words) and that a padded step then computes mostly padding; packed rows
(`config.pack`, the default) are bert_jax's answer, and on a GPU the fixed per-step costs
(dispatch, host-side batches) weigh more than on a CPU. The pretraining rows cannot show
either: their rows are full. Issue 17 adds ModernBERT dirs and LoRA, each with a peer.

Each line is one model and recipe, both sides on the same GPU, each in its own process:
- bert_jax: the user's command, `launch/finetune.py --config=configs/finetune.py
  --config.task=local --config.train_file=... --config.init_checkpoint=HF_DIR` (bf16 and the
  attention kernel by the config's 'auto'), run in the worker's process (so that jax's
  `peak_bytes_in_use` can be read after it); its figures are the mean of the `seq_per_sec`,
  `real_tokens_per_sec` and `padding_fraction` windows it logs to metrics.jsonl (the compile
  step is in none), as bench/finetune_vs_transformers.py reads them;
- the peer: a plain torch loop over transformers' `AutoModelForSequenceClassification` of the
  same dir (BERT or ModernBERT; peft's LoRA on it for the LoRA line) with dynamic padding
  (each batch padded to its longest row), bf16 autocast, AdamW(fused=True) with weight decay
  0.01 off biases and norms, clipping at 1.0, the same linear warmup/decay, steps, batch and
  shuffled rows (bench/finetune_common.py's `shuffled_batches`), timed around steps 2..N.
  Attention dropout is bert_jax's per-platform default on both sides (0 on a GPU, 0.1 on CPU).
The data: `short` single sentences of 5-24 words from the stdlib's docstrings (bench/
finetune_vs_transformers.py's `write_task`: about 16 tokens with [CLS] and [SEP], labelled by a
lexical rule); the models: random-weight HF dirs of BERT-base and ModernBERT-base sizes (tiny
with --smoke) whose vocabulary is the words of that text, saved by transformers.
No evaluation is run (its compile would be most of a line's time): the sanity figure is the
last logged training loss of each side (the fresh heads differ, so early losses do too).
MFU counts the real tokens only, at full fine-tuning's FLOPs per token (`flops_per_real_token`,
3x forward), against the suite's measured bf16 and datasheet peaks; a LoRA step skips the
frozen weights' gradients (about a third), so its MFU is a full-fine-tuning equivalent.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import runpy
import sys
import time
from typing import Any, Callable, Optional

import common  # bench/common.py: puts this checkout's bert_jax first on the path

LORA_RANK, LORA_ALPHA = 8, 16.0


@dataclasses.dataclass(frozen=True)
class FinetuneCase:
  name: str
  model: str  # "bert" | "modern": the HF dir of the line
  pack: bool  # bert_jax's config.pack
  lora: bool  # rank LORA_RANK, alpha LORA_ALPHA on query+value; lr 5e-4 (issue 17's recipe)
  target: str  # reported, not asserted
  optional: bool = False  # only with --unpacked


FINETUNE_CASES = (
    FinetuneCase("finetune BERT-base short sentences (packed)", "bert", True, False, ">= 1.5x"),
    FinetuneCase("finetune BERT-base short sentences (pack=False)", "bert", False, False, "",
                 optional=True),
    FinetuneCase("finetune ModernBERT-base-sized (packed)", "modern", True, False, ""),
    FinetuneCase(f"LoRA BERT-base (rank {LORA_RANK}, q+v)", "bert", True, True, ""),
)


def finetune_sizes(smoke: bool) -> dict[str, Any]:
  """Steps, data and model sizes: ~30 s of steps a line on one H100/H200, seconds on CPU."""
  if smoke:
    return dict(steps=6, log_every=2, num_train=192, words=400,
                bert=dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2,
                          intermediate_size=512),
                modern=dict(num_hidden_layers=3, hidden_size=64, num_attention_heads=2,
                            intermediate_size=96))
  return dict(steps=300, log_every=50, num_train=300 * 32, words=8000,
              bert=common.hf_sizes(12, 768),
              modern=dict(num_hidden_layers=22, hidden_size=768, num_attention_heads=12,
                          intermediate_size=1152))


RECIPE = dict(batch_size=32, max_seq_length=128, warmup_ratio=0.1, weight_decay=0.01,
              adam_eps=1e-6, max_grad_norm=1.0, seed=0)


def _lr(case: FinetuneCase) -> float:
  return 5e-4 if case.lora else 2e-5  # issue 17's LoRA recipe; configs/finetune.py's default


# ------------------------------------------------------------ inputs (driver)


def prepare(workdir: str, smoke: bool) -> None:
  """WORKDIR/ft_data/train.jsonl and the HF dirs WORKDIR/ft_bert, WORKDIR/ft_modern."""
  import finetune_vs_transformers  # pylint: disable=g-import-not-at-top
  sizes = finetune_sizes(smoke)
  paths = finetune_vs_transformers.write_task("short", os.path.join(workdir, "ft_data"),
                                              sizes["num_train"], 1)
  with open(paths["train"], encoding="utf-8") as f:
    sentences = [json.loads(line)["sentence"] for line in f if line.strip()]
  bert = os.path.join(workdir, "ft_bert")
  counts = collections.Counter(w for s in sentences for w in re.findall(r"\w+|[^\w\s]", s.lower()))
  words = sorted(w for w, _ in counts.most_common(sizes["words"]))
  vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
  os.makedirs(bert, exist_ok=True)
  with open(os.path.join(bert, "vocab.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(vocab) + "\n")
  common.save_random_bert(bert, len(vocab), sizes["bert"])
  _save_tokenizer(bert, bert)
  _modern_dir(bert, os.path.join(workdir, "ft_modern"), vocab, sizes["modern"])


def _save_tokenizer(vocab_dir: str, out: str) -> None:
  """The tokenizer as transformers 5 saves it: tokenizer.json + tokenizer_config.json."""
  import transformers  # pylint: disable=g-import-not-at-top
  transformers.BertTokenizerFast(os.path.join(vocab_dir, "vocab.txt"), do_lower_case=True
                                 ).save_pretrained(out)


def _modern_dir(vocab_dir: str, out: str, vocab: list[str], sizes: dict) -> None:
  """A random-weight ModernBERT (GeGLU, window 128, global every 3rd layer, RoPE theta 160k
  global / 10k local: ModernBERT-base's recipe) saved by transformers, tokenizer.json only."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  ids = {t: i for i, t in enumerate(vocab)}
  config = transformers.ModernBertConfig(
      vocab_size=len(vocab), max_position_embeddings=512, local_attention=128,
      global_attn_every_n_layers=3, pad_token_id=ids["[PAD]"], cls_token_id=ids["[CLS]"],
      bos_token_id=ids["[CLS]"], sep_token_id=ids["[SEP]"], eos_token_id=ids["[SEP]"], **sizes)
  torch.manual_seed(0)
  transformers.ModernBertModel(config).eval().save_pretrained(out)
  _save_tokenizer(vocab_dir, out)


def _model_dir(workdir: str, case: FinetuneCase) -> str:
  return os.path.join(workdir, f"ft_{case.model}")


def _train_file(workdir: str) -> str:
  return os.path.join(workdir, "ft_data", "train.jsonl")


# ------------------------------------------------------------------ workers
# Each runs in its own process (bench/gpu_suite.py's --worker) and returns one dict.


def worker_jax_finetune(smoke: bool, workdir: str, index: int) -> dict:
  """The user's command, run in this process; its logged figures and jax's peak memory."""
  case = FINETUNE_CASES[index]
  sizes = finetune_sizes(smoke)
  if smoke:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
  run_dir = os.path.join(workdir, f"ft_jax_{index}")
  overrides = {"task": "local", "init_checkpoint": _model_dir(workdir, case),
               "train_file": _train_file(workdir), "validation_file": "",
               "batch_size": RECIPE["batch_size"], "max_seq_length": RECIPE["max_seq_length"],
               "num_train_steps": sizes["steps"], "log_every_steps": sizes["log_every"],
               "checkpoint_every_steps": sizes["steps"], "learning_rate": _lr(case),
               "warmup_ratio": RECIPE["warmup_ratio"], "warmup_steps": -1,
               "seed": RECIPE["seed"], "pack": case.pack,
               "lora.rank": LORA_RANK if case.lora else 0, "lora.alpha": LORA_ALPHA}
  cmd = common.launcher_command("finetune.py", run_dir, "finetune.py", overrides)
  sys.argv = cmd[1:]
  sys.path.insert(0, os.path.dirname(cmd[1]))  # launch/: its train_common
  start = time.perf_counter()
  try:
    runpy.run_path(cmd[1], run_name="__main__")
  except SystemExit as e:  # absl's app.run exits; the launcher's own errors are one line
    if e.code not in (0, None):
      raise
  wall = time.perf_counter() - start
  import jax  # pylint: disable=g-import-not-at-top  (started by the launcher)
  import numpy as np  # pylint: disable=g-import-not-at-top
  stats = jax.devices()[0].memory_stats() or {}
  rows = common.speed_rows(common.read_metrics(run_dir))
  if not rows:
    raise RuntimeError(f"{run_dir}/metrics.jsonl holds no seq_per_sec window")
  mean = lambda k: float(np.mean([r[k] for r in rows if r.get(k) is not None] or [np.nan]))
  return dict(seq_per_sec=mean("seq_per_sec"), real_tokens_per_sec=mean("real_tokens_per_sec"),
              padding_fraction=mean("padding_fraction"), loss=rows[-1]["loss"],
              peak_bytes=stats.get("peak_bytes_in_use"), wall_s=wall,
              platform=jax.default_backend())


def worker_torch_finetune(smoke: bool, workdir: str, index: int) -> dict:
  """The plain torch loop of the module docstring on the case's HF dir."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  import finetune_common as fc  # pylint: disable=g-import-not-at-top
  case = FINETUNE_CASES[index]
  sizes = finetune_sizes(smoke)
  device = "cpu" if smoke else "cuda"
  model_dir = _model_dir(workdir, case)
  with open(_train_file(workdir), encoding="utf-8") as f:
    rows = [json.loads(line) for line in f if line.strip()]
  labels = sorted({r["label"] for r in rows})
  tok = transformers.AutoTokenizer.from_pretrained(model_dir)
  enc = tok([r["sentence"] for r in rows], truncation=True,
            max_length=RECIPE["max_seq_length"])["input_ids"]
  y = np.asarray([labels.index(r["label"]) for r in rows])
  torch.manual_seed(RECIPE["seed"])
  extra = {} if case.model == "modern" else {"attention_probs_dropout_prob": 0.1 if smoke else 0.0}
  model = transformers.AutoModelForSequenceClassification.from_pretrained(
      model_dir, num_labels=len(labels), **extra)
  if case.lora:
    import peft  # pylint: disable=g-import-not-at-top
    model = peft.get_peft_model(model, peft.LoraConfig(
        r=LORA_RANK, lora_alpha=LORA_ALPHA, lora_dropout=0.0,
        target_modules=["query", "value"], task_type="SEQ_CLS"))
  model.to(device).train()
  opt, schedule = _torch_optimizer(model, _lr(case), sizes["steps"], fused=not smoke)
  types = model.config.model_type != "modernbert"  # ModernBERT has no token types
  batches = fc.shuffled_batches(len(rows), RECIPE["batch_size"], RECIPE["seed"])
  losses, computed, real = [], 0, 0
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  start = None
  for step in range(sizes["steps"]):
    if step == 1:
      sync()
      start = time.perf_counter()
    picked = next(batches)
    width = max(len(enc[i]) for i in picked)
    ids = np.full((len(picked), width), tok.pad_token_id, np.int64)
    mask = np.zeros_like(ids)
    for j, i in enumerate(picked):
      ids[j, :len(enc[i])], mask[j, :len(enc[i])] = enc[i], 1
    inputs = dict(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                  labels=torch.from_numpy(y[picked]))
    if types:
      inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
    inputs = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
    if step >= 1:
      computed, real = computed + ids.size, real + int(mask.sum())
    with torch.autocast(device, dtype=torch.bfloat16, enabled=not smoke):
      loss = model(**inputs).loss
    fc.update(model, loss, opt, schedule)
    losses.append(loss.detach())
  sync()
  seconds = time.perf_counter() - start
  last = torch.stack(losses[-sizes["log_every"]:]).float().mean()
  attention = model.config._attn_implementation  # pylint: disable=protected-access
  return dict(seq_per_sec=(sizes["steps"] - 1) * RECIPE["batch_size"] / seconds,
              real_tokens_per_sec=real / seconds, padding_fraction=1 - real / computed,
              loss=float(last), attention=attention,
              peak_bytes=torch.cuda.max_memory_allocated() if device == "cuda" else None)


def _torch_optimizer(model, lr: float, steps: int, fused: bool):
  """AdamW over the trainable parameters (no decay on biases and norms) and the linear
  warmup/decay schedule of bert_jax's config."""
  import torch  # pylint: disable=g-import-not-at-top
  decay, no_decay = [], []
  for name, p in model.named_parameters():
    if p.requires_grad:
      flat = name.endswith("bias") or "LayerNorm" in name or "norm" in name.split(".")[-2]
      (no_decay if flat else decay).append(p)
  opt = torch.optim.AdamW([{"params": decay, "weight_decay": RECIPE["weight_decay"]},
                           {"params": no_decay, "weight_decay": 0.0}], lr=lr,
                          betas=(0.9, 0.999), eps=RECIPE["adam_eps"],
                          **({"fused": True} if fused else {}))
  import finetune_common as fc  # pylint: disable=g-import-not-at-top
  return opt, torch.optim.lr_scheduler.LambdaLR(
      opt, fc.warmup_then_decay(steps, RECIPE["warmup_ratio"]))


WORKERS = {"jax_finetune": worker_jax_finetune, "torch_finetune": worker_torch_finetune}


# -------------------------------------------------------------------- driver


def _gib(x: Optional[float]) -> str:
  return "n/a" if x is None else f"{x / 2**30:.2f} GiB"


def flops_per_real_token(model_dir: str, mean_tokens: float) -> float:
  """Training FLOPs (matmuls, 3x forward) per real token of an example `mean_tokens` long,
  attending to its own tokens only: what a padding-free step must compute. GLU feed-forwards
  (ModernBERT's GeGLU) have three e x m matmuls, BERT's two; the classifier is negligible."""
  with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
    c = json.load(f)
  e, m, n = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
  ffn = 3 if c.get("model_type") == "modernbert" else 2
  per_token = n * (2 * (4 * e * e + ffn * e * m) + 2 * 2 * mean_tokens * e)
  return 3.0 * per_token


def _mfu(real_tokens_per_sec: float, flops: float, peak: Optional[float]) -> str:
  return "n/a" if not peak else f"{real_tokens_per_sec * flops / peak:.1%}"


def rows(smoke: bool, unpacked: bool, workdir: str, run_worker: Callable[..., dict],
         echo: Callable[[tuple], None], peak: dict) -> list[tuple[str, ...]]:
  """The suite's table rows of the fine-tuning lines; `run_worker(name, smoke, *args)` is the
  suite's, `echo(row)` prints a finished row, `peak` is the suite's (bf16_peak, datasheet_peak
  FLOP/s). MFU counts real tokens only (`flops_per_real_token`). The peer of a pack=False line
  is its packed line's (the same torch loop)."""
  prepare(workdir, smoke)
  sizes = finetune_sizes(smoke)
  peers: dict[tuple, dict] = {}
  out = []
  for index, case in enumerate(FINETUNE_CASES):
    if case.optional and not unpacked:
      continue
    ours = run_worker("jax_finetune", smoke, workdir, str(index))
    key = (case.model, case.lora)
    if key not in peers:
      peers[key] = run_worker("torch_finetune", smoke, workdir, str(index))
    theirs = peers[key]
    tokens = theirs["real_tokens_per_sec"] / theirs["seq_per_sec"]  # per example
    flops = flops_per_real_token(_model_dir(workdir, case), tokens)
    out.append((
        f"{case.name} ({sizes['steps']} steps of {RECIPE['batch_size']}"
        f"{', tiny' if smoke else ''})",
        f"{ours['seq_per_sec']:,.1f} seq/s", f"{theirs['seq_per_sec']:,.1f} seq/s",
        f"{ours['seq_per_sec'] / theirs['seq_per_sec']:.2f}x",
        _mfu(ours["real_tokens_per_sec"], flops, peak["bf16_peak"]),
        _mfu(ours["real_tokens_per_sec"], flops, peak["datasheet_peak"]), case.target,
        f"{tokens:.1f} tokens/example; transformers MFU "
        f"{_mfu(theirs['real_tokens_per_sec'], flops, peak['bf16_peak'])} meas.; real tok/s "
        f"{ours['real_tokens_per_sec']:,.0f} vs {theirs['real_tokens_per_sec']:,.0f}; "
        f"padding {ours['padding_fraction']:.0%} vs {theirs['padding_fraction']:.0%}; "
        f"peak memory {_gib(ours['peak_bytes'])} vs {_gib(theirs['peak_bytes'])}; "
        f"loss {ours['loss']:.3f} vs {theirs['loss']:.3f}; torch attention "
        f"{theirs['attention']}"))
    echo(out[-1])
  return out
