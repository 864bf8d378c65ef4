"""Model specs resolve in one place; overrides are checked before anything is built."""

import subprocess
import sys
import textwrap

import pytest
import torch

from memfit import estimate, plan, profile
from memfit.errors import MissingDependencyError, WorkloadError
from memfit.specs import load_workload


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(
        textwrap.dedent("""
        import torch
        from torch import nn

        def net(hidden: int = 16, dropout: float = 0.0, act: str = "relu", bias: bool = True):
            return nn.Sequential(nn.Linear(12, hidden, bias=bias), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, 3, bias=bias))

        def from_checkpoint():
            model = nn.Linear(12, 3)
            model.load_state_dict({"weight": torch.zeros(3, 12), "bias": torch.zeros(3)})
            return model
    """)
    )
    return path


@pytest.mark.parametrize(
    "spec,needle",
    [
        ("zoo:mlp:depth=2.5", "zoo:mlp: depth takes an integer (default 8), not 2.5"),
        ("zoo:mlp:depth=abc", "depth takes an integer"),
        ("zoo:mlp:activation=3", "activation takes a word"),
        ("zoo:mlp:depht=3", "did you mean depth"),
        ("{f}:net:hidden=abc", "hidden takes an integer (default 16), not 'abc'"),
        ("{f}:net:bias=1", "bias takes true or false"),
        ("{f}:net:hiden=3", "did you mean hidden"),
    ],
)
def test_overrides_are_type_checked_with_one_line(spec, needle, user_file):
    with pytest.raises(WorkloadError) as info:
        load_workload(spec.format(f=user_file), input_shape=None if spec[:4] == "zoo:" else (12,))
    assert needle in str(info.value)


def test_an_integer_for_a_number_setting_is_taken(user_file):
    w = load_workload(f"{user_file}:net:dropout=0,hidden=8", input_shape=(12,))
    model = w.build_model()
    assert model[2].p == 0.0 and isinstance(model[2].p, float) and model[0].out_features == 8


def test_a_module_function_works_for_profile_estimate_and_plan(user_file):
    spec = f"{user_file}:net:hidden=64"
    w = load_workload(spec, input_shape=(12,))
    measured = profile(w, batch_size=32, optimizer="sgd")
    estimated = estimate(w, batch_size=32, optimizer="sgd")
    params = (12 * 64 + 64) + (64 * 3 + 3)
    assert estimated.categories["parameters"] == params * 4  # numel * element size
    assert estimated.peak_bytes == measured.peak_bytes
    p = plan(w, 4 * estimated.peak_bytes, 32, reserve_bytes=0)
    assert p.fits


def test_a_module_function_that_loads_real_tensors_is_estimated_from_its_shapes(user_file):
    w = load_workload(f"{user_file}:from_checkpoint", input_shape=(12,))
    estimated = estimate(w, batch_size=4, optimizer="sgd")
    assert estimated.categories["parameters"] == (12 * 3 + 3) * 4


def test_real_builds_get_fresh_parameters(user_file):
    w = load_workload(f"{user_file}:net", input_shape=(12,))
    first, second = w.build_model(), w.build_model()
    assert first is not second and first[0].weight is not second[0].weight


def test_named_specs_refuse_an_input_shape():
    with pytest.raises(WorkloadError, match="input-shape"):
        load_workload("zoo:mlp", input_shape=(3,))


def test_timm_where_it_does_not_import_says_what_to_install():
    try:
        import timm  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match="pip install"):
            load_workload("timm:resnet50")
    else:
        w = load_workload("timm:resnet18:num_classes=10")
        x, y = w.make_batch(2, "cpu")
        assert tuple(x.shape) == (2, 3, 224, 224) and int(y.max()) < 10


def test_workload_module_knows_no_zoo():
    # A Workload is plain data: importing it loads neither the zoo nor the specs.
    code = (
        "import sys, memfit.workload; "
        "print(any(m.startswith(('memfit.zoo', 'memfit.specs')) for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_plain_workload_objects_pass_through():
    w = load_workload("zoo:mlp:depth=1,width=8,inputs=4")
    assert load_workload(w) is w
    assert torch.is_tensor(w.make_batch(2, "cpu")[0])
