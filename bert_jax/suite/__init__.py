"""The paper's benchmark suites (GLUE, SQuAD v1.1/v2.0, CoNLL-2003) as one resumable job.

`benchmark.run` is what launch/benchmark.py calls: `data` prepares each task's
inputs, `runs` sweeps learning rates and seeds over normal fine-tuning workdirs,
`scoring` computes the figures the trainer does not log from written
predictions, `submission` writes the GLUE server's files and `report` the table,
each figure with the workdir it came from; `glue` holds the benchmark's facts.
"""
