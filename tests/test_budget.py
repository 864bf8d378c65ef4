import pytest

from memfit.budget import PRESETS, Budget, format_bytes, smallest_preset_that_fits
from memfit.errors import BudgetError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12GB", 12 * 10**9),
        ("12GiB", 12 * 2**30),
        ("512MB", 512 * 10**6),
        ("512MiB", 512 * 2**20),
        ("1.5T", 1_500_000_000_000),
        ("1048576", 1_048_576),
        (" 2 gb ", 2 * 10**9),
        ("100kB", 100_000),
    ],
)
def test_sizes_mean_what_they_say(text, expected):
    assert Budget.parse(text).bytes == expected


def test_presets_carry_size_and_device():
    assert Budget.parse("colab").bytes == 12 * 10**9
    assert Budget.parse("colab-highram").bytes == int(25.51 * 10**9)
    assert Budget.parse("kaggle-cpu").bytes == 16 * 10**9
    assert Budget.parse("kaggle-gpu").bytes == 13 * 10**9
    assert Budget.parse("t4").device == "gpu"
    assert Budget.parse("laptop-32gb").device == "cpu"
    for name in ("rtx3060", "a100-40gb", "a100-80gb", "h100", "raspberry-pi-4gb", "jetson-nano"):
        assert name in PRESETS
    assert Budget.parse("A100-80GB").bytes == 80 * 2**30


@pytest.mark.parametrize("bad", ["twelve", "12XB", "-3GB", "0", "", "12 G B"])
def test_bad_strings_name_the_accepted_forms(bad):
    with pytest.raises(BudgetError, match="12GiB"):
        Budget.parse(bad)


@pytest.mark.parametrize(
    "bad,needle",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("1e999", "larger than any machine"),
        ("2e18", "larger than any machine"),
        (float("inf"), "larger than any machine"),
        (float("nan"), "larger than any machine"),
        ("0.4B", "less than one byte"),
        (0, "less than one byte"),
    ],
)
def test_sizes_no_machine_has_are_refused_with_the_fix(bad, needle):
    with pytest.raises(BudgetError, match=needle):
        Budget.parse(bad)


def test_the_largest_accepted_budget_is_exact():
    assert Budget.parse("1e18").bytes == 10**18
    assert Budget.parse("1000000TB").bytes == 10**18


def test_smallest_preset_that_fits():
    assert smallest_preset_that_fits(41_200_000_000, "gpu").name == "a100-40gb"
    assert smallest_preset_that_fits(43_000_000_000, "gpu").name in ("a100-80gb", "h100")
    assert smallest_preset_that_fits(11 * 10**9, "cpu").name == "colab"
    assert smallest_preset_that_fits(10**15) is None
    # nothing of the asked kind is big enough: a machine of the other kind is named
    assert smallest_preset_that_fits(41_200_000_000, "cpu").name == "a100-40gb"


def test_format_bytes():
    assert format_bytes(41.2e9) == "41.2 GB"
    assert format_bytes(999) == "999 B"
