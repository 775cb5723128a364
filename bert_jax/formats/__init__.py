"""Checkpoint formats: Hugging Face, original Google TF, torch pickles; conversion."""
