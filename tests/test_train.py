"""fit: plan, apply, train, and check the measured peak, on real data."""

import torch
import torch.nn.functional as F

from memfit import zoo
from memfit.train import fit


def test_fit_trains_the_digits_cnn_inside_a_small_budget():
    w = zoo.get("cnn", channels=16)
    x_train, y_train, x_test, y_test = w.load_data()
    result = fit(
        w,
        (x_train, y_train),
        budget="6MB",
        epochs=3,
        batch_size=256,
        reserve_bytes=0,
        progress=False,
        lr=3e-3,
    )
    assert result.plan.fits and result.plan.accumulation_steps > 1
    assert result.within_budget and result.measured_peak_bytes <= 6e6
    assert result.losses[-1] < result.losses[0]
    model = result.model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    assert accuracy > 0.5


def test_fit_takes_a_plain_module_and_tensors():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 256), torch.nn.ReLU(), torch.nn.Linear(256, 3))
    x = torch.randn(512, 20)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    result = fit(
        model,
        (x, y),
        budget="2GB",
        loss_fn=F.cross_entropy,
        epochs=2,
        batch_size=64,
        reserve_bytes=0,
        progress=False,
    )
    assert result.model is model
    assert result.samples == 2 * 512 and result.epochs == 2
    assert result.plan.techniques == []
