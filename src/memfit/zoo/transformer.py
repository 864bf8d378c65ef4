"""A GPT-style decoder: pre-norm blocks, causal attention, tied embeddings (as nanoGPT)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from memfit.workload import Workload
from memfit.zoo._common import next_token_loss, token_batch_maker


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (t.view(b, s, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, s, d))


class GPTBlock(nn.Module):
    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
        )

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab: int, seq_len: int, layers: int, d_model: int, heads: int):
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(seq_len, d_model)
        self.layers = nn.ModuleList(GPTBlock(d_model, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab, bias=False)
        self.lm_head.weight = self.tok.weight  # tied, as GPT-2
        # GPT-2's initialisation: unit-variance embeddings tied to the output give huge logits.
        nn.init.normal_(self.tok.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)

    def forward(self, tokens):
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.tok(tokens) + self.pos(positions)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.ln_f(x))


def transformer(
    layers: int = 6, d_model: int = 512, heads: int = 8, seq_len: int = 256, vocab: int = 8192
) -> Workload:
    if d_model % heads:
        raise ValueError("d_model must be divisible by heads")
    return Workload(
        name="transformer",
        build_model=lambda: GPT(vocab, seq_len, layers, d_model, heads),
        make_batch=token_batch_maker(seq_len, vocab),
        loss_fn=next_token_loss,
        default_batch_size=16,
        description=f"GPT decoder, {layers} layers, d_model {d_model}, seq {seq_len}",
        config=dict(layers=layers, d_model=d_model, heads=heads, seq_len=seq_len, vocab=vocab),
    )
