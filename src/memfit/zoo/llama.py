"""LLaMA-shaped decoders: RMSNorm, rotary positions, SwiGLU, untied output (Touvron et al. 2023).

`llama-7b` has the real shapes (6.74e9 parameters); build it only on fake tensors
(`memfit estimate`), never for real on a small machine.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from memfit.workload import Workload
from memfit.zoo._common import next_token_loss, token_batch_maker


def rotary_tables(seq_len: int, head_dim: int, base: float = 10000.0):
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., 0::2], x[..., 1::2]
    rotated = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)


class LlamaAttention(nn.Module):
    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x, cos, sin):
        b, s, d = x.shape
        shape = (b, s, self.heads, d // self.heads)
        q = apply_rotary(self.q_proj(x).view(shape), cos, sin).transpose(1, 2)
        k = apply_rotary(self.k_proj(x).view(shape), cos, sin).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(b, s, d))


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, hidden, bias=False)
        self.up_proj = nn.Linear(d_model, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaBlock(nn.Module):
    def __init__(self, d_model: int, heads: int, hidden: int):
        super().__init__()
        self.attn_norm = nn.RMSNorm(d_model, eps=1e-6)
        self.attn = LlamaAttention(d_model, heads)
        self.mlp_norm = nn.RMSNorm(d_model, eps=1e-6)
        self.mlp = SwiGLU(d_model, hidden)

    def forward(self, x, cos, sin):
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class Llama(nn.Module):
    def __init__(
        self, vocab: int, seq_len: int, layers: int, d_model: int, heads: int, hidden: int
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.layers = nn.ModuleList(LlamaBlock(d_model, heads, hidden) for _ in range(layers))
        self.norm = nn.RMSNorm(d_model, eps=1e-6)
        self.lm_head = nn.Linear(d_model, vocab, bias=False)
        nn.init.normal_(self.embed.weight, std=0.02)
        cos, sin = rotary_tables(seq_len, d_model // heads)
        # Non-persistent: derived from the shapes, not learned, not saved.
        self.register_buffer("rope_cos", cos[:, None, :], persistent=False)
        self.register_buffer("rope_sin", sin[:, None, :], persistent=False)

    def forward(self, tokens):
        s = tokens.shape[1]
        cos, sin = self.rope_cos[:s], self.rope_sin[:s]
        x = self.embed(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.norm(x))


def llama(
    layers: int = 4,
    d_model: int = 512,
    heads: int = 8,
    hidden: int = 1376,
    vocab: int = 32000,
    seq_len: int = 512,
) -> Workload:
    if d_model % heads or (d_model // heads) % 2:
        raise ValueError("d_model must be divisible by heads, with an even head size")
    return Workload(
        name="llama",
        build_model=lambda: Llama(vocab, seq_len, layers, d_model, heads, hidden),
        make_batch=token_batch_maker(seq_len, vocab),
        loss_fn=next_token_loss,
        default_batch_size=4,
        description=f"LLaMA-style decoder, {layers} layers, d_model {d_model}, seq {seq_len}",
        config=dict(
            layers=layers, d_model=d_model, heads=heads, hidden=hidden, vocab=vocab, seq_len=seq_len
        ),
    )


def llama_7b(
    layers: int = 32,
    d_model: int = 4096,
    heads: int = 32,
    hidden: int = 11008,
    vocab: int = 32000,
    seq_len: int = 2048,
) -> Workload:
    workload = llama(layers, d_model, heads, hidden, vocab, seq_len)
    workload.name = "llama-7b"
    workload.default_batch_size = 1
    workload.description = "LLaMA-7B shapes (6.74e9 parameters); estimate only"
    return workload
