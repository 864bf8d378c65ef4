"""A bidirectional GRU sequence tagger over token ids, with padding ignored in the loss."""

import torch
import torch.nn.functional as F
from torch import nn

from memfit import Workload


class Tagger(nn.Module):
    def __init__(self, vocab: int, dim: int, tags: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.rnn = nn.GRU(dim, dim, num_layers=2, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * dim, tags)

    def forward(self, tokens):
        hidden, _ = self.rnn(self.embed(tokens))
        return self.out(hidden)


def workload(vocab: int = 20000, dim: int = 256, tags: int = 32, seq_len: int = 128) -> Workload:
    def make_batch(b, device="cpu"):
        tokens = torch.randint(0, vocab, (b, seq_len), device=device)
        labels = torch.randint(0, tags, (b, seq_len), device=device)
        return tokens, labels

    return Workload(
        name="gru-tagger",
        build_model=lambda: Tagger(vocab, dim, tags),
        make_batch=make_batch,
        loss_fn=lambda out, y: F.cross_entropy(out.flatten(0, 1), y.flatten()),
        default_batch_size=32,
    )
