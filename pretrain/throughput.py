"""Training FLOPs and model FLOPs utilisation (MFU), the one formula the loop's logs and the benchmarks share.

Model FLOPs of a pretraining step (forward + backward = 3 x forward, 2 FLOPs per multiply-add), summed over the
step's sequences of real lengths s_i (T = sum s_i real tokens, M masked tokens):

    6 * N_enc * T                  every encoder matrix (Q, K, V, output, feed-forward) on every real token
  + 12 * L * H * sum(s_i ** 2)     attention scores and their weighted sum (QK^T and AV), per layer
  + 6 * (H * H + H * V) * M        the MLM head (transform + decoder) where it runs: the masked tokens

Per real token that is 6 N_enc + 12 L S_eff H + 6 f (H^2 + H V), with S_eff = sum s_i^2 / sum s_i (ragged lengths)
and f = M / T. A model that pads and runs its head everywhere (transformers' `BertForPreTraining`) does that work on
B x S positions: `padded_step_flops` counts it so, which is that model's own FLOPs, not ours. Embedding lookups,
LayerNorms, softmax and the NSP head are left out (a few percent at most), as in PaLM's and MosaicBERT's MFU.
"""

from __future__ import annotations

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) of the accelerators we report MFU on; the name is matched
# as a substring of `torch.cuda.get_device_name()`.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "L4": 121.0}


def encoder_matrix_parameters(config) -> int:
    """N_enc: the weights of the encoder's matrices (Q, K, V, attention output, feed-forward), biases left out."""
    hidden, inner = config.hidden_size, config.intermediate_size
    per_layer = 4 * hidden * hidden + 2 * hidden * inner
    if getattr(config, "gated_feed_forward", False):  # GEGLU: two input projections
        per_layer += hidden * inner
    return config.num_hidden_layers * per_layer


def step_flops(config, tokens: float, sum_squared_lengths: float, masked: float) -> float:
    """Model FLOPs of a training step on `tokens` real tokens with the MLM head at `masked` positions."""
    hidden, vocab = config.hidden_size, config.vocab_size
    return (
        6.0 * encoder_matrix_parameters(config) * tokens
        + 12.0 * config.num_hidden_layers * hidden * sum_squared_lengths
        + 6.0 * (hidden * hidden + hidden * vocab) * masked
    )


def padded_step_flops(config, batch_size: int, seq_len: int) -> float:
    """FLOPs of a step that computes every padded position and runs the MLM head everywhere (BertForPreTraining)."""
    positions = batch_size * seq_len
    return step_flops(config, positions, batch_size * seq_len * seq_len, positions)


def peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a known accelerator, else None (no MFU is reported)."""
    for name, peak in PEAK_BF16_TFLOPS.items():
        if name in device_name:
            return peak
    return None
