"""BERT pretraining: corpus preparation (MLM + NSP data) and the training loop."""
