"""scikit-learn's bundled handwritten digits (1797 8x8 images): real data, no download."""

from __future__ import annotations

import torch

from memfit.errors import require


def load_digits_tensors(test_fraction: float = 0.25, seed: int = 0, images: bool = True):
    """`(x_train, y_train, x_test, y_test)`; x is (N, 1, 8, 8) scaled to [0, 1], or (N, 64).

    The split is stratified and seeded, so every caller sees the same test set.
    """
    datasets = require("sklearn.datasets", "sklearn")
    model_selection = require("sklearn.model_selection", "sklearn")
    digits = datasets.load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    idx_train, idx_test = model_selection.train_test_split(
        torch.arange(len(y)).numpy(),
        test_size=test_fraction,
        random_state=seed,
        stratify=y.numpy(),
    )
    idx_train, idx_test = torch.as_tensor(idx_train), torch.as_tensor(idx_test)
    if images:
        x = x.view(-1, 1, 8, 8)
    return x[idx_train], y[idx_train], x[idx_test], y[idx_test]
