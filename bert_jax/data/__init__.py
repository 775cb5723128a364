"""Corpus reading, pretraining data, masking, input pipelines, task readers, sample data."""
