import pytest
import torch

from memfit.device import check_device
from memfit.errors import MeasureError


def test_cpu_is_always_fine():
    assert check_device("cpu") == "cpu"


def test_unknown_devices_are_refused():
    with pytest.raises(MeasureError, match="cpu or cuda"):
        check_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_says_what_to_do():
    with pytest.raises(MeasureError, match="--device cpu"):
        check_device("cuda")
