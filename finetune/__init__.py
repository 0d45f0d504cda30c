"""Fine-tuning MiniBERT (or transformers BERT) checkpoints on text classification: single sentences or pairs,
string / integer / float / list labels, Hub-ready output. Entry point: `finetune.train.finetune`; CLI: `minibert-finetune`.
A checkpoint's GLUE scores (`minibert-evaluate glue`): `finetune.glue`."""
