"""Task readers: labelled files and tfds datasets -> examples (and their encoded features)."""
