import textwrap

import pytest
import torch

from memfit import zoo
from memfit.errors import WorkloadError
from memfit.specs import load_workload, parse_overrides
from memfit.workload import Workload


def test_overrides_are_typed():
    assert parse_overrides("depth=32,width=2048,activation=gelu,flag=true,lr=0.5") == {
        "depth": 32,
        "width": 2048,
        "activation": "gelu",
        "flag": True,
        "lr": 0.5,
    }


def test_zoo_spec_with_overrides_builds_that_model():
    w = load_workload("zoo:mlp:depth=3,width=16,inputs=8")
    model = w.build_model()
    assert len(model.blocks) == 3
    assert model.blocks[1].linear.weight.shape == (16, 16)


@pytest.mark.parametrize(
    "spec,needle",
    [
        ("zoo:nosuch", "mlp, cnn"),
        ("zoo:mlp:depht=3", "depth=8"),
        ("zoo:mlp:depth", "key=value"),
        ("zoo:transformer:d_model=100,heads=3", "divisible"),
        ("nofile.py:make", "does not exist"),
        ("json:nosuchfunction", "no function"),
        ("justaname", "zoo:NAME"),
    ],
)
def test_bad_specs_are_one_clear_error(spec, needle):
    with pytest.raises(WorkloadError, match=needle):
        load_workload(spec)


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet18", "wrn-28-2", "transformer", "llama"])
def test_every_zoo_model_trains_one_step(name):
    w = zoo.get(name, **({"layers": 1} if name in ("transformer", "llama") else {}))
    model = w.build_model()
    loss = w.loss(model, w.make_batch(2, "cpu"))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_llama_7b_has_the_real_parameter_count():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        model = zoo.get("llama-7b").build_model()
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - 6.74e9) / 6.74e9 < 0.01


def test_transformer_ties_embeddings():
    model = zoo.get("transformer", layers=1).build_model()
    assert model.lm_head.weight is model.tok.weight


def test_user_file_returning_workload_or_module(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(
        textwrap.dedent("""
        import torch
        from memfit.workload import Workload

        def net(hidden=4):
            return torch.nn.Sequential(torch.nn.Linear(3, hidden), torch.nn.ReLU())

        def work():
            return Workload(name="mine", build_model=lambda: net(),
                            make_batch=lambda b, d="cpu": (torch.randn(b, 3), None),
                            loss_fn=lambda out, _t: out.sum())
    """)
    )
    w = load_workload(f"{path}:work")
    assert isinstance(w, Workload) and w.name == "mine"
    with pytest.raises(WorkloadError, match="input-shape"):
        load_workload(f"{path}:net")
    w2 = load_workload(f"{path}:net:hidden=7", input_shape=(3,))
    model = w2.build_model()
    x, t = w2.make_batch(5, "cpu")
    assert x.shape == (5, 3) and model(x).shape == (5, 7)
    assert w2.loss(model, (x, t)).ndim == 0
