r"""Fine-tuning launcher: sequence classification/regression (GLUE, local files) and more.

  python launch/finetune.py --config=configs/finetune.py --workdir=/tmp/ft \
      --config.task=glue/sst2 --config.init_checkpoint=bert-base-uncased/ [--config.KEY=VALUE ...]

  python launch/finetune.py --config=configs/finetune.py --workdir=/tmp/ft --config.task=local \
      --config.init_checkpoint=PATH --config.train_file=train.jsonl \
      --config.validation_file=dev.jsonl

The same trainer as pretraining (one train step, resume, SIGTERM saves, multi-host flags of
launch/train_common.py). The best model by the task's main metric is exported to
WORKDIR/best (and WORKDIR/best_hf with --config.export_hf=True). Exit codes: 0 done, 1 user
error (one line on stderr), 143 stopped by SIGTERM after saving a checkpoint.
"""

import train_common

if __name__ == "__main__":
  train_common.run("--config=configs/finetune.py --workdir=/tmp/ft --config.task=glue/sst2 "
                   "--config.init_checkpoint=PATH")
