"""bert_jax: BERT in JAX/Flax."""
