"""Dense retrieval against sentence-transformers (encode + util.semantic_search) on the same HF
checkpoint; resumable chunked builds; data parallelism over devices and processes; bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bert_jax import retrieval
from bert_jax.errors import UserError

sys.path.insert(0, os.path.dirname(__file__))
import hf_fixtures  # pylint: disable=g-import-not-at-top,wrong-import-position
from conftest import ROOT, child_env, process_results, run_child, start_processes  # pylint: disable=g-import-not-at-top,wrong-import-position


def corpus_lines(n=57, seed=0):
  rng = np.random.default_rng(seed)
  words = np.asarray(hf_fixtures.WORDS)
  return [" ".join(rng.choice(words, size=int(rng.integers(1, 30)))) for _ in range(n)]


QUERIES = ["the capital of france", "ibm love me bert", "a child and a woman", "one"]


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
  root = tmp_path_factory.mktemp("retrieval")
  directory = hf_fixtures.save_hf_dir(hf_fixtures.make_model("BertModel", seed=7),
                                      str(root / "hf"))
  other = hf_fixtures.save_hf_dir(hf_fixtures.make_model("BertModel", seed=8), str(root / "other"))
  corpus = root / "corpus.txt"
  corpus.write_text("".join(line + "\n" for line in corpus_lines()), encoding="utf-8")
  return directory, other, str(corpus)


def _st_model(directory, normalize):
  from sentence_transformers import SentenceTransformer  # pylint: disable=g-import-not-at-top
  from sentence_transformers.sentence_transformer import modules as st  # pylint: disable=g-import-not-at-top
  word = st.Transformer(directory, max_seq_length=64)
  modules = [word, st.Pooling(word.get_embedding_dimension(), pooling_mode="mean")]
  if normalize:
    modules.append(st.Normalize())
  return SentenceTransformer(modules=modules, device="cpu")


@pytest.mark.parametrize("normalize", [True, False])
def test_search_matches_sentence_transformers(hf, tmp_path, normalize):
  from sentence_transformers import util  # pylint: disable=g-import-not-at-top
  directory, _, corpus = hf
  jsonl = tmp_path / "corpus.jsonl"
  lines = corpus_lines()
  jsonl.write_text("".join(json.dumps({"id": f"doc{i}", "text": t}) + "\n"
                           for i, t in enumerate(lines)), encoding="utf-8")
  out = retrieval.build_index(directory, str(jsonl), str(tmp_path / "index"),
                              retrieval.IndexOptions(normalize=normalize, chunk_lines=10),
                              progress=False)
  index = retrieval.Index.load(out)
  st = _st_model(directory, normalize)
  corpus_st = st.encode(lines, convert_to_tensor=True)
  queries_st = st.encode(QUERIES, convert_to_tensor=True)
  np.testing.assert_allclose(index.vectors, corpus_st.numpy(), atol=2e-5, rtol=0)
  want = util.semantic_search(queries_st, corpus_st, top_k=10,
                              score_function=util.cos_sim if normalize else util.dot_score)
  got = index.search(QUERIES, top_k=10)
  for g, w in zip(got, want):
    assert [h["id"] for h in g] == [f"doc{h['corpus_id']}" for h in w]
    assert [h["text"] for h in g] == [lines[h["corpus_id"]] for h in w]
    np.testing.assert_allclose([h["score"] for h in g], [h["score"] for h in w], atol=1e-5)
    assert [h["rank"] for h in g] == list(range(1, 11))
  assert index.meta["metric"] == ("cosine" if normalize else "inner_product")


def test_blocked_exact_search_matches_semantic_search():
  import torch  # pylint: disable=g-import-not-at-top
  from sentence_transformers import util  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  corpus = rng.normal(size=(1000, 24)).astype(np.float32)
  queries = rng.normal(size=(33, 24)).astype(np.float32)
  scores, rows = retrieval.exact_search(corpus, queries, 10, query_block=7, corpus_block=50)
  want = util.semantic_search(torch.from_numpy(queries), torch.from_numpy(corpus), top_k=10,
                              score_function=util.dot_score, query_chunk_size=5,
                              corpus_chunk_size=64)
  np.testing.assert_array_equal(rows, [[h["corpus_id"] for h in w] for w in want])
  np.testing.assert_allclose(scores, [[h["score"] for h in w] for w in want], atol=1e-5)
  # float16 storage: same hits up to rounding, scores computed in float32.
  half = retrieval.exact_search(corpus.astype(np.float16), queries, 10)
  assert np.mean(half[1] == rows) > 0.9


def test_ann_recall_against_exact():
  rng = np.random.default_rng(2)
  centers = rng.normal(size=(20, 32))
  corpus = (centers[rng.integers(0, 20, 3000)] + 0.5 * rng.normal(size=(3000, 32)))
  corpus = (corpus / np.linalg.norm(corpus, axis=1, keepdims=True)).astype(np.float32)
  queries = corpus[rng.integers(0, 3000, 100)] + 0.05 * rng.normal(size=(100, 32))
  exact = retrieval.exact_search(corpus, queries, 10)[1]
  approx = retrieval.ann_search(retrieval.build_ann(corpus, m=16), queries, 10, ef_search=64)[1]
  recall = retrieval.recall_at_k(exact, approx)
  assert 0.9 <= recall <= 1.0, recall
  assert retrieval.recall_at_k(exact, exact[:, ::-1]) == 1.0
  assert retrieval.recall_at_k(exact, np.full_like(exact, -1)) == 0.0


def test_interrupted_build_resumes_from_its_chunks(hf, tmp_path):
  directory, _, corpus = hf
  full = retrieval.build_index(directory, corpus, str(tmp_path / "full"),
                               retrieval.IndexOptions(chunk_lines=20, normalize=True),
                               progress=False)
  half = retrieval.IndexOptions(chunk_lines=20, normalize=True, float16=True, ann=True)

  class Interrupted(Exception):
    pass

  def stop(k):
    raise Interrupted(f"after chunk {k}")

  out = str(tmp_path / "index")
  with pytest.raises(Interrupted):
    retrieval.build_index(directory, corpus, out, half, progress=False, on_chunk=stop)
  assert not os.path.exists(out)
  assert sorted(f for f in os.listdir(out + ".partial") if f.startswith("chunk")) == [
      "chunk-00000.npy"]
  embedded = []
  retrieval.build_index(directory, corpus, out, half, progress=False, on_chunk=embedded.append)
  assert embedded == [1, 2]  # 57 lines = chunks 0, 1, 2; chunk 0 was kept
  assert not os.path.exists(out + ".partial")
  index, reference = retrieval.Index.load(out), retrieval.Index.load(full)
  assert index.vectors.dtype == np.float16
  np.testing.assert_allclose(index.vectors, reference.vectors, atol=1e-3)
  assert index.texts == reference.texts == corpus_lines() and index.ids == list(range(57))
  hits = index.search(QUERIES, top_k=5, ann=True)
  assert [h["rank"] for h in hits[0]] == [1, 2, 3, 4, 5]
  assert retrieval.recall_at_k(
      np.asarray([[h["id"] for h in q] for q in reference.search(QUERIES, top_k=5)]),
      np.asarray([[h["id"] for h in q] for q in hits])) >= 0.8


def test_bad_input_api(hf, tmp_path):
  directory, other, corpus = hf
  empty = tmp_path / "empty.txt"
  empty.write_text("")
  with pytest.raises(UserError, match="corpus is empty"):
    retrieval.build_index(directory, str(empty), str(tmp_path / "e"), progress=False)
  assert not os.path.exists(tmp_path / "e") and not os.path.exists(tmp_path / "e.partial")
  out = retrieval.build_index(directory, corpus, str(tmp_path / "i"), progress=False)
  with pytest.raises(UserError, match="already exists"):
    retrieval.build_index(directory, corpus, out, progress=False)
  index = retrieval.Index.load(out)
  assert len(index.search("one", top_k=58)[0]) == 57  # all there are
  with pytest.raises(UserError, match="pooling='mean', not 'cls'"):
    index.check_settings(pooling="cls")
  with pytest.raises(UserError, match="is another model"):
    index.check_settings(other)
  index.check_settings(directory, pooling="mean", normalize=False)
  with pytest.raises(UserError, match="does not exist"):
    retrieval.Index.load(str(tmp_path / "missing"))
  with pytest.raises(UserError, match="has no ANN graph"):
    index.search("one", top_k=1, ann=True)


def test_overwrite_onto_a_file_is_refused_before_embedding(hf, tmp_path, monkeypatch):
  directory, _, corpus = hf
  target = tmp_path / "not_a_dir"
  target.write_text("keep me")
  from bert_jax.formats import convert  # pylint: disable=g-import-not-at-top

  def no_model(*args, **kwargs):
    raise AssertionError("the model was loaded before the output was checked")

  monkeypatch.setattr(convert, "from_pretrained", no_model)
  with pytest.raises(UserError, match="--output=.*not_a_dir exists and is a file"):
    retrieval.build_index(directory, corpus, str(target), retrieval.IndexOptions(overwrite=True),
                          progress=False)
  with pytest.raises(UserError, match="--output=.*missing_parent/index: directory"):
    retrieval.build_index(directory, corpus, str(tmp_path / "missing_parent" / "index"),
                          progress=False)
  assert target.read_text() == "keep me"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["not_a_dir"]  # no .partial, no temp


def test_index_whose_model_was_deleted_names_it(hf, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  directory, _, corpus = hf
  model = tmp_path / "model"
  shutil.copytree(directory, model)
  out = retrieval.build_index(str(model), corpus, str(tmp_path / "index"), progress=False)
  shutil.rmtree(model)
  index = retrieval.Index.load(out)
  with pytest.raises(UserError, match=f"needs its model {model} .'model' in index.json.*missing"):
    index.search("one")
  index.check_settings(directory)  # the same weights elsewhere: searchable again
  assert [h["rank"] for h in index.search("one", top_k=3)[0]] == [1, 2, 3]


def _run(script, *args):
  return subprocess.run([sys.executable, os.path.join(ROOT, "launch", script), *args],
                        env=child_env(), capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.slow
def test_launchers_and_their_errors(hf, tmp_path):
  directory, other, corpus = hf
  out = tmp_path / "index"
  done = _run("build_index.py", f"--model={directory}", f"--input={corpus}", f"--output={out}",
              "--normalize", "--chunk_lines=25")
  assert done.returncode == 0, done.stderr
  assert f"-> {out}" in done.stderr
  queries = tmp_path / "q.txt"
  queries.write_text("\n".join(QUERIES) + "\n", encoding="utf-8")
  done = _run("search.py", f"--index={out}", f"--queries={queries}", "--top_k=3", "--json")
  assert done.returncode == 0, done.stderr
  got = [json.loads(line) for line in done.stdout.strip().splitlines()]
  assert got == retrieval.Index.load(str(out)).search(QUERIES, top_k=3)
  done = _run("search.py", f"--index={out}", "--query=one", "--top_k=100", "--json")
  assert done.returncode == 0, done.stderr
  assert len(json.loads(done.stdout)) == 57
  assert "--top_k=100 but the index holds only 57 vectors" in done.stderr
  import shutil  # pylint: disable=g-import-not-at-top
  moved = tmp_path / "model_copy"
  shutil.copytree(directory, moved)
  small = tmp_path / "small"
  assert _run("build_index.py", f"--model={moved}", f"--input={queries}",
              f"--output={small}").returncode == 0
  shutil.rmtree(moved)
  done = _run("search.py", f"--index={small}", "--query=one")
  assert done.returncode == 1 and done.stderr.strip().splitlines()[-1].startswith(
      f"error: index {small} needs its model {moved} ('model' in index.json), which is missing"), (
          done.stderr)
  target = tmp_path / "a_file"
  target.write_text("keep")
  done = _run("build_index.py", f"--model={directory}", f"--input={corpus}", f"--output={target}",
              "--overwrite")
  assert done.returncode == 1 and done.stderr.strip().splitlines()[-1].startswith(
      f"error: --output={target} exists and is a file"), done.stderr
  assert target.read_text() == "keep" and not os.path.exists(f"{target}.partial")
  bad = tmp_path / "bad.txt"
  bad.write_bytes(b"one\n\xfe two\n")
  empty = tmp_path / "empty.txt"
  empty.write_text("")
  cases = [
      ("build_index.py", [f"--model={directory}", f"--input={empty}",
                          f"--output={tmp_path / 'e'}"], "corpus is empty"),
      ("search.py", [f"--index={out}", "--query=one", f"--model={other}"], "is another model"),
      ("search.py", [f"--index={out}", "--query=one", "--pooling=max"], "pooling='mean', not 'max'"),
      ("search.py", [f"--index={out}", f"--queries={bad}"], f"{bad}:2: not UTF-8"),
      ("search.py", [f"--index={tmp_path / 'nope'}", "--query=one"], "does not exist"),
  ]
  for script, args, message in cases:
    done = _run(script, *args)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, (script, args, done.stderr)
    assert lines and lines[-1].startswith("error:") and message in lines[-1], (message, done.stderr)
    assert "Traceback" not in done.stderr
  assert not any(p.name in ("e", "e.partial") or p.name.startswith(".e.") for p in tmp_path.iterdir())


@pytest.mark.slow
def test_devices_and_processes_match_one_device(hf, tmp_path):
  directory, _, corpus = hf
  one = retrieval.Index.load(retrieval.build_index(
      directory, corpus, str(tmp_path / "one"), retrieval.IndexOptions(chunk_lines=10),
      progress=False))
  multi = str(tmp_path / "multi")
  procs = start_processes(__file__, [directory, corpus, multi])
  four = run_child(__file__, [directory, corpus, str(tmp_path / "four")], devices=4)
  assert four["local_devices"] == 4
  outs = process_results(procs)
  assert [(o["process_count"], o["local_devices"]) for o in outs] == [(2, 2), (2, 2)]
  assert outs[0]["written"] and not outs[1]["written"]
  for path in (tmp_path / "four", multi):
    index = retrieval.Index.load(str(path))
    np.testing.assert_allclose(index.vectors, one.vectors, atol=1e-5, rtol=0)
    assert index.texts == one.texts and index.ids == one.ids
  assert not os.path.exists(multi + ".partial")


def _child(directory, corpus, output, port=None, process_id=None):
  import jax  # pylint: disable=g-import-not-at-top
  if port is not None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", 2, int(process_id))
  written = retrieval.build_index(directory, corpus, output,
                                  retrieval.IndexOptions(chunk_lines=10), progress=False,
                                  wait_timeout_s=200)
  print(json.dumps({"process_count": jax.process_count(),
                    "local_devices": len(jax.local_devices()), "written": written is not None}))


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
  _child(*sys.argv[2:])
