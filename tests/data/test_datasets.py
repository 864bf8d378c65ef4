from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from memfit.data import ArrayStore, ImageFolder
from memfit.errors import DataError

COLOURS = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}


@pytest.fixture
def image_root(tmp_path):
    for name, colour in COLOURS.items():
        (tmp_path / name / "nested").mkdir(parents=True)
        for i in range(3):
            folder = tmp_path / name / ("nested" if i == 2 else "")
            Image.new("RGB", (5 + i, 4), colour).save(folder / f"img{i}.png")
        (tmp_path / name / "notes.txt").write_text("not an image")
    return tmp_path


def test_image_folder_finds_classes_and_decodes_on_access(image_root):
    data = ImageFolder(image_root)
    assert data.classes == ["blue", "green", "red"]
    assert len(data) == 9 and data.targets.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert data.path(2) == image_root / "blue" / "nested" / "img2.png"
    for index in range(len(data)):
        pixels, target = data[index]
        assert pixels.dtype == torch.uint8 and pixels.shape[:2] == (3, 4)
        expected = torch.tensor(COLOURS[data.classes[target]], dtype=torch.uint8)
        assert torch.equal(pixels[:, 0, 0], expected)
    assert data[-1][1] == 2


def test_image_folder_holds_file_names_as_arrays_not_python_lists(image_root):
    data = ImageFolder(image_root)
    big = [k for k, v in vars(data).items() if isinstance(v, (list, dict)) and len(v) >= len(data)]
    assert big == []  # only per-class lists; per-file names live in numpy buffers
    assert isinstance(data._names, np.ndarray) and data._names.dtype == np.uint8


def test_image_folder_with_a_transform_and_workers(image_root):
    def transform(image):
        return torch.from_numpy(np.asarray(image.resize((4, 4)), dtype=np.float32)).mean()

    data = ImageFolder(image_root, transform=transform, mode="L")
    loader = DataLoader(data, batch_size=4, num_workers=2)
    values, targets = zip(*[(x, y) for x, y in loader], strict=True)
    values, targets = torch.cat(values), torch.cat(targets)
    assert targets.tolist() == data.targets.tolist()
    grey = {t: float(v) for v, t in zip(values, targets.tolist(), strict=True)}
    assert grey[1] > grey[2] > grey[0]  # luminance: green > red > blue


def test_image_folder_refuses_empty_or_missing_folders(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        ImageFolder(tmp_path / "missing")
    with pytest.raises(DataError, match="no subfolders"):
        ImageFolder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no files ending in"):
        ImageFolder(tmp_path)


def _chunks(x: np.ndarray, y: np.ndarray, size: int):
    for start in range(0, len(x), size):
        yield {"x": x[start : start + size], "y": y[start : start + size]}


def test_array_store_round_trip_across_shard_boundaries_with_workers(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(103, 2, 3)).astype(np.float32)
    y = np.arange(103, dtype=np.int64)
    row_bytes = 2 * 3 * 4 + 8
    store = ArrayStore.write(tmp_path / "s", _chunks(x, y, 5), shard_bytes=7 * row_bytes)
    assert store.num_shards == 15 and len(store) == 103  # 14 shards of 7 and one of 5
    assert store.fields == ("x", "y") and store.shapes == ((2, 3), ())
    loader = DataLoader(
        store, batch_size=8, num_workers=2, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    got_x, got_y = zip(*loader, strict=True)
    got_x, got_y = torch.cat(got_x).numpy(), torch.cat(got_y).numpy()
    order = np.argsort(got_y)
    np.testing.assert_array_equal(got_y[order], y)
    np.testing.assert_array_equal(got_x[order], x)
    assert torch.equal(store[-1][0], torch.from_numpy(x[-1]))
    with pytest.raises(IndexError):
        store[103]


def test_array_store_drops_its_maps_after_the_bound(tmp_path):
    data = np.arange(4000, dtype=np.float64).reshape(1000, 4)
    ArrayStore.write(tmp_path / "s", data, shard_bytes=3200)
    store = ArrayStore(tmp_path / "s", max_mapped_bytes=320)
    highest = 0
    for i in range(len(store)):
        assert torch.equal(store[i], torch.from_numpy(data[i]))
        highest = max(highest, store.mapped_bytes)
    assert highest <= 320 and len(store._maps) <= 1


def test_array_store_write_is_all_or_nothing(tmp_path):
    good = np.ones((10, 2))
    ArrayStore.write(tmp_path / "s", {"a": good}, shard_bytes=64)

    def failing():
        yield {"a": np.zeros((10, 2))}
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        ArrayStore.write(tmp_path / "s", failing(), shard_bytes=64, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no half-written folders
    assert torch.equal(ArrayStore(tmp_path / "s")[3], torch.ones(2, dtype=torch.float64))
    with pytest.raises(DataError, match="exists"):
        ArrayStore.write(tmp_path / "s", {"a": good})
    ArrayStore.write(tmp_path / "s", {"a": good * 2}, overwrite=True)
    assert float(ArrayStore(tmp_path / "s")[0][0]) == 2.0


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"a": np.array(["x", None], dtype=object)}, "Python objects"),
        ({"a": np.ones(3), "b": np.ones(4)}, "different lengths"),
        ([{"a": np.ones(3)}, {"a": np.ones(3, dtype=np.float32)}], "changed from"),
        ([{"a": np.ones(3)}, {"b": np.ones(3)}], "same fields"),
        ([], "no arrays"),
    ],
)
def test_array_store_refuses_bad_input(tmp_path, arrays, message):
    with pytest.raises(DataError, match=message):
        ArrayStore.write(tmp_path / "s", arrays)
    assert not (tmp_path / "s").exists()


def test_array_store_takes_tuples_and_refuses_what_torch_cannot_hold(tmp_path):
    store = ArrayStore.write(tmp_path / "t", (np.arange(2), np.ones((2, 2), dtype=bool)))
    assert store.fields == ("0", "1") and store[1][0].item() == 1
    assert store[0][1].dtype == torch.bool
    records = np.array([(1, 2.5)], dtype=[("id", "<i4"), ("v", "<f8")])
    with pytest.raises(DataError, match="torch cannot hold"):
        ArrayStore.write(tmp_path / "r", {"rec": records})
    with pytest.raises(DataError, match="torch cannot hold"):
        ArrayStore.write(tmp_path / "r", {"name": np.array([b"ab", b"c"])})
