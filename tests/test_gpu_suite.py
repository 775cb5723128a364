"""bench/gpu_suite.py --smoke: the GPU suite's own logic, on CPU with tiny sizes; and the
GPU tests' code (tests/test_gpu.py) run on CPU, where `cudnn` falls back to XLA."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import conftest
import test_gpu

SUITE = os.path.join(conftest.ROOT, "bench", "gpu_suite.py")
GPU_TESTS = ("test_cudnn_attention_equals_xla[padding]", "test_cudnn_attention_equals_xla[packed]",
             "test_bf16_train_step_tracks_fp32", "test_bf16_embeddings_match_transformers")
FINETUNE_ROWS = ("finetune BERT-base short sentences (packed)",
                 "finetune BERT-base short sentences (pack=False)",
                 "finetune ModernBERT-base-sized (packed)", "LoRA BERT-base (rank 8, q+v)")


def _gpu_suite():
  sys.path.insert(0, os.path.dirname(SUITE))
  import gpu_suite  # pylint: disable=g-import-not-at-top
  return gpu_suite


@pytest.mark.slow
def test_gpu_suite_smoke_prints_every_row_and_skips_the_gpu_tests_by_name():
  proc = subprocess.run([sys.executable, SUITE, "--smoke", "--unpacked"],
                        env=conftest.child_env(), capture_output=True, text=True, timeout=1200)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  rows = {line.split("  ")[0]: line for line in proc.stdout.splitlines()}
  for name in GPU_TESTS:  # the suite ran pytest, which collected each and skipped it on CPU
    assert name in rows and "SKIP" in rows[name] and "needs a GPU" in rows[name], proc.stdout
  assert "pytest -m gpu tests/test_gpu.py: 0 PASS, 4 SKIP" in proc.stdout
  for case in ("BERT-base seq 128", "BERT-large seq 128", "BERT-large seq 512 packed"):
    line = next(line for name, line in rows.items() if name.startswith(f"pretrain {case} "))
    assert line.count("seq/s") == 2 and "x " in line, line
  padding = {}
  for case in FINETUNE_ROWS:  # the user's command against the torch loop, each with its ratio
    line = next(line for name, line in rows.items() if name.startswith(f"{case} ("))
    assert line.count("seq/s") == 2 and "x " in line and "padding " in line, line
    assert "peak memory n/a vs n/a" in line, line  # no device memory stats on CPU
    padding[case] = [float(x) for x in re.search(r"padding (\d+)% vs (\d+)%", line).groups()]
  for case in FINETUNE_ROWS[:1] + FINETUNE_ROWS[2:]:  # packed rows: (almost) no padding computed
    assert padding[case][0] < 0.5 * padding[case][1], (case, padding[case])
  packed, unpacked = padding[FINETUNE_ROWS[0]][0], padding[FINETUNE_ROWS[1]][0]
  assert unpacked > 2 * packed, padding  # the same command with pack=False computes padding
  embed = next(line for name, line in rows.items() if name.startswith("embed "))
  assert embed.count("tok/s") == 2 and "min cosine 1.0000" in embed, embed
  assert "measured bf16 matmul peak" in proc.stdout
  assert "FAIL" not in proc.stdout


@pytest.mark.parametrize("family", ["bert", "modernbert"])
def test_finetune_peer_decays_matrices_only(family):
  # The torch loop's AdamW: weight decay on the kernels and embeddings, none on biases and
  # norms (bert_jax's rule), for both model families of the fine-tuning lines.
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  _gpu_suite()
  import gpu_finetune  # pylint: disable=g-import-not-at-top
  sizes = dict(vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
               intermediate_size=48)
  config = (transformers.BertConfig(**sizes) if family == "bert" else
            transformers.ModernBertConfig(pad_token_id=0, **sizes))
  torch.manual_seed(0)
  model = transformers.AutoModelForSequenceClassification.from_config(config)
  opt, schedule = gpu_finetune._torch_optimizer(model, 1e-3, steps=30, fused=False)
  by_id = {id(p): p for p in model.parameters()}
  decay, flat = ({id(p) for p in g["params"]} for g in opt.param_groups)
  assert decay | flat == set(by_id) and not decay & flat
  assert {i for i in by_id if by_id[i].ndim >= 2} == decay
  assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
  lrs = []
  for _ in range(30):
    lrs.append(schedule.get_last_lr()[0])
    opt.step()
    schedule.step()
  # bert_jax's schedule of the same run (configs/finetune.py: 10% warmup, linear decay).
  from bert_jax import optim  # pylint: disable=g-import-not-at-top
  c = conftest.load_config("finetune.py")
  c.update(learning_rate=1e-3, num_train_steps=30, warmup_steps=int(round(c.warmup_ratio * 30)))
  ours = optim.make_schedule(c)
  np.testing.assert_allclose(lrs, [float(ours(k)) for k in range(30)], rtol=1e-6, atol=1e-12)


def test_only_runs_the_sections_it_names_and_rejects_others(monkeypatch, capsys):
  # The whole suite overran a 10-minute call on an H200, so it is split across calls by
  # --only; each section runs its workers alone, and an unknown name is a usage error.
  gpu_suite = _gpu_suite()
  calls = []

  def fake_worker(name, smoke, *args, timeout=900):
    del smoke, args, timeout
    calls.append(name)
    if name == "peak":
      return dict(device="fake", platform="gpu", bf16_peak=1e15, datasheet_peak=None)
    return dict(seq_per_sec=10.0, loss=1.0)

  monkeypatch.setattr(gpu_suite, "_run_worker", fake_worker)
  assert gpu_suite.main(["--smoke", "--only=pretrain"]) == 0
  assert calls == ["peak"] + ["jax_pretrain", "torch_pretrain"] * 3
  lines = capsys.readouterr().out.splitlines()
  echoed = [l for l in lines if l.startswith("  pretrain BERT-") and " | " in l]
  assert len(echoed) == 3 and all("seq/s | " in l for l in echoed), lines  # each as it ends
  assert sum(l.startswith("pretrain BERT-") for l in lines) == 3, lines  # then the table
  with pytest.raises(SystemExit):
    gpu_suite.main(["--only=pretrain,bogus"])
  assert "sections are tests,pretrain,embed,finetune" in capsys.readouterr().err


@pytest.mark.slow
def test_a_traced_pretraining_row_keeps_its_timed_window_and_writes_a_perfetto_trace(tmp_path):
  # --trace_dir: three more steps run under jax.profiler after the timed ones; the row the
  # suite reports is still the timed window's, and the trace is one readable file.
  import gzip  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  gpu_suite = _gpu_suite()
  import pretrain_peers  # pylint: disable=g-import-not-at-top
  sizes = gpu_suite._sizes(True)  # pylint: disable=protected-access
  case = sizes["cases"][0]
  c = gpu_suite._train_config(case, sizes, 4, "float32")  # pylint: disable=protected-access
  c.log_every_steps = 2
  trace = str(tmp_path / "pretrain0.trace.json.gz")
  out = pretrain_peers.run_bert_jax(c, pretrain_peers.synthetic_data(c, vocab_size=sizes["vocab"]),
                                    trace_to=trace)
  assert len(out["losses"]) == 4  # rows at steps 2 and 4 (timed), then 6 and 7 (traced)
  assert out["loss"] == out["losses"][1]  # the reported row is step 4's
  with gzip.open(trace, "rt") as f:
    events = json.load(f)["traceEvents"]
  assert any("train_step" in str(e.get("name", "")) for e in events)


def test_finetune_mfu_flops_are_the_models_matmuls(tmp_path):
  # BERT: bert_jax's own training-FLOP count per token; ModernBERT (GeGLU, no biases): 6 x the
  # encoder layers' Linear weights (what transformers' model holds), plus the attention term.
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from bert_jax import metrics  # pylint: disable=g-import-not-at-top
  from bert_jax.model import BertConfig  # pylint: disable=g-import-not-at-top
  _gpu_suite()
  import gpu_finetune  # pylint: disable=g-import-not-at-top
  sizes = dict(vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
               intermediate_size=48)
  bert = transformers.BertConfig(**sizes)
  bert.save_pretrained(tmp_path / "bert")
  ref = metrics.pretraining_flops_per_sequence(BertConfig.from_hf_dict(bert.to_dict()), 17, 0,
                                               with_nsp=False) / 17
  assert gpu_finetune.flops_per_real_token(str(tmp_path / "bert"), 17) == pytest.approx(ref)
  modern = transformers.ModernBertConfig(pad_token_id=0, **sizes)
  modern.save_pretrained(tmp_path / "modern")
  layers = transformers.ModernBertModel(modern).layers
  weights = sum(m.weight.numel() for m in layers.modules() if isinstance(m, torch.nn.Linear))
  got = gpu_finetune.flops_per_real_token(str(tmp_path / "modern"), 17)
  assert got == pytest.approx(6 * weights + 3 * 3 * 2 * 2 * 17 * 32)


@pytest.mark.parametrize("unpacked", [False, True])
def test_finetune_rows_share_a_peer_and_skip_pack_false_unless_asked(tmp_path, monkeypatch,
                                                                     unpacked):
  import transformers  # pylint: disable=g-import-not-at-top
  _gpu_suite()
  import gpu_finetune  # pylint: disable=g-import-not-at-top
  sizes = dict(vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
               intermediate_size=48)

  def fake_prepare(workdir, smoke):
    transformers.BertConfig(**sizes).save_pretrained(os.path.join(workdir, "ft_bert"))
    transformers.ModernBertConfig(pad_token_id=0, **sizes).save_pretrained(
        os.path.join(workdir, "ft_modern"))

  calls = []

  def fake_worker(name, smoke, workdir, index):
    calls.append((name, int(index)))
    jax_side = name == "jax_finetune"
    return dict(seq_per_sec=200.0 if jax_side else 100.0,
                real_tokens_per_sec=3400.0 if jax_side else 1700.0,
                padding_fraction=0.05 if jax_side else 0.4, loss=0.69,
                peak_bytes=2 ** 30 if jax_side else None, attention="sdpa")

  monkeypatch.setattr(gpu_finetune, "prepare", fake_prepare)
  shown = []
  peak = dict(bf16_peak=1e12, datasheet_peak=None)
  got = gpu_finetune.rows(True, unpacked, str(tmp_path), fake_worker, shown.append, peak)
  expect = [("jax_finetune", 0), ("torch_finetune", 0)] + [("jax_finetune", 1)] * unpacked + [
      ("jax_finetune", 2), ("torch_finetune", 2), ("jax_finetune", 3), ("torch_finetune", 3)]
  assert calls == expect  # pack=False reuses the packed line's torch loop
  assert shown == got and len(got) == 3 + unpacked
  names = [r[0].split(" (6 steps")[0] for r in got]
  assert names == [c.name for c in gpu_finetune.FINETUNE_CASES if unpacked or not c.optional]
  for row, (_, index) in zip(got, [c for c in expect if c[0] == "jax_finetune"]):
    case = gpu_finetune.FINETUNE_CASES[index]
    flops = gpu_finetune.flops_per_real_token(str(tmp_path / f"ft_{case.model}"), 17.0)
    assert row[1:4] == ("200.0 seq/s", "100.0 seq/s", "2.00x")
    assert row[4] == f"{3400 * flops / 1e12:.1%}" and row[5] == "n/a"
    assert "17.0 tokens/example" in row[7] and "padding 5% vs 40%" in row[7]
    assert "peak memory 1.00 GiB vs n/a" in row[7]


def test_a_failing_gpu_test_stops_the_suite_and_is_named(monkeypatch, capsys):
  gpu_suite = _gpu_suite()
  calls = []

  def fake_worker(name, smoke, *args, **kwargs):
    calls.append(name)
    if name == "peak":
      return dict(device="fake", platform="gpu", bf16_peak=1e15, datasheet_peak=989e12)
    raise AssertionError(f"the suite went on to {name} after a failed test")

  def fake_tests(smoke):
    calls.append("tests")
    return [dict(name=GPU_TESTS[0], status="PASS", detail="max |d out| 1.0e-03"),
            dict(name=GPU_TESTS[1], status="FAIL", detail="max |d out| 3.0e-01; AssertionError")]

  monkeypatch.setattr(gpu_suite, "_run_worker", fake_worker)
  monkeypatch.setattr(gpu_suite, "run_gpu_tests", fake_tests)
  assert gpu_suite.main([]) == 1
  out, err = capsys.readouterr()
  assert calls == ["peak", "tests"]
  assert GPU_TESTS[1] in err and "3.0e-01" in err
  assert "FAIL" in out


@pytest.mark.slow
def test_run_gpu_tests_reads_each_test_of_the_pytest_child():
  rows = _gpu_suite().run_gpu_tests(smoke=True)
  assert [r["name"] for r in rows] == list(GPU_TESTS)
  assert {r["status"] for r in rows} == {"SKIP"}
  assert all("needs a GPU: jax.default_backend() is 'cpu'" in r["detail"] for r in rows), rows


# The GPU tests' own code on CPU at tiny sizes: `cudnn` falls back to XLA here, so the two
# kernels agree exactly and no fused call is compiled; bf16 runs on the CPU.


@pytest.mark.parametrize("packed", [False, True])
def test_gpu_attention_check_runs_on_cpu(packed):
  gap = test_gpu.attention_gap(packed, shape=(2, 128, 2, 64))
  assert gap["err_out"] == 0.0 and gap["err_grad"] == 0.0
  assert gap["grad_scale"] > 0.1 and not gap["fused"]


@pytest.mark.slow
def test_gpu_bf16_check_runs_on_cpu():
  sizes = dict(preset="tiny", steps=4, batch=4, seq=32, preds=5, vocab=512)
  fp32 = test_gpu.train_losses("float32", **sizes)
  bf16 = test_gpu.train_losses("bfloat16", **sizes)
  assert len(fp32) == len(bf16) == 4
  assert np.isfinite(bf16).all() and fp32 != bf16  # bf16 really ran in bf16
  np.testing.assert_allclose(bf16, fp32, rtol=0.02)
  assert abs(fp32[0] - np.log(512) - np.log(2)) < 0.3  # a fresh model: log V (MLM) + log 2 (NSP)


@pytest.mark.slow
@pytest.mark.parametrize("dtype,floor", [("auto", 0.9999), ("bfloat16", 0.999)])
def test_gpu_embedding_check_runs_on_cpu(tmp_path, dtype, floor):
  # 'auto' is float32 on CPU; bf16 measured 0.99999 here (the GPU test asks for > 0.99).
  cos = test_gpu.embedding_cosines(str(tmp_path), texts=48, hidden=128, layers=2, dtype=dtype)
  assert len(cos) == 48 and cos.min() > floor
