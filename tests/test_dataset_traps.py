"""The data traps a new user hits on unseen data (issue 20): binary 0/255 and lossy (JPEG) masks in a
folder without YAML, mask values hidden from ``data inspect``'s text, splits over several folders,
list files with spaces in paths, images and masks sharing one folder, and names paired by pattern."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from test_data_tools import _cli  # tests/ is on sys.path

from pixelwise.data import check_split, infer_spec, load_dataset_spec, load_pair, resolve_split
from pixelwise.data.inspect import inspect_dataset, report_text
from pixelwise.errors import PixelwiseError

BINARY_NOTE = (
    "masks hold only 0 and 255: read as binary (0 background, 255 foreground); "
    "write a dataset YAML to choose otherwise"
)


def _blocks(seed: int, h: int = 30, w: int = 48) -> np.ndarray:
    """A 0/255 mask of 6×6 blocks: edges inside JPEG's 8×8 blocks, so a JPEG blurs them (but keeps
    them on the right side of 128)."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 2, (h // 6, w // 6), dtype=np.uint8) * 255
    cells[0, 0], cells[-1, -1] = 0, 255  # both values in every mask
    return np.kron(cells, np.ones((6, 6), np.uint8))


def _jpeg(path: Path, array: np.ndarray, quality: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="JPEG", quality=quality)


def _split_yaml(synth, splits: dict, **extra) -> Path:
    doc = {"classes": [{"name": "bg"}, {"name": "fg"}], "splits": splits, **extra}
    return synth.yaml("ds.yaml", doc)


# ------------------------------------------------------------------------- (a) binary and lossy


def test_binary_png_folder_says_how_it_was_read(synth, capsys) -> None:
    root = synth.paired({f"s{i}": _blocks(i) for i in range(4)}, folder="em", image_channels=1)
    spec = infer_spec(root)
    assert spec.mask.encoding == "value_map" and spec.class_names == ["background", "foreground"]
    assert spec.notes == [BINARY_NOTE]
    code, out, _ = _cli(capsys, "data", "validate", str(root))
    assert code == 0 and f"note: {BINARY_NOTE}" in out.splitlines()
    code, out, _ = _cli(capsys, "data", "inspect", str(root), "--split", "all")
    assert code == 0 and f"note: {BINARY_NOTE}" in out.splitlines()


def test_binary_tiff_folder_is_two_classes_not_one_with_255_ignored(synth, capsys) -> None:
    """TIFF masks are detected as the geotiff format, which read 0/255 as one class + ignored."""
    root = synth.root / "tif"
    for i in range(3):
        synth.path(f"tif/images/t{i}.tif")
        Image.fromarray(synth.image(30, 48, 1)).save(root / "images" / f"t{i}.tif")
        synth.path(f"tif/masks/t{i}.tif")
        Image.fromarray(_blocks(i)).save(root / "masks" / f"t{i}.tif")
    spec = load_dataset_spec(root)
    assert spec.format == "geotiff"
    assert [(c.name, c.mask_value) for c in spec.classes] == [
        ("background", 0),
        ("foreground", 255),
    ]
    assert spec.notes == [BINARY_NOTE]
    sample = resolve_split(spec, "all")[0][0]
    np.testing.assert_array_equal(load_pair(sample, spec)[1], _blocks(0) // 255)
    assert check_split(spec, "all").ignored_pixels == 0


def test_jpeg_masks_read_as_binary_with_a_threshold(synth, capsys) -> None:
    root = synth.root / "jpg"
    for i in range(4):
        synth.png(f"jpg/images/j{i}.png", synth.image(30, 48))
        _jpeg(root / "masks" / f"j{i}.jpg", _blocks(i))
    raw = np.asarray(Image.open(root / "masks" / "j0.jpg"))
    assert len(np.unique(raw)) > 2  # the JPEG did blur the values
    spec = infer_spec(root)
    assert spec.mask.encoding == "binary" and spec.mask.threshold == 128
    assert spec.class_names == ["background", "foreground"]
    (note,) = spec.notes
    assert note.startswith("masks hold values near 0 and 255 only (")
    assert "read as binary with threshold 128" in note
    samples = resolve_split(spec, "all")[0]
    np.testing.assert_array_equal(load_pair(samples[0], spec)[1], _blocks(0) // 255)
    code, out, _ = _cli(capsys, "data", "validate", str(root))
    assert code == 0 and "255 classes" not in out and "note: masks hold values near" in out


def test_index_masks_with_255_are_not_taken_for_binary() -> None:
    from pixelwise.data.survey import gray_reading

    counts = {**{v: 100 for v in range(21)}, 255: 50}  # VOC-like: classes 0..20, 255 void
    reading = gray_reading(counts)
    assert reading.mask == {"encoding": "index", "ignore_index": 255} and reading.note is None
    assert len(reading.classes) == 21


def test_yaml_two_classes_with_lossy_masks_suggests_binary(synth) -> None:
    synth.png("images/a.png", synth.image(30, 48))
    _jpeg(synth.root / "masks" / "a.jpg", _blocks(0))
    doc = {
        "classes": [{"name": "bg", "mask_value": 0}, {"name": "fg", "mask_value": 255}],
        "mask": {"encoding": "value_map"},
        "splits": {"all": {"images": "images", "masks": "masks"}},
    }
    spec = load_dataset_spec(synth.yaml("ds.yaml", doc))
    rep = check_split(spec, "all")
    assert not rep.ok  # the values are still undeclared ...
    (hint,) = rep.notes  # ... and one line says what to write
    assert "`mask: {encoding: binary, threshold: 128}`" in hint and "\n" not in hint
    report = inspect_dataset(spec)
    assert report["splits"]["all"]["notes"] == [hint]
    assert f"   note: {hint}" in report_text(report)


def test_folder_survey_reads_a_bounded_spread_of_masks(synth, monkeypatch) -> None:
    import pixelwise.data.spec as spec_module
    from pixelwise.data.survey import SURVEY_MASKS, spread

    n = SURVEY_MASKS + 30
    for i in range(n):
        synth.png(f"big/images/{i:04d}.png", synth.image(2, 2))
        synth.png(f"big/masks/{i:04d}.png", np.array([[0, 255], [255, 0]], np.uint8))
    read: list[Path] = []
    original = spec_module.read_mask

    def counting(path, **kw):  # noqa: ANN001, ANN202
        read.append(Path(path))
        return original(path, **kw)

    monkeypatch.setattr(spec_module, "read_mask", counting)
    spec = infer_spec(synth.root / "big")
    assert len(read) == SURVEY_MASKS
    assert read[0].name == "0000.png" and read[-1].name == f"{n - 1:04d}.png"
    assert f"from {SURVEY_MASKS} of {n} masks" in str(spec.source)
    assert spec.notes == [BINARY_NOTE]
    assert spread(list(range(10)), 4) == [0, 3, 6, 9]


# ------------------------------------------------------------------------- (b) inspect's values


def test_inspect_text_lists_every_mask_value(synth) -> None:
    values = np.array([*range(40), 255], np.uint8)
    synth.paired({"a": values.reshape(1, -1), "b": values[::-1].reshape(1, -1)})
    spec = infer_spec(synth.root)
    assert spec.num_classes == 40
    text = report_text(inspect_dataset(spec, ["all"]))
    assert "mask values found: 41 distinct" in text
    assert "     0-39, 255" in text.splitlines()


def test_inspect_text_wraps_scattered_values_and_counts_what_it_cannot_list(synth) -> None:
    synth.paired({"a": np.arange(0, 200, 2, dtype=np.uint8).reshape(1, -1)})
    lines = report_text(inspect_dataset(_index_from(synth.root, 199), ["all"])).splitlines()
    start = next(i for i, ln in enumerate(lines) if "mask values found: 100 distinct" in ln)
    body = lines[start + 1 : start + 6]
    assert " ".join(body).replace(",", " ").split() == [str(v) for v in range(0, 200, 2)]
    assert all(len(ln) <= 100 for ln in body)
    colours = np.stack([np.arange(300) % 256, np.arange(300) // 256, np.full(300, 7)], -1)
    synth.paired({"c": colours.reshape(15, 20, 3).astype(np.uint8)}, folder="rgb")
    lines = report_text(inspect_dataset(_index_from(synth.root / "rgb", 1), ["all"])).splitlines()
    assert any(ln.strip().startswith("... and") and "more value(s)" in ln for ln in lines)
    assert "300 distinct" in "\n".join(lines)


def _index_from(root: Path, top: int):  # noqa: ANN202
    from pixelwise.data import DatasetSpec

    return DatasetSpec(
        root=root,
        classes=[{"name": f"c{i}"} for i in range(top + 1)],
        splits={"all": {"images": "images", "masks": "masks"}},
        source=str(root),
    )


# -------------------------------------------------------------------- (c) folders and list files


def test_split_over_several_folders_pairs_them_by_position(synth) -> None:
    for site, value in (("a", 0), ("b", 1)):
        synth.png(f"{site}/img/x.png", synth.image(2, 3))
        synth.png(f"{site}/gt/x.png", np.full((2, 3), value, np.uint8))
    path = _split_yaml(synth, {"all": {"images": ["a/img", "b/img"], "masks": ["a/gt", "b/gt"]}})
    spec = load_dataset_spec(path)
    samples, problems = resolve_split(spec, "all")
    assert problems == []
    assert [(s.image.parent.parent.name, s.mask.parent.parent.name) for s in samples] == [
        ("a", "a"),
        ("b", "b"),
    ]
    assert [int(load_pair(s, spec)[1][0, 0]) for s in samples] == [0, 1]


@pytest.mark.parametrize(
    ("split", "needle"),
    [
        ({"images": ["a", "b"], "masks": ["a"]}, "2 image folder(s) but 1 mask folder(s)"),
        ({"images": "a", "masks": ["a", "b"]}, "1 image folder(s) but 2 mask folder(s)"),
        ({"list": "l.txt", "pair": {"mask": "{id}_L"}}, "pair applies to paired folders"),
    ],
)
def test_bad_folder_lists_are_refused_in_one_line(synth, split: dict, needle: str) -> None:
    path = _split_yaml(synth, {"s": split})
    with pytest.raises(PixelwiseError) as exc:
        load_dataset_spec(path)
    assert needle in str(exc.value) and str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_list_file_paths_with_spaces(synth) -> None:
    from pixelwise.data.pairing import list_entries

    for image, mask in (("my image", "my image mask"), ("plain", "plain_mask")):
        synth.png(f"im/{image}.png", synth.image(2, 2))
        synth.png(f"gt/{mask}.png", np.zeros((2, 2), np.uint8))
    synth.text(
        "l.txt",
        "im/my image.png\tgt/my image mask.png\n"  # a tab separates paths holding spaces
        "im/plain.png gt/plain_mask.png\n"  # the historical "image mask"
        "im/my image.png\n"  # one existing file, spaces included: an image without mask
        "a b c\n",
    )
    spec = load_dataset_spec(_split_yaml(synth, {"s": {"list": "l.txt"}}))
    samples, problems = resolve_split(spec, "s")
    got = [(s.image.name, s.mask.name if s.mask else None) for s in samples]
    assert got == [
        ("my image.png", "my image mask.png"),
        ("plain.png", "plain_mask.png"),
        ("my image.png", None),
    ]
    (problem,) = problems
    assert "l.txt:4" in problem and "tab" in problem
    assert list_entries("  # comment") == [] and list_entries("a\t\tb\t") == ["a", "b"]


def test_data_split_writes_a_tab_where_a_path_holds_spaces(tmp_path: Path) -> None:
    from pixelwise.data.pairing import list_entries
    from pixelwise.data.spec import Sample
    from pixelwise.data.split import _line

    root = tmp_path
    assert _line(Sample(root / "a b.png", root / "m.png"), root) == "a b.png\tm.png"
    assert _line(Sample(root / "a.png", root / "m.png"), root) == "a.png m.png"
    assert list_entries("a b.png\tm.png", root) == ["a b.png", "m.png"]


# -------------------------------------------------------------------------- (d) one shared folder


def test_shared_folder_without_a_rule_is_refused(synth) -> None:
    path = _split_yaml(synth, {"s": {"images": "data", "masks": "data/"}})
    with pytest.raises(PixelwiseError, match="same folder 'data'.*mask_ext") as exc:
        load_dataset_spec(path)
    assert str(path) in str(exc.value)


def test_shared_folder_split_by_extension(synth) -> None:
    for stem in ("x", "y"):
        _jpeg(synth.root / "data" / f"{stem}.jpg", synth.image(8, 8))
        synth.png(f"data/{stem}.png", np.ones((8, 8), np.uint8))
    for rule in (
        {"mask_ext": ".png"},
        {"image_ext": ["JPG"]},
        {"image_ext": ".jpg", "mask_ext": "png"},
    ):
        spec = load_dataset_spec(
            _split_yaml(synth, {"s": {"images": "data", "masks": "data", **rule}})
        )
        samples, problems = resolve_split(spec, "s")
        assert problems == [], rule
        assert [(s.image.name, s.mask.name) for s in samples] == [
            ("x.jpg", "x.png"),
            ("y.jpg", "y.png"),
        ]
    assert check_split(spec, "s").ok


def test_shared_folder_with_mask_suffix_takes_no_mask_for_an_image(synth) -> None:
    for stem in ("p", "q"):
        synth.png(f"data/{stem}.png", synth.image(4, 4))
        synth.png(f"data/{stem}_mask.png", np.zeros((4, 4), np.uint8))
    spec = load_dataset_spec(
        _split_yaml(synth, {"s": {"images": "data", "masks": "data", "mask_suffix": "_mask"}})
    )
    samples, problems = resolve_split(spec, "s")
    assert problems == []
    assert [(s.image.name, s.mask.name) for s in samples] == [
        ("p.png", "p_mask.png"),
        ("q.png", "q_mask.png"),
    ]


def test_two_files_that_could_be_the_mask_are_reported(synth) -> None:
    synth.png("im/x.png", synth.image(4, 4))
    synth.png("gt/x.png", np.zeros((4, 4), np.uint8))
    _jpeg(synth.root / "gt" / "x.jpg", np.zeros((4, 4), np.uint8))
    spec = load_dataset_spec(_split_yaml(synth, {"s": {"images": "im", "masks": "gt"}}))
    assert any(
        "2 files could be its mask" in p and "mask_ext" in p for p in resolve_split(spec, "s")[1]
    )
    spec = load_dataset_spec(
        _split_yaml(synth, {"s": {"images": "im", "masks": "gt", "mask_ext": [".png"]}})
    )
    assert resolve_split(spec, "s")[1] == []


@pytest.mark.parametrize(
    ("rule", "needle"),
    [
        ({"image_ext": ".txt"}, "image_ext '.txt' is not an image extension"),
        ({"mask_ext": []}, "mask_ext is empty"),
        ({"image_ext": ".png", "mask_ext": ".png"}, "same folder"),
    ],
)
def test_bad_extension_rules_are_refused(synth, rule: dict, needle: str) -> None:
    path = _split_yaml(synth, {"s": {"images": "d", "masks": "d", **rule}})
    with pytest.raises(PixelwiseError) as exc:
        load_dataset_spec(path)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


# ---------------------------------------------------------------------------- (e) name patterns


def _case_files(synth, cases: list[str]) -> None:
    for i, case in enumerate(cases):
        p = synth.path(f"im/{case}_image.tif")
        Image.fromarray(synth.image(6, 8)).save(p)
        label = Image.fromarray(np.full((6, 8), i % 2, np.uint8), "P")
        label.putpalette([0, 0, 0, 255, 255, 255])
        label.save(synth.path(f"gt/{case}_label.gif"), optimize=False)  # keeps index 1 as 1


def test_names_paired_by_pattern(synth) -> None:
    _case_files(synth, ["case7", "case8"])
    pair = {"image": "{id}_image", "mask": "{id}_label"}
    spec = load_dataset_spec(
        _split_yaml(synth, {"s": {"images": "im", "masks": "gt", "pair": pair}})
    )
    samples, problems = resolve_split(spec, "s")
    assert problems == []
    assert [(s.image.name, s.mask.name) for s in samples] == [
        ("case7_image.tif", "case7_label.gif"),
        ("case8_image.tif", "case8_label.gif"),
    ]
    assert [int(load_pair(s, spec)[1].max()) for s in samples] == [0, 1]
    assert check_split(spec, "s").ok


def test_unpaired_files_are_reported_by_name(synth, capsys) -> None:
    _case_files(synth, ["case7", "case8"])
    synth.png("im/notes.png", synth.image(2, 2))  # fits no pattern
    (synth.root / "im" / "case8_image.tif").unlink()  # case8's label is left without an image
    pair = {"image": "{id}_image", "mask": "{id}_label"}
    path = _split_yaml(synth, {"s": {"images": "im", "masks": "gt", "pair": pair}})
    code, out, err = _cli(capsys, "data", "validate", str(path))
    assert code == 1
    assert "1 image file(s) do not fit pair.image '{id}_image': notes.png" in err
    assert "1 mask file(s) belong to no image (mask names: '{id}_label'): case8_label.gif" in err


@pytest.mark.parametrize(
    ("pair", "needle"),
    [
        ({"mask": "label"}, "exactly one {id}"),
        ({"mask": "{id}_{id}"}, "exactly one {id}"),
        ({"image": "{name}_image"}, "pair.image '{name}_image' must hold exactly one {id}"),
        ({"mask": "{id}_label.gif"}, "ends with an extension"),
        ({"mask": "gt/{id}"}, "not paths"),
    ],
)
def test_bad_patterns_are_refused_in_one_line(synth, pair: dict, needle: str) -> None:
    path = _split_yaml(synth, {"s": {"images": "im", "masks": "gt", "pair": pair}})
    with pytest.raises(PixelwiseError) as exc:
        load_dataset_spec(path)
    msg = str(exc.value)
    assert needle in msg and str(path) in msg and "\n" not in msg


def test_pair_and_mask_suffix_together_are_refused(synth) -> None:
    split = {"images": "im", "masks": "gt", "mask_suffix": "_L", "pair": {"mask": "{id}_L"}}
    with pytest.raises(PixelwiseError, match="give pair or mask_suffix, not both"):
        load_dataset_spec(_split_yaml(synth, {"s": split}))


def test_formats_that_pair_their_own_files_refuse_the_folder_rules(synth) -> None:
    (synth.root / "data").mkdir()
    doc = yaml.safe_load(
        "format: labelme\nclasses: [{name: a}, {name: b}]\n"
        "splits: {s: {images: [data, data], masks: [data, data]}}\n"
    )
    with pytest.raises(PixelwiseError, match="format 'labelme' pairs its own files"):
        load_dataset_spec(synth.yaml("lm.yaml", doc))
