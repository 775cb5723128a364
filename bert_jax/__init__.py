"""bert_jax: BERT in JAX/Flax, from a laptop CPU to TPU pod slices.

`bert_jax.from_pretrained(path)` loads any model path (Hugging Face, original
Google, bert_jax export or training workdir). It is imported lazily so that
`import bert_jax` stays cheap for tools that only need the tokenizer.
"""

from bert_jax import platform as _platform

# Before any module imports jax, which would fail on a malformed value with a traceback.
_platform.check_cpu_devices_env()


def __getattr__(name):
  if name == "from_pretrained":
    from bert_jax.formats.convert import from_pretrained  # pylint: disable=import-outside-toplevel
    return from_pretrained
  raise AttributeError(f"module 'bert_jax' has no attribute {name!r}")
