"""launch/benchmark.py --suite=glue: the GLUE download's layout, the server's files, the table.

The GLUE dir is written here with each task's own columns and quirks (CoLA's headerless
train/dev, QQP's rows with missing fields, MNLI's 10-column test and matched/mismatched
files, STS-B's scores, the diagnostic set); tfds GLUE is tfds' mock data. Every figure of
the table is checked against the metrics.jsonl row it names, every submission file against
the server's rules (name, header, one row per test row in index order, label set).
"""

import json
import os
import subprocess
import sys
import zipfile

import pytest

import hf_fixtures
from bert_jax.data.readers import glue_dir
from bert_jax.errors import UserError
from bert_jax.suite import benchmark
from bert_jax.suite import glue
from bert_jax.suite import runs
from conftest import ROOT, child_env, override

WORDS = hf_fixtures.WORDS


def _sentence(i, n=6):
  return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(n))


def _lines(rows):
  return "".join("\t".join(str(c) for c in r) + "\n" for r in rows)


def write_glue_dir(root, n=12, test_rows=None):
  """A small GLUE download: every task's train/dev/test files in its own layout."""
  test_rows = test_rows or {}
  r = lambda i: _sentence(i)  # pylint: disable=unnecessary-lambda-assignment
  layouts = {
      "CoLA": lambda split, i: (["gj04", i % 2, "*" if i % 2 == 0 else "", r(i)]
                                if split != "test" else [i, r(i)]),
      "SST-2": lambda split, i: [r(i), i % 2] if split != "test" else [i, r(i)],
      "MRPC": lambda split, i: ([i % 2, 100 + i, 200 + i, r(i), r(i + 1)] if split != "test"
                                else [i, 100 + i, 200 + i, r(i), r(i + 1)]),
      "STS-B": lambda split, i: ([i, "main-news", "f", "2012", i, "s1", "s2", r(i), r(i + 2)]
                                 + ([f"{(i * 0.37) % 5:.2f}"] if split != "test" else [])),
      "QQP": lambda split, i: ([i, 2 * i, 2 * i + 1, r(i), r(i + 3), i % 2] if split != "test"
                               else [i, r(i), r(i + 3)]),
      "QNLI": lambda split, i: [i, r(i), r(i + 1)] + (
          [("entailment", "not_entailment")[i % 2]] if split != "test" else []),
      "RTE": lambda split, i: [i, r(i), r(i + 1)] + (
          [("entailment", "not_entailment")[i % 2]] if split != "test" else []),
      "WNLI": lambda split, i: [i, r(i), r(i + 1)] + ([i % 2] if split != "test" else []),
  }
  headers = {
      "CoLA": (None, ["index", "sentence"]),
      "SST-2": (["sentence", "label"], ["index", "sentence"]),
      "MRPC": (["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
               ["index", "#1 ID", "#2 ID", "#1 String", "#2 String"]),
      "STS-B": ("index genre filename year old_index source1 source2 sentence1 sentence2 "
                "score".split(),
                "index genre filename year old_index source1 source2 sentence1 "
                "sentence2".split()),
      "QQP": ("id qid1 qid2 question1 question2 is_duplicate".split(),
              "id question1 question2".split()),
      "QNLI": ("index question sentence label".split(), "index question sentence".split()),
      "RTE": ("index sentence1 sentence2 label".split(), "index sentence1 sentence2".split()),
      "WNLI": ("index sentence1 sentence2 label".split(), "index sentence1 sentence2".split()),
  }
  for name, make in layouts.items():
    d = root / name
    d.mkdir(parents=True)
    train_head, test_head = headers[name]
    for split in ("train", "dev", "test"):
      count = test_rows.get(name, n) if split == "test" else n
      # Test rows in shuffled index order: the submission must come back sorted.
      order = list(range(count))[::-1] if split == "test" else list(range(count))
      rows = [make(split, i) for i in order]
      if name == "QQP" and split != "test":
        rows.insert(3, [999, 1, 2, "a question without its pair"])  # QQP's malformed rows
      head = test_head if split == "test" else train_head
      (d / f"{split}.tsv").write_text(_lines(([head] if head else []) + rows))
  mnli = root / "MNLI"
  mnli.mkdir()
  labels = ("entailment", "neutral", "contradiction")
  parse = lambda i: f"( {r(i)} )"  # pylint: disable=unnecessary-lambda-assignment
  train_head = ("index promptID pairID genre sentence1_binary_parse sentence2_binary_parse "
                "sentence1_parse sentence2_parse sentence1 sentence2 label1 gold_label").split()
  dev_head = train_head[:-1] + "label2 label3 label4 label5 gold_label".split()
  test_head = train_head[:10]
  base = lambda i: [i, 10 * i, f"{i}e", "fiction", parse(i), parse(i + 1), parse(i),  # pylint: disable=unnecessary-lambda-assignment
                    parse(i + 1), r(i), r(i + 1)]
  (mnli / "train.tsv").write_text(_lines([train_head] + [base(i) + [labels[i % 3]] * 2
                                                         for i in range(n)]))
  for kind in ("matched", "mismatched"):
    (mnli / f"dev_{kind}.tsv").write_text(_lines([dev_head] + [base(i) + [labels[i % 3]] * 6
                                                               for i in range(n)]))
    (mnli / f"test_{kind}.tsv").write_text(_lines([test_head] + [base(i)
                                                                 for i in reversed(range(n))]))
  (root / "diagnostic").mkdir()
  (root / "diagnostic" / "diagnostic.tsv").write_text(_lines(
      [["index", "sentence1", "sentence2"]] + [[i, r(i), r(i + 5)] for i in range(n)]))
  return str(root)


def small_config(**overrides):
  c = runs.load_config()
  c.update(batch_size=8, eval_batch_size=8, max_seq_length=32, num_train_steps=2,
           warmup_steps=1, log_every_steps=1, eval_every_steps=2, checkpoint_every_steps=2,
           schedule="constant")
  return override(c, **overrides)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("suite") / "hf")
  hf_fixtures.save_hf_dir(hf_fixtures.make_model("BertModel", seed=0), path)
  return path


# --------------------------------------------------------------------------- the reader


def test_glue_dir_quirks_become_local_jsonl(tmp_path):
  root = write_glue_dir(tmp_path / "glue", n=6)
  out = glue_dir.convert_task(root, "cola", "CoLA", str(tmp_path / "cola"))
  train = [json.loads(l) for l in open(out["train"].path)]
  assert train[0] == {"sentence": _sentence(0), "label": "0"} and len(train) == 6  # headerless
  test = [json.loads(l) for l in open(out["test"].path)]
  assert [t["index"] for t in test] == [5, 4, 3, 2, 1, 0] and test[0]["sentence"] == _sentence(5)
  qqp = glue_dir.convert_task(root, "qqp", "QQP", str(tmp_path / "qqp"))
  assert qqp["train"].rows == 6 and qqp["train"].skipped == 1  # the row missing a field
  stsb = glue_dir.convert_task(root, "stsb", "STS-B", str(tmp_path / "stsb"))
  first = json.loads(open(stsb["dev"].path).readline())
  assert first == {"sentence1": _sentence(0), "sentence2": _sentence(2), "label": 0.0}
  mnli = glue_dir.convert_task(root, "mnli", "MNLI", str(tmp_path / "mnli"), diagnostic=True)
  assert sorted(mnli) == ["dev", "dev_mismatched", "test", "test_ax", "test_mismatched", "train"]
  dev = [json.loads(l) for l in open(mnli["dev_mismatched"].path)]
  assert [d["label"] for d in dev[:3]] == ["entailment", "neutral", "contradiction"]
  assert dev[1]["sentence1"] == _sentence(1) and dev[1]["sentence2"] == _sentence(2)
  assert glue_dir.read_indices(mnli["test_ax"].path) == list(range(6))


def test_server_labels():
  assert glue.server_label(glue.TASKS["cola"], "acceptable") == "1"  # tfds names
  assert glue.server_label(glue.TASKS["cola"], "0") == "0"  # the download's labels
  assert glue.server_label(glue.TASKS["wnli"], "entailment") == "1"
  assert glue.server_label(glue.TASKS["rte"], "not_entailment") == "not_entailment"
  assert glue.server_label(glue.TASKS["mnli"], "neutral") == "neutral"
  assert glue.server_label(glue.TASKS["stsb"], "7.2") == "5.000"
  assert glue.server_label(glue.TASKS["stsb"], "-0.25") == "0.000"
  # The paper's average is the mean of its nine figures (Table 1, BERT-base: 79.6).
  row = glue.PAPER_BERT_BASE_TEST
  assert round(sum(row[c] for c in glue.AVERAGE_OF) / 9, 1) == row["Average"]


def test_bad_input_names_the_culprit(tmp_path, model):
  root = write_glue_dir(tmp_path / "glue", n=4)
  base = small_config()
  opts = lambda **kw: benchmark.Options(**{**dict(  # pylint: disable=unnecessary-lambda-assignment
      suite="glue", init_checkpoint=model, workdir=str(tmp_path / "w"), data=root,
      check_counts=False), **kw})
  with pytest.raises(UserError, match="unknown GLUE task 'colaa'"):
    benchmark.run(opts(tasks=["colaa"]), base, train=_no_training)
  os.remove(os.path.join(root, "RTE", "dev.tsv"))
  with pytest.raises(UserError, match=r"missing file .*RTE/dev.tsv"):
    benchmark.run(opts(tasks=["rte"]), base, train=_no_training)
  with pytest.raises(UserError, match=r"CoLA/test.tsv: 4 test rows for CoLA.tsv, the official "
                     r"GLUE test set has 1063 \(--check_counts=false to allow\)"):
    benchmark.run(opts(tasks=["cola"], check_counts=True), base, train=_no_training)
  os.remove(os.path.join(root, "diagnostic", "diagnostic.tsv"))
  with pytest.raises(UserError, match="no diagnostic set"):
    benchmark.run(opts(tasks=["mnli"]), base, train=_no_training)
  with pytest.raises(UserError, match="--learning_rates: 'x3e-5' is not a number"):
    runs.parse_learning_rates("5e-5,x3e-5")
  with pytest.raises(UserError, match="--suite=superglue"):
    benchmark.run(opts(suite="superglue"), base, train=_no_training)


def _no_training(config, workdir):
  raise AssertionError(f"trained {workdir} although the input was bad")


# --------------------------------------------------------------------------- end to end


def check_suite_output(workdir, tasks, tests):
  """The table's figures equal the rows they name; the submission follows the server's rules."""
  results = json.load(open(os.path.join(workdir, "results.json")))
  md = open(os.path.join(workdir, "results.md")).read()
  assert "| BERT-base, test (paper) |" in md and glue.CITATION in md
  for column in results["columns"]:
    if column["dev"] is None or column["column"] == "Average":
      continue
    source = column["source"]
    if " step " in source:  # a metrics.jsonl row
      path, step = source.rsplit(" step ", 1)
      rows = [json.loads(l) for l in open(path)]
      key = "eval_" + next(k for c, t, k in glue.COLUMNS if c == column["column"])
      assert column["dev"] in [r[key] for r in rows if r["step"] == int(step) and key in r]
    else:
      assert "scored against" in source
  for name in tasks:
    summary = results["tasks"][name]
    assert os.path.isdir(os.path.join(summary["workdir"], "best"))
    best = json.load(open(os.path.join(summary["workdir"], "best", "best.json")))
    assert best["value"] == max(r["value"] for r in summary["runs"])
    assert os.path.getsize(os.path.join(workdir, "plots", f"{name}.png")) > 1000
  expected = [s for name in tasks for s in glue.TASKS[name].submissions]
  with zipfile.ZipFile(os.path.join(workdir, "submission.zip")) as z:
    assert sorted(z.namelist()) == sorted(s.file for s in expected)
    for sub in expected:
      task = next(t for t in glue.TASKS.values() if sub in t.submissions)
      lines = z.read(sub.file).decode().splitlines()
      assert lines == open(os.path.join(workdir, "submission", sub.file)).read().splitlines()
      assert lines[0] == "index\tprediction"
      indices, labels = zip(*(l.split("\t") for l in lines[1:]))
      assert list(map(int, indices)) == sorted(tests[sub.file]), sub.file  # index order
      if task.name == "stsb":
        assert all(0.0 <= float(v) <= 5.0 for v in labels)
      else:
        allowed = {"index": {"0", "1"}, "name": set(task.label_names)}[task.server_labels]
        assert set(labels) <= allowed, (sub.file, set(labels))
  return results


@pytest.mark.slow
def test_glue_suite_on_an_original_layout_dir(tmp_path, model):
  """All nine tasks from the GLUE download's files, two learning rates for CoLA."""
  root = write_glue_dir(tmp_path / "glue", n=12, test_rows={"RTE": 7})
  workdir = str(tmp_path / "suite")
  lines = []
  options = benchmark.Options(suite="glue", init_checkpoint=model, workdir=workdir, data=root,
                              learning_rates=[1e-3], check_counts=False)
  benchmark.run(options, small_config(), say=lines.append)
  tests = {s.file: list(range(7 if s.file == "RTE.tsv" else 12))
           for t in glue.TASKS.values() for s in t.submissions}
  results = check_suite_output(workdir, list(glue.TASKS), tests)
  assert len([l for l in lines if l.startswith("[")]) == 9  # one line per finished run
  columns = {c["column"]: c for c in results["columns"]}
  # MNLI-mm from the download's dev_mismatched file is scored from written predictions.
  assert "dev_mismatched.tsv scored against" in columns["MNLI-mm"]["source"]
  assert columns["Average"]["dev"] == pytest.approx(
      sum(columns[c]["dev"] for c in glue.AVERAGE_OF) / 9)
  # STS-B is a regression (num_labels=1): Spearman and Pearson are logged.
  assert columns["STS-B Spearman"]["dev"] is not None
  # Running again: every run is found finished and skipped, the outputs are rewritten.
  again = []
  benchmark.run(options, small_config(), train=_no_training, say=again.append)
  assert sum("done before, skipped" in l for l in again) == 9


@pytest.mark.slow
def test_glue_suite_on_tfds_mock_data_through_the_launcher(tmp_path, model):
  """The launcher on tfds' mock GLUE (in a child process: mock_data patches tfds there)."""
  workdir = tmp_path / "suite"
  script = tmp_path / "run_suite.py"
  script.write_text(
      "import sys, runpy\n"
      "import tensorflow_datasets as tfds\n"
      "sys.argv = ['benchmark.py'] + sys.argv[1:]\n"
      "with tfds.testing.mock_data(num_examples=12):\n"
      f"  runpy.run_path({os.path.join(ROOT, 'launch', 'benchmark.py')!r}, run_name='__main__')\n")
  args = [f"--init_checkpoint={model}", f"--workdir={workdir}", "--suite=glue",
          "--tasks=cola,stsb,mnli,rte", "--learning_rates=1e-3,5e-4", "--check_counts=false",
          "--config.batch_size=8", "--config.eval_batch_size=8", "--config.max_seq_length=32",
          "--config.num_train_steps=2", "--config.warmup_steps=1",
          "--config.eval_every_steps=2", "--config.checkpoint_every_steps=2"]
  r = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                     timeout=900, env=child_env(1))
  assert r.returncode == 0, r.stderr[-3000:]
  assert "| bert_jax, dev |" in r.stdout and r.stdout.count("] cola lr=") == 2
  # Mock test rows carry random `idx` values: the files must list them sorted, 12 per set.
  tests = {}
  for name in ("cola", "stsb", "mnli", "rte"):
    for sub in glue.TASKS[name].submissions:
      role = f"_{sub.role}" if sub.role else ""
      tests[sub.file] = glue_dir.read_indices(str(workdir / name / "data" / f"test{role}.jsonl"))
      assert len(tests[sub.file]) == 12
  results = check_suite_output(str(workdir), ["cola", "stsb", "mnli", "rte"], tests)
  columns = {c["column"]: c for c in results["columns"]}
  assert " step " in columns["MNLI-mm"]["source"]  # tfds' mismatched set is logged
  r = subprocess.run([sys.executable, str(script), *args[:-1], "--learning_rates=3e-5,fast"],
                     capture_output=True, text=True, timeout=300, env=child_env(1))
  assert r.returncode == 1
  assert r.stderr.strip().splitlines()[-1] == "error: --learning_rates: 'fast' is not a number"


def test_task_epochs_reach_the_runs_and_finished_runs_are_skipped(tmp_path, model):
  """The sweep's configs (fake trainer): per-task epochs, learning rates, seeds; a run whose
  workdir says it finished is not trained again, an unfinished one is."""
  seen = []

  def fake_train(config, workdir):
    seen.append((config.task, config.learning_rate, config.seed, config.num_epochs, workdir))
    os.makedirs(os.path.join(workdir, "best"), exist_ok=True)
    value = 0.5 + config.learning_rate  # the higher rate wins
    with open(os.path.join(workdir, "best", "best.json"), "w") as f:
      json.dump({"step": 3, "metric": "eval_accuracy", "value": value}, f)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
      f.write(json.dumps({"step": 3, "eval_accuracy": value}) + "\n")
    return {"step": 3, "preempted": False}

  tasks = [type("T", (), {"name": n, "config": {"task": f"glue/{n}", **(
      {"num_epochs": e} if e else {})}})() for n, e in (("mrpc", 5.0), ("rte", None))]
  base = small_config()
  got, preempted = runs.sweep(base, tasks, model, str(tmp_path), [0.1, 0.2], [1, 2],
                              train=fake_train, report=lambda _: None)
  assert not preempted and len(got) == 8
  assert sorted((t, lr, s, e) for t, lr, s, e, _ in seen) == sorted(
      [("glue/mrpc", lr, s, 5.0) for lr in (0.1, 0.2) for s in (1, 2)]
      + [("glue/rte", lr, s, base.num_epochs) for lr in (0.1, 0.2) for s in (1, 2)])
  assert {t: r.learning_rate for t, r in runs.best_runs(got).items()} == {"mrpc": 0.2, "rte": 0.2}
  os.remove(os.path.join(str(tmp_path), "rte", "lr0.1_seed2", runs.DONE_FILE))  # interrupted
  seen.clear()
  again, _ = runs.sweep(base, tasks, model, str(tmp_path), [0.1, 0.2], [1, 2],
                        train=fake_train, report=lambda _: None)
  assert [(t, lr, s) for t, lr, s, _, _ in seen] == [("glue/rte", 0.1, 2)]
  assert sum(r.skipped for r in again) == 7
  assert runs.parse_task_epochs("mrpc=5, wnli=2.5", list(glue.TASKS)) == {"mrpc": 5.0,
                                                                         "wnli": 2.5}
  with pytest.raises(UserError, match="--task_epochs: 'mrcp=5' is not TASK=EPOCHS"):
    runs.parse_task_epochs("mrcp=5", list(glue.TASKS))
  with pytest.raises(UserError, match="--task_epochs: 'five' \\(for mrpc\\) is not a number"):
    runs.parse_task_epochs("mrpc=five", list(glue.TASKS))
