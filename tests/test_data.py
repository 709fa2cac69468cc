"""Datasets: mask encodings decoded pixel for pixel, dataset definitions (YAML and inferred), image
conversion, every user error (one PixelwiseError naming the file), and the map-style dataset."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.data import (
    IGNORE_INDEX,
    DatasetSpec,
    Sample,
    SegmentationDataset,
    build_eval_transform,
    build_train_transform,
    check_dataset,
    check_split,
    decode_mask,
    infer_spec,
    load_dataset_spec,
    load_pair,
    read_image,
    read_mask,
    resolve_split,
)
from pixelwise.data.io import image_size
from pixelwise.errors import PixelwiseError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# --------------------------------------------------------------------------------------------------
# helpers


def _spec(root: Path, classes: list[dict], mask: dict, splits: dict | None = None) -> DatasetSpec:
    return DatasetSpec(
        name="synthetic",
        root=root,
        classes=classes,
        mask=mask,
        splits=splits or {"all": {"images": "images", "masks": "masks"}},
        source=str(root),
    )


def _index_spec(root: Path, n: int, ignore_index: int | None = None, **kw) -> DatasetSpec:
    return _spec(
        root,
        [{"name": f"c{i}"} for i in range(n)],
        {"encoding": "index", "ignore_index": ignore_index},
        **kw,
    )


def _decode_file(path: Path, spec: DatasetSpec) -> tuple[np.ndarray, dict[str, int]]:
    return decode_mask(read_mask(path), spec)


def _fold(stem: str) -> int:  # the documented split rule of infer_spec: md5(stem) % 5 == 0 → val
    return int(hashlib.md5(stem.encode()).hexdigest(), 16) % 5


# --------------------------------------------------------------------------------------------------
# mask encodings


def test_index_mask_maps_ignore_index_to_255(synth) -> None:
    raw = np.array([[0, 1, 2, 11], [11, 2, 1, 0]], np.uint8)
    path = synth.png("m.png", raw)
    labels, bad = _decode_file(path, _index_spec(synth.root, 3, ignore_index=11))
    np.testing.assert_array_equal(labels, [[0, 1, 2, 255], [255, 2, 1, 0]])
    assert labels.dtype == np.uint8
    assert bad == {}


def test_index_mask_reports_undeclared_values_with_pixel_counts(synth) -> None:
    raw = np.array([[0, 1, 7, 7], [7, 200, 1, 0]], np.uint8)
    labels, bad = _decode_file(synth.png("m.png", raw), _index_spec(synth.root, 2))
    assert bad == {"7": 3, "200": 1}
    np.testing.assert_array_equal(labels, [[0, 1, 255, 255], [255, 255, 1, 0]])


def test_16bit_index_mask_decodes_like_8bit(synth) -> None:
    raw = np.array([[0, 1, 2], [2, 1, 0]], np.uint16)
    path = synth.png("m16.png", raw)
    assert read_mask(path).dtype != np.uint8  # really stored as 16 bit
    labels, bad = _decode_file(path, _index_spec(synth.root, 3))
    np.testing.assert_array_equal(labels, raw)
    assert bad == {}


def test_value_map_mask(synth) -> None:
    spec = _spec(
        synth.root,
        [{"name": "membrane", "mask_value": 0}, {"name": "cell", "mask_value": 255}],
        {"encoding": "value_map"},
    )
    raw = np.array([[0, 255, 255], [255, 0, 0]], np.uint8)
    labels, bad = _decode_file(synth.png("m.png", raw), spec)
    np.testing.assert_array_equal(labels, [[0, 1, 1], [1, 0, 0]])
    assert bad == {}
    labels, bad = decode_mask(np.array([[0, 128]], np.uint8), spec)
    assert bad == {"128": 1} and labels.tolist() == [[0, 255]]


def test_value_map_mask_with_ignore_value(synth) -> None:
    spec = _spec(
        synth.root,
        [{"name": "bg", "mask_value": 10}, {"name": "fg", "mask_value": 20}],
        {"encoding": "value_map", "ignore_index": 99},
    )
    labels, bad = decode_mask(np.array([[10, 20, 99]], np.uint8), spec)
    assert labels.tolist() == [[0, 1, 255]] and bad == {}


COLORS = [(128, 128, 128), (128, 0, 0), (0, 0, 192)]


def _rgb_spec(root: Path, ignore_color=(0, 0, 0)) -> DatasetSpec:
    classes = [{"name": f"c{i}", "color": list(c)} for i, c in enumerate(COLORS)]
    return _spec(root, classes, {"encoding": "rgb", "ignore_color": ignore_color})


def test_rgb_mask_through_class_colours(synth) -> None:
    labels = np.array([[0, 1, 2, 255], [2, 255, 1, 0]])
    lut = np.array([*COLORS] + [(0, 0, 0)] * 253, np.uint8)  # 255 → the ignore colour
    raw = lut[labels]
    decoded, bad = _decode_file(synth.png("m.png", raw), _rgb_spec(synth.root))
    np.testing.assert_array_equal(decoded, labels)
    assert bad == {}


def test_rgb_mask_reports_undeclared_colour(synth) -> None:
    raw = np.array([[COLORS[0], (1, 2, 3)], [(1, 2, 3), COLORS[2]]], np.uint8)
    decoded, bad = _decode_file(synth.png("m.png", raw), _rgb_spec(synth.root, ignore_color=None))
    assert bad == {"rgb(1,2,3)": 2}
    np.testing.assert_array_equal(decoded, [[0, 255], [255, 2]])


def test_colour_mask_under_index_encoding_is_flagged(synth) -> None:
    raw = np.array([[COLORS[0], COLORS[1]]], np.uint8)
    labels, bad = decode_mask(raw, _index_spec(synth.root, 3))
    assert "<colour mask>" in bad and (labels == IGNORE_INDEX).all()


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_binary_lossy_jpeg_by_threshold(synth, mode: str) -> None:
    yy, xx = np.mgrid[:40, :50]
    truth = ((yy - 19) ** 2 + (xx - 23) ** 2) < 13**2
    gray = truth.astype(np.uint8) * 255
    arr = gray if mode == "L" else np.stack([gray] * 3, axis=-1)
    path = synth.path("m.jpg")
    Image.fromarray(arr, mode).save(path, quality=90)
    raw = read_mask(path)
    assert len(np.unique(raw)) > 2, "the JPEG should be lossy for this test to mean anything"
    spec = _spec(synth.root, [{"name": "bg"}, {"name": "fg"}], {"encoding": "binary"})
    labels, bad = decode_mask(raw, spec)
    np.testing.assert_array_equal(labels, truth.astype(np.uint8))
    assert bad == {}


def test_palette_png_gives_palette_indices(synth) -> None:
    idx = np.array([[0, 1, 2], [2, 1, 255]], np.uint8)
    path = synth.palette_png("m.png", idx, COLORS)
    raw = read_mask(path)
    np.testing.assert_array_equal(raw, idx)  # indices (VOC convention), not colours
    labels, bad = decode_mask(raw, _index_spec(synth.root, 3, ignore_index=255))
    np.testing.assert_array_equal(labels, idx)
    assert bad == {}


def test_palette_png_under_rgb_encoding_decodes_its_colours(synth) -> None:
    idx = np.array([[0, 1], [2, 0]], np.uint8)
    synth.png("images/a.png", synth.image(2, 2))
    synth.palette_png("masks/a.png", idx, COLORS)
    spec = _rgb_spec(synth.root)
    assert check_split(spec, "all").problems == []
    _, labels = load_pair(resolve_split(spec, "all")[0][0], spec)
    np.testing.assert_array_equal(labels, idx)


def test_load_pair_decodes_and_checks(synth) -> None:
    mask = np.array([[0, 1], [11, 2]], np.uint8)
    root = synth.paired({"a": mask})
    spec = _index_spec(root, 3, ignore_index=11)
    image, labels = load_pair(Sample(root / "images/a.png", root / "masks/a.png"), spec)
    assert image.shape == (2, 2, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(labels, [[0, 1], [255, 2]])
    image, labels = load_pair(Sample(root / "images/a.png", None), spec)
    assert labels is None and image.shape == (2, 2, 3)


# --------------------------------------------------------------------------------------------------
# dataset definitions


def test_yaml_with_list_file_split(synth) -> None:
    root = synth.root / "ds"
    for stem, value in (("a", 0), ("b", 1), ("c", 2)):
        synth.png(root / "imgs" / f"{stem}.png", synth.image(4, 5))
        synth.png(root / "labels" / f"{stem}_L.png", np.full((4, 5), value, np.uint8))
    synth.text(
        root / "train.txt", "# a comment\nimgs/a.png labels/a_L.png\n\nimgs/b.png labels/b_L.png\n"
    )
    synth.text(root / "val.txt", "imgs/c.png labels/c_L.png\n")
    synth.text(root / "test.txt", "imgs/c.png\n")  # no mask: prediction only
    yml = synth.yaml(
        "defs/ds.yaml",
        {
            "name": "toy",
            "root": "../ds",  # relative to the YAML file
            "classes": [{"name": "x"}, {"name": "y"}, {"name": "z"}],
            "mask": {"encoding": "index"},
            "splits": {
                "train": {"list": "train.txt"},
                "val": {"list": "val.txt"},
                "trainval": {"list": ["train.txt", "val.txt"]},
                "test": {"list": "test.txt"},
            },
        },
    )
    spec = load_dataset_spec(yml)
    assert spec.name == "toy" and spec.num_classes == 3 and spec.source == str(yml)
    assert spec.root.resolve() == root.resolve()
    samples, problems = resolve_split(spec, "train")
    assert problems == []
    assert [(s.image.name, s.mask.name) for s in samples] == [
        ("a.png", "a_L.png"),
        ("b.png", "b_L.png"),
    ]
    samples, _ = resolve_split(spec, "trainval")
    assert [s.image.stem for s in samples] == ["a", "b", "c"]
    samples, problems = resolve_split(spec, "test")
    assert problems == [] and samples[0].mask is None
    report = check_split(spec, "trainval")
    assert report.ok and report.num_images == 3
    assert report.class_pixels.tolist() == [20, 20, 20] and report.ignored_pixels == 0


def test_list_file_line_with_too_many_fields_is_a_problem(synth) -> None:
    synth.text("l.txt", "a.png b.png c.png\n")
    spec = _index_spec(synth.root, 2, splits={"s": {"list": "l.txt"}})
    samples, problems = resolve_split(spec, "s")
    assert any("l.txt:1" in p for p in problems)


def test_missing_list_file_names_it(synth) -> None:
    spec = _index_spec(synth.root, 2, splits={"s": {"list": "nope.txt"}})
    with pytest.raises(PixelwiseError, match="nope.txt"):
        resolve_split(spec, "s")


def test_yaml_with_paired_folders_mask_suffix_and_stems(synth) -> None:
    masks = {s: np.full((3, 3), i % 2, np.uint8) for i, s in enumerate(["p", "q", "r", "s"])}
    synth.paired(masks, folder="ds", images="img", mask_dir="lab", mask_suffix="_mask")
    yml = synth.yaml(
        "ds/ds.yaml",
        {
            "classes": [{"name": "bg"}, {"name": "fg"}],
            "splits": {
                "all": {"images": "img", "masks": "lab", "mask_suffix": "_mask"},
                "sub": {
                    "images": "img",
                    "masks": "lab",
                    "mask_suffix": "_mask",
                    "stems": ["s", "q"],
                },
                "bad": {
                    "images": "img",
                    "masks": "lab",
                    "mask_suffix": "_mask",
                    "stems": ["q", "zz"],
                },
            },
        },
    )
    spec = load_dataset_spec(yml)
    assert spec.root == yml.parent  # root defaults to the YAML's folder
    samples, problems = resolve_split(spec, "all")
    assert problems == []
    assert [(s.image.name, s.mask.name) for s in samples] == [
        (f"{s}.png", f"{s}_mask.png") for s in "pqrs"
    ]
    samples, problems = resolve_split(spec, "sub")
    assert problems == [] and sorted(s.image.stem for s in samples) == ["q", "s"]
    samples, problems = resolve_split(spec, "bad")
    assert [s.image.stem for s in samples] == ["q"]
    assert len(problems) == 1 and "zz" in problems[0]


def test_infer_binary_masks_as_value_map(synth) -> None:
    stems = [f"img{i}" for i in range(10)]
    assert {_fold(s) == 0 for s in stems} == {True, False}  # both train and val are non-empty
    masks = {
        s: np.where(np.arange(12).reshape(3, 4) % (i + 2) == 0, 255, 0).astype(np.uint8)
        for i, s in enumerate(stems)
    }
    root = synth.paired(masks, folder="em", image_channels=1)
    spec = infer_spec(root)
    assert spec.mask.encoding == "value_map"
    assert [(c.name, c.mask_value) for c in spec.classes] == [
        ("background", 0),
        ("foreground", 255),
    ]
    assert spec.image_channels == 1
    assert "inferred" in spec.source
    assert set(spec.splits) == {"all", "train", "val"}
    all_stems = [s.image.stem for s in resolve_split(spec, "all")[0]]
    train = [s.image.stem for s in resolve_split(spec, "train")[0]]
    val = [s.image.stem for s in resolve_split(spec, "val")[0]]
    assert sorted(all_stems) == sorted(stems)
    assert sorted(train + val) == sorted(stems) and not set(train) & set(val)
    assert val == sorted(s for s in stems if _fold(s) == 0)  # stable: a hash of the stem
    _, labels = load_pair(resolve_split(spec, "all")[0][0], spec)
    np.testing.assert_array_equal(labels, masks[all_stems[0]] // 255)
    assert check_split(spec, "all").ok


def test_infer_index_masks_with_255_as_ignore(synth) -> None:
    masks = {"a": np.array([[0, 1], [255, 1]], np.uint8), "b": np.array([[4, 0], [0, 2]], np.uint8)}
    spec = infer_spec(synth.paired(masks))
    assert spec.mask.encoding == "index" and spec.mask.ignore_index == 255
    assert spec.class_names == [f"class_{i}" for i in range(5)]  # 0..max, gaps included
    assert spec.image_channels == 3
    _, labels = load_pair(resolve_split(spec, "all")[0][0], spec)
    np.testing.assert_array_equal(labels, masks["a"])
    assert check_split(spec, "all").ignored_pixels == 1


def test_infer_index_masks_without_255(synth) -> None:
    spec = infer_spec(synth.paired({"a": np.array([[0, 1, 2]], np.uint8)}))
    assert spec.mask.encoding == "index" and spec.mask.ignore_index is None
    assert spec.num_classes == 3


def test_infer_colour_masks_one_class_per_colour(synth) -> None:
    a = np.array([[COLORS[0], COLORS[1]], [COLORS[1], COLORS[1]]], np.uint8)
    b = np.array([[COLORS[2], COLORS[2]], [COLORS[0], (10, 10, 10)]], np.uint8)
    spec = infer_spec(synth.paired({"a": a, "b": b}))
    assert spec.mask.encoding == "rgb"
    expected = sorted([*COLORS, (10, 10, 10)])
    assert [c.color for c in spec.classes] == expected
    assert spec.class_names == [f"class_{i}" for i in range(4)]
    samples, _ = resolve_split(spec, "all")
    _, labels = load_pair(samples[1], spec)
    lut = {c: i for i, c in enumerate(expected)}
    np.testing.assert_array_equal(
        labels, [[lut[COLORS[2]], lut[COLORS[2]]], [lut[COLORS[0]], lut[(10, 10, 10)]]]
    )


def test_infer_split_folders(synth) -> None:
    m = np.array([[0, 1]], np.uint8)
    synth.paired({"a": m, "b": m}, folder="ds/train")
    synth.paired({"c": m}, folder="ds/val")
    spec = infer_spec(synth.root / "ds")
    assert set(spec.splits) == {"train", "val"}
    assert [s.image.stem for s in resolve_split(spec, "train")[0]] == ["a", "b"]
    assert [s.image.stem for s in resolve_split(spec, "val")[0]] == ["c"]
    assert load_dataset_spec(synth.root / "ds").splits.keys() == spec.splits.keys()


def test_infer_without_images_and_masks_is_an_error(synth) -> None:
    (synth.root / "empty").mkdir()
    with pytest.raises(PixelwiseError, match="empty"):
        infer_spec(synth.root / "empty")


def test_real_camvid_definition(require_data) -> None:
    camvid = require_data("camvid")
    spec = load_dataset_spec(CONFIGS / "data" / "camvid.yaml")
    assert spec.root.resolve() == camvid.resolve()
    assert spec.num_classes == 11 and spec.mask.ignore_index == 11
    counts = {name: len(resolve_split(spec, name)[0]) for name in ("train", "val", "test")}
    assert counts == {"train": 367, "val": 101, "test": 233}
    image, labels = load_pair(resolve_split(spec, "val")[0][0], spec)
    assert image.shape == (360, 480, 3) and labels.shape == (360, 480)
    assert set(np.unique(labels).tolist()) <= set(range(11)) | {255}


def test_real_membrane_definition(require_data) -> None:
    require_data("membrane")
    spec = load_dataset_spec(CONFIGS / "data" / "membrane.yaml")
    train, problems = resolve_split(spec, "train")
    assert problems == [] and len(train) == 24
    assert len(resolve_split(spec, "val")[0]) == 6
    image, labels = load_pair(train[0], spec)
    assert image.shape == (512, 512, 1)
    assert set(np.unique(labels).tolist()) == {0, 1}


# --------------------------------------------------------------------------------------------------
# image conversion


def test_exif_rotated_jpeg_comes_out_rotated(synth) -> None:
    arr = np.zeros((20, 40, 3), np.uint8)  # stored 40 wide, 20 high
    arr[:10, :10] = 255  # a white block at the stored top-left
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = synth.path("r.jpg")
    im.save(path, exif=exif.tobytes(), quality=95)
    out = read_image(path)
    assert out.shape == (40, 20, 3)
    assert image_size(path) == (40, 20)
    # clockwise: the stored top-left corner is displayed at the top-right
    assert out[:10, -10:].mean() > 200 and out[-10:, :10].mean() < 50
    assert read_image(path, channels=1).shape == (40, 20, 1)


def _rgb_and_gray(synth, arr: np.ndarray, mode: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    path = synth.png(f"{mode}.png", arr, mode)
    rgb, gray = read_image(path), read_image(path, channels=1)
    assert rgb.dtype == gray.dtype == np.uint8
    assert rgb.shape == (*arr.shape[:2], 3) and gray.shape == (*arr.shape[:2], 1)
    return rgb, gray


def test_grayscale_image_to_rgb_and_one_channel(synth) -> None:
    arr = np.array([[0, 17, 255], [3, 128, 77]], np.uint8)
    rgb, gray = _rgb_and_gray(synth, arr, "L")
    np.testing.assert_array_equal(rgb, np.repeat(arr[..., None], 3, axis=2))
    np.testing.assert_array_equal(gray[..., 0], arr)


def test_rgba_image_drops_alpha(synth) -> None:
    arr = synth.image(3, 4)
    alpha = np.array([[0, 255, 10, 99]] * 3, np.uint8)
    rgb, gray = _rgb_and_gray(synth, np.dstack([arr, alpha]), "RGBA")
    np.testing.assert_array_equal(rgb, arr)
    np.testing.assert_array_equal(gray[..., 0], np.asarray(Image.fromarray(arr).convert("L")))


def test_palette_image_gives_its_colours(synth) -> None:
    idx = np.array([[0, 1], [2, 1]], np.uint8)
    path = synth.palette_png("p.png", idx, COLORS)
    np.testing.assert_array_equal(read_image(path), np.array(COLORS, np.uint8)[idx])
    assert read_image(path, channels=1).shape == (2, 2, 1)


def test_16bit_image_scaled_to_uint8(synth) -> None:
    arr = np.array([[0, 257 * 100, 65535], [32768, 257, 1000]], np.uint16)
    path = synth.png("i16.png", arr)
    assert Image.open(path).mode.startswith("I")
    expected = np.round(arr * (255 / 65535)).astype(np.uint8)
    assert expected.tolist() == [[0, 100, 255], [128, 1, 4]]
    rgb, gray = read_image(path), read_image(path, channels=1)
    np.testing.assert_array_equal(rgb, np.repeat(expected[..., None], 3, axis=2))
    np.testing.assert_array_equal(gray[..., 0], expected)


def test_dark_16bit_image_scaled_by_the_same_factor(synth) -> None:
    arr = np.array([[0, 100, 200]], np.uint16)
    path = synth.png("dark16.png", arr)
    assert Image.open(path).mode.startswith("I")
    np.testing.assert_array_equal(read_image(path, channels=1)[..., 0], [[0, 0, 1]])


# --------------------------------------------------------------------------------------------------
# errors: one PixelwiseError naming the offending file


def test_missing_mask_in_paired_folders(synth) -> None:
    root = synth.paired({"a": np.zeros((2, 2), np.uint8), "b": np.zeros((2, 2), np.uint8)})
    (root / "masks" / "b.png").unlink()
    spec = _index_spec(root, 2)
    samples, problems = resolve_split(spec, "all")
    assert [s.image.stem for s in samples] == ["a"]
    assert len(problems) == 1 and str(root / "images" / "b.png") in problems[0]
    with pytest.raises(PixelwiseError, match=r"b\.png"):
        SegmentationDataset(spec, "all", build_eval_transform(mean=[0.5] * 3, std=[0.25] * 3))
    with pytest.raises(PixelwiseError, match=r"b\.png"):
        check_dataset(spec, ["all"])


def test_missing_mask_in_list_file(synth) -> None:
    synth.png("i.png", synth.image(2, 2))
    synth.text("l.txt", "i.png gone.png\n")
    spec = _index_spec(synth.root, 2, splits={"s": {"list": "l.txt"}})
    samples, _ = resolve_split(spec, "s")
    with pytest.raises(PixelwiseError, match=r"gone\.png"):
        load_pair(samples[0], spec)
    report = check_split(spec, "s")
    assert len(report.problems) == 1 and "gone.png" in report.problems[0]


def test_image_mask_size_mismatch(synth) -> None:
    root = synth.paired({"a": np.zeros((4, 4), np.uint8)})
    synth.png(root / "masks" / "a.png", np.zeros((4, 5), np.uint8))
    spec = _index_spec(root, 2)
    samples, _ = resolve_split(spec, "all")
    with pytest.raises(PixelwiseError, match="size") as exc:
        load_pair(samples[0], spec)
    assert str(root / "masks" / "a.png") in str(exc.value)
    report = check_split(spec, "all")
    assert len(report.problems) == 1
    assert str(root / "masks" / "a.png") in report.problems[0] and "5x4" in report.problems[0]


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("which", ["images", "masks"])
def test_truncated_png(synth, which: str) -> None:
    rng = np.random.default_rng(1)
    root = synth.paired({"a": rng.integers(0, 2, (64, 64), dtype=np.uint8)})
    bad = _truncate(root / which / "a.png")
    reader = read_image if which == "images" else read_mask
    with pytest.raises(PixelwiseError) as exc:
        reader(bad)
    assert str(bad) in str(exc.value)
    spec = _index_spec(root, 2)
    with pytest.raises(PixelwiseError, match=str(bad)):
        load_pair(resolve_split(spec, "all")[0][0], spec)
    problems = check_split(spec, "all").problems
    assert len(problems) == 1 and str(bad) in problems[0]


def test_text_file_named_png(synth) -> None:
    path = synth.text("fake.png", "this is not an image\n")
    for reader in (read_image, read_mask):
        with pytest.raises(PixelwiseError) as exc:
            reader(path)
        assert str(path) in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(PixelwiseError, match="fake.png"):
        image_size(path)


def test_missing_image_file(synth) -> None:
    with pytest.raises(PixelwiseError, match="nothere.png"):
        read_image(synth.root / "nothere.png")


def test_mask_values_outside_declared_classes(synth) -> None:
    good = np.zeros((4, 4), np.uint8)
    bad = good.copy()
    bad[0, :3] = 7
    bad[3, 3] = 9
    root = synth.paired({"a": good, "b": bad, "c": bad})
    spec = _index_spec(root, 2)
    with pytest.raises(PixelwiseError) as exc:
        load_pair(resolve_split(spec, "all")[0][1], spec)
    msg = str(exc.value)
    assert str(root / "masks" / "b.png") in msg and "7 (3 px)" in msg and "9 (1 px)" in msg
    report = check_split(spec, "all")
    assert not report.ok and len(report.problems) == 2
    seven = next(p for p in report.problems if "value 7" in p)
    assert "6 px in 2 file(s)" in seven
    assert str(root / "masks" / "b.png") in seven and str(root / "masks" / "c.png") in seven
    nine = next(p for p in report.problems if "value 9" in p)
    assert "2 px in 2 file(s)" in nine


def test_empty_split(synth) -> None:
    (synth.root / "images").mkdir()
    (synth.root / "masks").mkdir()
    spec = _index_spec(synth.root, 2)
    samples, problems = resolve_split(spec, "all")
    assert samples == [] and len(problems) == 1 and "empty split" in problems[0]
    assert str(synth.root) in problems[0]  # names where the split came from
    with pytest.raises(PixelwiseError, match="empty split"):
        SegmentationDataset(spec, "all", build_eval_transform(mean=[0.5] * 3, std=[0.25] * 3))


def test_unknown_split_name(synth) -> None:
    spec = _index_spec(synth.root, 2)
    with pytest.raises(PixelwiseError, match="'tset'") as exc:
        resolve_split(spec, "tset")
    assert "splits: all" in str(exc.value) and str(synth.root) in str(exc.value)


_GOOD = {"classes": [{"name": "a"}, {"name": "b"}], "splits": {"s": {"images": "."}}}


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({**_GOOD, "clases": []}, "clases"),
        ({**_GOOD, "splits": {"s": {"images": ".", "msks": "m"}}}, "msks"),
        ({**_GOOD, "mask": {"encoding": "index", "ignore": 3}}, "ignore"),
        ({**_GOOD, "mask": {"encoding": "palette"}}, "encoding"),
        ({**_GOOD, "splits": {"s": {}}}, "exactly one of 'list' or 'images'"),
        ({**_GOOD, "classes": [{"name": "a"}, {"name": "a"}]}, "duplicate class names"),
        ({**_GOOD, "mask": {"encoding": "value_map"}}, "mask_value"),
        ({**_GOOD, "mask": {"encoding": "rgb"}}, "color"),
        (
            {**_GOOD, "classes": [{"name": "a"}], "mask": {"encoding": "binary"}},
            "exactly 2 classes",
        ),
        ({**_GOOD, "root": "nowhere"}, "not a folder"),
    ],
)
def test_bad_dataset_yaml_names_the_problem(synth, raw: dict, needle: str) -> None:
    path = synth.yaml("bad.yaml", raw)
    with pytest.raises(PixelwiseError) as exc:
        load_dataset_spec(path)
    msg = str(exc.value)
    assert needle in msg and str(path) in msg and "\n" not in msg


def test_unparseable_or_missing_dataset_yaml(synth) -> None:
    path = synth.text("broken.yaml", "classes: [a, b\nsplits: {\n")
    with pytest.raises(PixelwiseError, match="invalid YAML") as exc:
        load_dataset_spec(path)
    assert str(path) in str(exc.value)
    with pytest.raises(PixelwiseError, match="not found"):
        load_dataset_spec(synth.root / "missing.yaml")
    with pytest.raises(PixelwiseError, match="mapping"):
        load_dataset_spec(synth.text("list.yaml", "- a\n- b\n"))


def test_check_dataset_raises_once_with_first_problem_and_count(synth) -> None:
    root = synth.paired({s: np.zeros((4, 4), np.uint8) for s in "abc"})
    synth.png(root / "masks" / "a.png", np.zeros((3, 3), np.uint8))  # size mismatch
    _truncate(root / "images" / "b.png")
    synth.png(root / "masks" / "c.png", np.full((4, 4), 5, np.uint8))  # undeclared value
    spec = _index_spec(root, 2)
    with pytest.raises(PixelwiseError) as exc:
        check_dataset(spec, ["all"])
    msg = str(exc.value)
    assert str(root / "masks" / "a.png") in msg  # the first problem, by file order
    assert "+2 more problem(s)" in msg and "\n" not in msg


def test_check_dataset_returns_reports_when_clean(synth) -> None:
    root = synth.paired({"a": np.array([[0, 1], [1, 255]], np.uint8)})
    reports = check_dataset(_index_spec(root, 2, ignore_index=255), ["all"])
    assert len(reports) == 1 and reports[0].ok
    assert reports[0].class_pixels.tolist() == [1, 2] and reports[0].ignored_pixels == 1


# --------------------------------------------------------------------------------------------------
# SegmentationDataset


def test_dataset_item_types_and_ignore(synth) -> None:
    mask = np.array([[0, 1, 2], [11, 1, 0]], np.uint8)
    root = synth.paired({"a": mask})
    spec = _index_spec(root, 3, ignore_index=11)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ds = SegmentationDataset(spec, "all", build_eval_transform(mean=mean, std=std))
    assert len(ds) == 1
    item = ds[0]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 2, 3)
    assert item["mask"].dtype == torch.int64 and item["mask"].shape == (2, 3)
    assert item["mask"].tolist() == [[0, 1, 2], [255, 1, 0]]
    raw = read_image(root / "images" / "a.png").astype(np.float32) / 255.0
    expected = (raw - np.array(mean, np.float32)) / np.array(std, np.float32)
    np.testing.assert_allclose(item["image"].numpy(), expected.transpose(2, 0, 1), atol=1e-5)
    assert item["index"] == 0 and item["path"] == str(root / "images" / "a.png")


def test_dataset_grayscale_has_one_channel(synth) -> None:
    root = synth.paired({"a": np.zeros((5, 6), np.uint8)}, image_channels=1)
    spec = _spec(root, [{"name": "a"}, {"name": "b"}], {"encoding": "index"})
    spec = spec.model_copy(update={"image_channels": 1})
    ds = SegmentationDataset(spec, "all", build_eval_transform(mean=[0.5], std=[0.25]))
    assert ds[0]["image"].shape == (1, 5, 6)


def test_dataset_augmentation_is_seeded_by_seed_epoch_index(synth) -> None:
    rng = np.random.default_rng(3)
    root = synth.paired({s: rng.integers(0, 3, (48, 56), dtype=np.uint8) for s in "ab"})
    spec = _index_spec(root, 3)

    def make(seed: int = 0) -> SegmentationDataset:
        tf = build_train_transform(
            crop_size=(24, 24), scale=(0.75, 1.25), hflip=True, mean=[0.5] * 3, std=[0.25] * 3
        )
        return SegmentationDataset(spec, "all", tf, seed=seed)

    ds, other = make(), make()
    other.set_epoch(0)
    first = ds[1]
    again = ds[1]
    twin = other[1]
    assert first["image"].shape == (3, 24, 24) and first["mask"].shape == (24, 24)
    for a, b in ((first, again), (first, twin)):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    ds.set_epoch(1)
    later = ds[1]
    assert not torch.equal(first["image"], later["image"])
    ds.set_epoch(0)
    assert torch.equal(ds[1]["image"], first["image"])  # epoch 0 again: the same crop again
    assert not torch.equal(make(seed=1)[1]["image"], first["image"])
