"""Batch makers and losses shared by the zoo's workloads."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def image_batch_maker(channels: int, height: int, width: int, classes: int):
    def make_batch(batch_size: int, device: torch.device | str = "cpu"):
        x = torch.randn(batch_size, channels, height, width, device=device)
        y = torch.randint(0, classes, (batch_size,), device=device)
        return x, y

    return make_batch


def vector_batch_maker(features: int, classes: int):
    def make_batch(batch_size: int, device: torch.device | str = "cpu"):
        x = torch.randn(batch_size, features, device=device)
        y = torch.randint(0, classes, (batch_size,), device=device)
        return x, y

    return make_batch


def token_batch_maker(seq_len: int, vocab: int):
    def make_batch(batch_size: int, device: torch.device | str = "cpu"):
        tokens = torch.randint(0, vocab, (batch_size, seq_len + 1), device=device)
        return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()

    return make_batch


def classification_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, targets)


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())
