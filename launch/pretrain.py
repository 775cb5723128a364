r"""MLM+NSP pretraining launcher (single host, multi-host, TPU pod, SLURM).

  python launch/pretrain.py --config=configs/tiny.py --workdir=/tmp/bert_tiny \
      [--config.KEY=VALUE ...]

Flags (launch/train_common.py): --config, --workdir; multi-host --coordinator_address,
--num_processes, --process_id, or --distributed inside a TPU/SLURM/MPI job. Running again
with the same --workdir resumes. Exit codes: 0 done, 1 user error (one line on stderr),
143 stopped by SIGTERM after saving a checkpoint.
"""

import train_common

if __name__ == "__main__":
  train_common.run("--config=configs/tiny.py --workdir=/tmp/bert_tiny")
