"""The training configs, an importable package: each `NAME.py` has `get_config()` returning a
ConfigDict with a comment above every key. Presets start from `default.py` (pretraining) or
`finetune.py`; `--config=configs/NAME.py` loads one, and `--config.KEY=VALUE` overrides keys
(nested groups as `--config.model.hidden_size=...`, `--config.qa.doc_stride=...`).
"""
