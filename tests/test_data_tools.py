"""``pixelwise data inspect / validate / convert / split``: reports checked against datasets built
here with known contents, and the error contract (one line naming the file, non-zero exit)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import run_cli
from PIL import Image

from pixelwise.data import convert_dataset, load_dataset_spec
from pixelwise.data.inspect import inspect_dataset, report_text
from pixelwise.errors import PixelwiseError

H, W = 8, 10


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


_cli = run_cli


def _three_class(root: Path) -> Path:
    """train: a, b, c; val: d (the same pixels as a), e (an empty mask). Classes 0..2, 255 void."""
    rng = np.random.default_rng(0)
    imgs = {k: rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for k in "abce"}
    imgs["d"] = imgs["a"]
    masks = {k: np.zeros((H, W), np.uint8) for k in "abcde"}
    masks["a"][:4] = 1
    masks["b"][:, :5] = 2
    masks["c"][0, 0] = 255
    masks["d"][:4] = 1
    masks["e"][:] = 255  # nothing labelled
    for k in "abc":
        _png(root / "train/images" / f"{k}.png", imgs[k])
        _png(root / "train/masks" / f"{k}.png", masks[k])
    for k in "de":
        _png(root / "val/images" / f"{k}.png", imgs[k])
        _png(root / "val/masks" / f"{k}.png", masks[k])
    cfg = {
        "name": "three",
        "root": ".",
        "classes": [{"name": "bg"}, {"name": "road"}, {"name": "car"}],
        "mask": {"encoding": "index", "ignore_index": 255},
        "splits": {
            "train": {"images": "train/images", "masks": "train/masks"},
            "val": {"images": "val/images", "masks": "val/masks"},
        },
    }
    path = root / "three.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_inspect_counts_presence_empty_and_duplicates(tmp_path: Path) -> None:
    spec = load_dataset_spec(_three_class(tmp_path))
    r = inspect_dataset(spec, workers=2)
    train, val = r["splits"]["train"], r["splits"]["val"]
    assert train["images"] == 3 and val["images"] == 2
    assert train["sizes"] == {f"{W}x{H}": 3} and train["modes"] == {"RGB": 3}
    assert train["class_pixels"] == {"bg": 3 * H * W - 40 - 40 - 1, "road": 40, "car": 40}
    assert train["class_presence"] == {"bg": 3, "road": 1, "car": 1}
    assert train["ignored_pixels"] == 1
    assert val["empty_images"] == ["val/images/e.png"]
    assert val["absent_classes"] == ["car"]
    assert train["mask_values"] == {"0": 3 * H * W - 81, "1": 40, "2": 40, "255": 1}
    assert r["declared_values"] == {"0": "bg", "1": "road", "2": "car", "255": "(ignored)"}
    (overlap,) = r["overlaps"]
    assert overlap["splits"] == ["train", "val"] and overlap["same_file"] == 0
    assert overlap["same_pixels"] == 1
    assert overlap["examples"][0] == ["train/images/a.png", "val/images/d.png"]
    text = report_text(r)
    assert "1 identical image(s)" in text and "images with no labelled pixel: 1" in text


def test_inspect_cli_writes_text_json_png(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _three_class(tmp_path)
    code, out, _ = _cli(capsys, "data", "inspect", str(cfg), "--out", str(tmp_path / "rep"))
    assert code == 0, out
    assert "== split train: 3 images" in out
    js = json.loads((tmp_path / "rep/inspect.json").read_text())
    assert js["splits"]["val"]["images"] == 2
    assert (tmp_path / "rep/inspect.txt").read_text().startswith("dataset three")
    with Image.open(tmp_path / "rep/inspect.png") as im:
        assert im.format == "PNG" and im.width > 400


def test_inspect_reports_undeclared_values_and_unreadable_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _three_class(tmp_path)
    bad = np.zeros((H, W), np.uint8)
    bad[0, :3] = 7
    _png(tmp_path / "train/masks/b.png", bad)
    (tmp_path / "val/images/e.png").write_bytes(b"not a png")
    code, out, err = _cli(capsys, "data", "inspect", str(cfg), "--out", str(tmp_path / "rep"))
    assert code == 1
    assert "UNDECLARED mask values: 7 (3 px)" in out
    # the problem line names the mask file(s) holding the value, as validate does
    assert (
        "problem: split 'train': mask value 7 is not a declared class "
        "(3 px in 1 file(s): train/masks/b.png)"
    ) in out
    train = json.loads((tmp_path / "rep/inspect.json").read_text())["splits"]["train"]
    assert train["undeclared_values"] == {"7": 3}
    assert train["undeclared_files"] == {"7": {"count": 1, "examples": ["train/masks/b.png"]}}
    assert any("train/masks/b.png" in p for p in train["problems"])
    assert "val/images/e.png: not a readable image" in out
    assert "Traceback" not in out + err


# ------------------------------------------------------------------------------------- validate


def test_validate_headers_and_decoding_agree_on_bad_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pixelwise.data import check_split

    cfg = _three_class(tmp_path)
    spec = load_dataset_spec(cfg)
    for decode in (True, False):
        assert check_split(spec, "train", decode_images=decode).ok
    good = (tmp_path / "train/images/a.png").read_bytes()
    (tmp_path / "train/images/a.png").write_bytes(good[:-40])  # truncated
    Image.fromarray(np.zeros((H, W + 1, 3), np.uint8)).save(tmp_path / "train/images/b.png")
    corrupt = bytearray((tmp_path / "train/images/c.png").read_bytes())
    corrupt[60] ^= 0xFF  # inside IDAT: a bad CRC
    (tmp_path / "train/images/c.png").write_bytes(bytes(corrupt))
    for decode in (True, False):
        problems = check_split(spec, "train", decode_images=decode).problems
        assert len(problems) == 3, problems
        assert any("a.png" in p and "cannot decode image" in p for p in problems), problems
        assert any("b.png" in p and "!= image size 11x8" in p for p in problems), problems
        assert any("c.png" in p for p in problems), problems
    code, out, err = _cli(
        capsys, "data", "validate", str(cfg), "--split", "train", "--workers", "2"
    )
    assert code == 1 and "split train: 3 images, 3 problem(s)" in out
    assert len(err.strip().splitlines()) == 3 and "Traceback" not in err


def test_validate_reads_only_headers_of_good_pngs(tmp_path: Path, monkeypatch) -> None:
    from pixelwise.data import check_split, validate

    spec = load_dataset_spec(_three_class(tmp_path))
    calls: list[str] = []
    real = validate.read_sample_image
    monkeypatch.setattr(validate, "read_sample_image", lambda s, sp: calls.append(s) or real(s, sp))
    assert check_split(spec, "train", decode_images=False).ok and calls == []
    assert check_split(spec, "train", decode_images=True).ok and len(calls) == 3


# -------------------------------------------------------------------------------------- convert


def _rgb_dataset(root: Path) -> tuple[Path, list[np.ndarray]]:
    colors = [(0, 0, 0), (128, 64, 128), (220, 20, 60)]
    labels = []
    rng = np.random.default_rng(1)
    for k in range(3):
        lab = rng.integers(0, 3, (H, W)).astype(np.uint8)
        rgb = np.asarray(colors, np.uint8)[lab]
        rgb[0, 0] = (255, 255, 255)  # unlabelled
        lab[0, 0] = 255
        labels.append(lab)
        _png(root / "images" / f"{k}.png", rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
        _png(root / "masks" / f"{k}.png", rgb)
    cfg = {
        "root": ".",
        "classes": [
            {"name": n, "color": list(c)}
            for n, c in zip(["bg", "road", "person"], colors, strict=True)
        ],
        "mask": {"encoding": "rgb", "ignore_color": [255, 255, 255]},
        "splits": {"all": {"images": "images", "masks": "masks"}},
    }
    path = root / "rgb.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, labels


def test_convert_colour_to_index_and_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, labels = _rgb_dataset(tmp_path / "src")
    before = sorted(p.read_bytes() for p in (tmp_path / "src").rglob("*.png"))
    code, out, _ = _cli(capsys, "data", "convert", str(cfg), "--out", str(tmp_path / "idx"))
    assert code == 0, out
    for k, lab in enumerate(labels):
        got = np.asarray(Image.open(tmp_path / f"idx/masks/{k}.png"))
        np.testing.assert_array_equal(got, lab)
        assert (tmp_path / f"idx/images/{k}.png").read_bytes() == (
            tmp_path / f"src/images/{k}.png"
        ).read_bytes()
    assert sorted(p.read_bytes() for p in (tmp_path / "src").rglob("*.png")) == before
    # the written dataset.yaml reads back; index -> rgb round trip gives the source colours
    code, out, _ = _cli(
        capsys, "data", "convert", str(tmp_path / "idx/dataset.yaml"), "--out", str(tmp_path / "rgb"),
        "--to", "rgb", "--ignore-color", "255,255,255",
    )  # fmt: skip
    assert code == 0, out
    for k in range(3):
        np.testing.assert_array_equal(
            np.asarray(Image.open(tmp_path / f"rgb/masks/{k}.png")),
            np.asarray(Image.open(tmp_path / f"src/masks/{k}.png")),
        )
    code, out, _ = _cli(capsys, "data", "validate", str(tmp_path / "rgb/dataset.yaml"))
    assert code == 0, out


def test_convert_to_palette_and_its_colour_refusals(tmp_path: Path) -> None:
    cfg, labels = _rgb_dataset(tmp_path / "src")
    spec = load_dataset_spec(cfg)
    plan = convert_dataset(spec, tmp_path / "pal", to="palette", workers=1)
    assert plan.written and not plan.problems
    with Image.open(tmp_path / "pal/masks/0.png") as im:
        assert im.mode == "P" and im.getpalette()[:9] == [0, 0, 0, 128, 64, 128, 220, 20, 60]
        np.testing.assert_array_equal(np.asarray(im), labels[0])
    written = yaml.safe_load((tmp_path / "pal/dataset.yaml").read_text())
    assert written["mask"] == {"encoding": "index", "ignore_index": 255}
    # unlabelled pixels written in a class's colour would read back as that class
    with pytest.raises(PixelwiseError, match=r"^--ignore-color \(0, 0, 0\): is the colour of a"):
        convert_dataset(spec, tmp_path / "x", to="rgb", ignore_color=(0, 0, 0))
    # ... and so would one of two classes sharing a colour
    same = spec.model_copy(update={"classes": [*spec.classes[:2], spec.classes[1]]})
    with pytest.raises(PixelwiseError, match="^--to rgb: mask encoding 'rgb' cannot write class"):
        convert_dataset(same, tmp_path / "x", to="rgb", ignore_color=(1, 2, 3))
    with pytest.raises(PixelwiseError, match="^--to 'jpeg': expected index, palette or rgb$"):
        convert_dataset(spec, tmp_path / "x", to="jpeg")  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()


def test_convert_map_dry_run_and_refusals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "bin"
    m = np.zeros((H, W), np.uint8)
    m[:3] = 255
    _png(root / "images/a.png", np.zeros((H, W, 3), np.uint8))
    _png(root / "masks/a.png", m)
    cfg = root / "bin.yaml"
    cfg.write_text(yaml.safe_dump({
        "root": ".", "classes": [{"name": "bg"}, {"name": "fg"}], "mask": {"encoding": "index"},
        "splits": {"all": {"images": "images", "masks": "masks"}},
    }))  # fmt: skip
    # without the map, 255 is not a class: a problem, nothing written
    code, out, err = _cli(capsys, "data", "convert", str(cfg), "--out", str(tmp_path / "o"))
    assert code == 1 and "a.png: mask values outside the declared classes: 255" in err
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.*"))
    code, out, _ = _cli(
        capsys,
        "data",
        "convert",
        str(cfg),
        "--out",
        str(tmp_path / "o"),
        "--map",
        "255:1",
        "--dry-run",
    )
    assert code == 0 and "would write 1 image/mask pairs" in out and "255→1: 30 px" in out
    assert not (tmp_path / "o").exists()
    code, out, _ = _cli(
        capsys, "data", "convert", str(cfg), "--out", str(tmp_path / "o"), "--map", "255:1"
    )
    assert code == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o/masks/a.png")), m // 255)
    # refusals: an existing non-empty folder, the source itself, a bad --map
    for dest, msg in ((tmp_path / "o", "not an empty folder"), (root, "would hold the source")):
        code, _, err = _cli(
            capsys, "data", "convert", str(cfg), "--out", str(dest), "--map", "255:1"
        )
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1
    code, _, err = _cli(
        capsys, "data", "convert", str(cfg), "--out", str(tmp_path / "p"), "--map", "255=1"
    )
    assert code == 2 and "--map '255=1'" in err


def test_convert_polygons_to_masks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "lm"
    _png(root / "a.png", np.zeros((H, W, 3), np.uint8))
    shape = {"label": "road", "points": [[0, 4], [10, 4], [10, 8], [0, 8]], "shape_type": "polygon"}
    doc = {"imagePath": "a.png", "imageHeight": H, "imageWidth": W, "shapes": [shape]}
    (root / "a.json").write_text(json.dumps(doc))
    code, out, _ = _cli(
        capsys, "data", "convert", str(root), "--out", str(tmp_path / "o"), "--split", "all"
    )
    assert code == 0, out
    want = np.zeros((H, W), np.uint8)
    want[4:] = 1
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o/masks/a.png")), want)


# ---------------------------------------------------------------------------------------- split


def test_stratified_split_keeps_rare_classes_in_every_split() -> None:
    from pixelwise.data.split import stratified_split

    rng = np.random.default_rng(0)
    labels = [
        {0} | ({1} if i % 10 == 0 else set()) | ({2} if rng.random() < 0.5 else set())
        for i in range(200)
    ]
    a = stratified_split(labels, [0.7, 0.15, 0.15], seed=3)
    assert a == stratified_split(labels, [0.7, 0.15, 0.15], seed=3)
    assert a != stratified_split(labels, [0.7, 0.15, 0.15], seed=4)
    sizes = np.bincount(a, minlength=3)
    assert abs(sizes[0] - 140) <= 3 and abs(sizes[1] - 30) <= 3
    rare = np.bincount([a[i] for i in range(200) if 1 in labels[i]], minlength=3)
    assert list(rare) == [14, 3, 3]  # 20 images of the rare class: 70/15/15 exactly


def test_split_cli_writes_lists_and_a_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "d"
    for i in range(20):
        m = np.zeros((H, W), np.uint8)
        m[:2] = 1 + (i % 4 == 0)
        _png(root / f"images/{i:02d}.png", np.full((H, W, 3), i, np.uint8))
        _png(root / f"masks/{i:02d}.png", m)
    cfg = root / "d.yaml"
    cfg.write_text(yaml.safe_dump({
        "root": ".", "classes": [{"name": "bg"}, {"name": "a"}, {"name": "rare"}],
        "mask": {"encoding": "index"}, "splits": {"all": {"images": "images", "masks": "masks"}},
    }))  # fmt: skip
    args = (
        "data",
        "split",
        str(cfg),
        "--out",
        str(tmp_path / "s"),
        "--ratios",
        "60,20,20",
        "--seed",
        "7",
    )
    code, out, _ = _cli(capsys, *args)
    assert code == 0, out
    lists = {
        n: (tmp_path / f"s/{n}.txt").read_text().splitlines() for n in ("train", "val", "test")
    }
    assert [len(v) for v in lists.values()] == [12, 4, 4]
    assert sorted(sum(lists.values(), [])) == [
        f"images/{i:02d}.png masks/{i:02d}.png" for i in range(20)
    ]
    spec = load_dataset_spec(tmp_path / "s/dataset.yaml")
    from pixelwise.data import resolve_split

    for n, lines in lists.items():
        samples, problems = resolve_split(spec, n)
        assert not problems and len(samples) == len(lines)
        rare = sum(1 for ln in lines if int(ln[7:9]) % 4 == 0)
        assert rare == {"train": 3, "val": 1, "test": 1}[n]
    # the same seed again: the same lists; an existing list is not overwritten
    code, _, err = _cli(capsys, *args)
    assert code == 2 and "exists; not overwritten" in err
    code, _, _ = _cli(capsys, *args[:4], str(tmp_path / "s2"), *args[5:])
    assert code == 0
    for n in lists:
        assert (tmp_path / f"s2/{n}.txt").read_text().splitlines() == lists[n]
    code, _, err = _cli(
        capsys, "data", "split", str(cfg), "--out", str(tmp_path / "s3"), "--ratios", "1,2"
    )
    assert code == 2 and "2 ratios for 3 splits" in err
