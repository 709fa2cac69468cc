"""Label exchange (``pixelwise data export-labels / import-labels``): the three run-length encodings
pinned on hand-computed masks, export → import reproducing masks exactly in every mask encoding,
agreement with pycocotools and with pixelwise's own COCO/CVAT readers, name matching, and the
contract on untrusted files (one-line errors naming the file, bounds, nothing written on failure)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from helpers import run_cli
from PIL import Image

from pixelwise.data import IGNORE_INDEX, load_dataset_spec
from pixelwise.data.formats._common import class_lookup
from pixelwise.data.formats.coco import render_coco
from pixelwise.data.formats.polygons import render_cvat
from pixelwise.data.interop import (
    MAX_IMAGE_PIXELS,
    detect_label_format,
    export_classes,
    export_labels,
    import_labels,
    labelstudio_config,
)
from pixelwise.data.interop.rle import (
    coco_rle_decode,
    coco_rle_encode,
    cvat_rle_decode,
    cvat_rle_encode,
    ls_rle_decode,
    ls_rle_encode,
)
from pixelwise.errors import PixelwiseError

FORMATS = ("coco", "cvat", "labelstudio")
H, W = 9, 13

# ------------------------------------------------------------------------ hand-computed encodings

# 2 x 3, foreground at (0, 1), (0, 2), (1, 2)
_TINY = np.array([[0, 1, 1], [0, 0, 1]], bool)


def test_coco_rle_of_a_tiny_mask() -> None:
    # column-major 0,0 | 1,0 | 1,1 -> runs 2, 1, 1, 2; the 4th is stored as 2 - 1 (two before):
    # each fits one 5-bit group, written as chr(48 + value)
    assert coco_rle_encode(_TINY) == {"size": [2, 3], "counts": "2111"}
    np.testing.assert_array_equal(coco_rle_decode({"size": [2, 3], "counts": "2111"}), _TINY)
    # 40 = 8 + (1 << 5): two groups, the first flagged 0x20 ("more"): chr(48 + 40) = "X", then "1"
    mask = np.zeros((40, 2), bool)
    mask[:, 1] = True  # runs 40, 40
    assert coco_rle_encode(mask)["counts"] == "X1X1"
    mask = np.zeros((3, 3), bool)
    mask[0, 0] = True  # a first run of 0 when pixel (0, 0) is set: runs 0, 1, 8
    assert coco_rle_encode(mask)["counts"] == "018"
    # runs 2, 8, 3, 1: the 4th is stored as 1 - 8 = -7, one group 0b11001 (sign bit 0x10) = "I"
    mask = np.array([0, 0] + [1] * 8 + [0] * 3 + [1], bool).reshape(14, 1)
    assert coco_rle_encode(mask)["counts"] == "283I"


def test_cvat_rle_of_a_tiny_mask() -> None:
    # tight box: columns 1..2, rows 0..1 -> [[1, 1], [0, 1]], row-major 1,1,0,1 -> runs 0, 2, 1, 1
    assert cvat_rle_encode(_TINY) == ([0, 2, 1, 1], (1, 0, 2, 2))
    np.testing.assert_array_equal(cvat_rle_decode([0, 2, 1, 1], 2, 2), _TINY[:, 1:])
    assert cvat_rle_encode(np.zeros((2, 2), bool)) is None
    with pytest.raises(PixelwiseError, match="rle covers 3 pixels, its box 2x2"):
        cvat_rle_decode([1, 2], 2, 2, "ann.xml")


def test_label_studio_rle_of_a_tiny_mask() -> None:
    # 1 x 2 mask [0, 1] -> RGBA bytes 0,0,0,0,255,255,255,255
    bits = (
        f"{8:032b}"  # value count
        + f"{8 - 1:05b}"  # word size - 1
        + "0010" + "0011" + "0111" + "1111"  # run-length field sizes - 1: 3, 4, 8, 16
        + "1" + "00" + f"{4 - 1:03b}" + f"{0:08b}"  # a run of 4 zeros, length in the 3-bit field
        + "1" + "00" + f"{4 - 1:03b}" + f"{255:08b}"  # a run of 4 x 255
    )  # fmt: skip
    bits += "0" * (-len(bits) % 8)
    expected = [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]
    assert expected == [0, 0, 0, 8, 57, 27, 252, 96, 17, 255, 128]
    mask = np.array([[0, 1]], bool)
    assert ls_rle_encode(mask) == expected
    np.testing.assert_array_equal(ls_rle_decode(expected, 2, 1), mask)
    # a literal record (first bit 0): three values read one by one, alpha 200 counts as set
    literal = (
        f"{4:032b}" + f"{7:05b}" + "0010001101111111"
        + "0" + "00" + f"{2:03b}" + f"{1:08b}" + f"{2:08b}" + f"{3:08b}"  # 1, 2, 3
        + "1" + "00" + f"{0:03b}" + f"{200:08b}"  # a run of one 200
    )  # fmt: skip
    literal += "0" * (-len(literal) % 8)
    rle = [int(literal[i : i + 8], 2) for i in range(0, len(literal), 8)]
    np.testing.assert_array_equal(ls_rle_decode(rle, 1, 1), [[True]])
    with pytest.raises(PixelwiseError, match="holds 8 values, a 2x2 RGBA image 16"):
        ls_rle_decode(expected, 2, 2, "t.json")
    with pytest.raises(PixelwiseError, match="truncated"):
        ls_rle_decode(expected[:8], 2, 1, "t.json")


@pytest.mark.parametrize("seed", range(4))
def test_encodings_round_trip_random_masks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(20):
        h, w = rng.integers(1, 30, 2)
        mask = rng.random((h, w)) < rng.random()
        np.testing.assert_array_equal(coco_rle_decode(coco_rle_encode(mask)), mask)
        np.testing.assert_array_equal(ls_rle_decode(ls_rle_encode(mask), w, h), mask)
        found = cvat_rle_encode(mask)
        if found is not None:
            runs, (left, top, bw, bh) = found
            back = np.zeros_like(mask)
            back[top : top + bh, left : left + bw] = cvat_rle_decode(runs, bw, bh)
            np.testing.assert_array_equal(back, mask)
    big = np.ones((300, 300), bool)  # runs over 2**16 values are split
    big[0, 0] = False
    np.testing.assert_array_equal(ls_rle_decode(ls_rle_encode(big), 300, 300), big)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools on numpy 2
def test_coco_rle_equals_pycocotools() -> None:
    mask_api = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    for _ in range(50):
        h, w = rng.integers(1, 60, 2)
        mask = rng.random((h, w)) < rng.random()
        ref = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert coco_rle_encode(mask)["counts"] == ref["counts"].decode("ascii")


# ------------------------------------------------------------------------------ test datasets


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


_COLORS = [(0, 0, 0), (128, 64, 128), (220, 20, 60), (0, 0, 142)]


def _labels(rng: np.random.Generator, k: int, n: int = 4) -> np.ndarray:
    """Blocks of every class, noise, unlabelled pixels; image 2 fully unlabelled, image 3 lacks
    class 2."""
    lab = rng.integers(0, n, (H, W)).astype(np.uint8)
    lab[2:6, 3:9] = 1
    lab[0] = IGNORE_INDEX
    lab[rng.random((H, W)) < 0.1] = IGNORE_INDEX
    if k == 2:
        lab[:] = IGNORE_INDEX
    if k == 3:
        lab[lab == 2] = 0
    return lab


def _dataset(root: Path, encoding: str = "index", n_images: int = 5) -> tuple[Path, dict]:
    """Images 0, 1, 2 in ``train/images``, 0 and 4 in ``val/images`` (two share the file name
    ``0.png``), masks in ``encoding``. Returns the YAML and {image path relative to root: labels}."""
    rng = np.random.default_rng(7)
    truth = {}
    classes: list[dict[str, Any]] = [
        {"name": n, "color": list(c)}
        for n, c in zip(["bg", "road", "car", "sky"], _COLORS, strict=True)
    ]
    mask: dict[str, Any] = {"encoding": encoding}
    if encoding == "index":
        mask["ignore_index"] = 255
    elif encoding == "rgb":
        mask["ignore_color"] = [255, 255, 255]
    elif encoding == "value_map":
        for c, v in zip(classes, (0, 100, 1000, 40000), strict=True):  # 16-bit masks
            c["mask_value"] = v
        mask["ignore_index"] = 7
    for k in range(n_images):
        split = "train" if k < 3 else "val"
        lab = _labels(rng, k)
        name = "0.png" if k == 3 else f"{k}.png"
        truth[f"{split}/images/{name}"] = lab
        _png(root / split / "images" / name, rng.integers(0, 256, (H, W, 3), np.uint8))
        if encoding == "index":
            raw = lab
        elif encoding == "rgb":
            raw = np.asarray([*_COLORS, *[(255, 255, 255)] * 252], np.uint8)[lab]
        else:
            table = np.full(256, 7, np.uint16)
            table[:4] = [0, 100, 1000, 40000]
            raw = table[lab]
        _png(root / split / "masks" / name, raw)
    cfg = {
        "name": "tiny",
        "root": ".",
        "classes": classes,
        "mask": mask,
        "splits": {s: {"images": f"{s}/images", "masks": f"{s}/masks"} for s in ("train", "val")},
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, truth


def _read_back(folder: Path, spec) -> dict[str, np.ndarray]:  # noqa: ANN001
    from pixelwise.data import decode_mask, read_mask

    out = {}
    for f in sorted(folder.rglob("*.png")):
        raw = read_mask(f, as_rgb=spec.mask.codec.reads_rgb)
        labels, bad = decode_mask(raw, spec)
        assert not bad, (f, bad)
        out[f.relative_to(folder).as_posix()] = labels
    return out


# ---------------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("encoding", ["index", "rgb", "value_map"])
@pytest.mark.parametrize("to", FORMATS)
def test_export_then_import_reproduces_the_masks(tmp_path: Path, to: str, encoding: str) -> None:
    cfg, truth = _dataset(tmp_path / "ds", encoding)
    spec = load_dataset_spec(cfg)
    out = tmp_path / f"labels.{to}"
    report = export_labels(spec, out, to=to, workers=2)
    assert report.written and not report.problems, report.summary()
    assert report.images == 5 and report.class_images["car"] == 3  # image 2 empty, 3 lacks car
    assert detect_label_format(out) == to
    back = import_labels(out, spec, tmp_path / "back", workers=2)
    assert back.written and back.masks == 5, back.summary()
    masks = _read_back(tmp_path / "back", spec)
    # each mask lands at its own path relative to the dataset root, in the dataset's encoding
    assert sorted(masks) == sorted(k.replace("/images/", "/masks/") for k in truth)
    for rel, labels in truth.items():
        np.testing.assert_array_equal(masks[rel.replace("/images/", "/masks/")], labels)
    for rel in truth:  # written byte for byte as the source PNGs
        src = np.asarray(Image.open(tmp_path / "ds" / rel.replace("/images/", "/masks/")))
        got = np.asarray(Image.open(tmp_path / "back" / rel.replace("/images/", "/masks/")))
        np.testing.assert_array_equal(got, src)
    assert back.unlabelled_pixels == sum(int((t == IGNORE_INDEX).sum()) for t in truth.values())


def test_export_shapes_per_format(tmp_path: Path) -> None:
    cfg, truth = _dataset(tmp_path / "ds")
    spec = load_dataset_spec(cfg)
    export_labels(spec, tmp_path / "a.json", to="coco", splits=["val"])
    coco = json.loads((tmp_path / "a.json").read_text())
    # names: file names, but the two 0.png of the dataset are told apart by their paths
    assert [im["file_name"] for im in coco["images"]] == ["val/images/0.png", "4.png"]
    assert [(c["id"], c["name"], c["color"]) for c in coco["categories"]] == [
        (i + 1, n, list(_COLORS[i])) for i, n in enumerate(["bg", "road", "car", "sky"])
    ]
    lab = truth["val/images/0.png"]
    for a in coco["annotations"]:
        assert a["iscrowd"] == 0 and a["image_id"] in (1, 2)
        if a["image_id"] == 1:
            mask = lab == a["category_id"] - 1
            assert a["area"] == int(mask.sum())
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            assert a["bbox"] == [cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1]
    export_labels(spec, tmp_path / "a.xml", to="cvat", splits=["val"], skip=["bg"])
    text = (tmp_path / "a.xml").read_text()
    assert text.startswith("<?xml") and "<version>1.1</version>" in text
    assert "<color>#804080</color>" in text  # road's colour
    assert 'label="bg"' not in text and "<name>bg</name>" not in text  # skipped
    export_labels(spec, tmp_path / "a.ls.json", to="labelstudio", splits=["val"], image_prefix="")
    tasks = json.loads((tmp_path / "a.ls.json").read_text())
    assert tasks[0]["data"]["image"] == "val/images/0.png"
    r = tasks[0]["annotations"][0]["result"][0]
    assert r["type"] == "brushlabels" and r["value"]["format"] == "rle"
    assert (r["from_name"], r["to_name"], r["original_width"], r["original_height"]) == (
        "tag",
        "image",
        W,
        H,
    )


def test_skip_and_unlabelled_class(tmp_path: Path) -> None:
    cfg, truth = _dataset(tmp_path / "ds")
    spec = load_dataset_spec(cfg)
    export_labels(spec, tmp_path / "x.xml", to="cvat", skip=["bg"])
    import_labels(tmp_path / "x.xml", spec, tmp_path / "back", unlabelled="bg")
    masks = _read_back(tmp_path / "back", spec)
    for rel, lab in truth.items():  # bg and unlabelled pixels both come back as bg
        np.testing.assert_array_equal(
            masks[rel.replace("/images/", "/masks/")], np.where(lab == IGNORE_INDEX, 0, lab)
        )
    with pytest.raises(PixelwiseError, match="--skip 'grass': not a class"):
        export_labels(spec, tmp_path / "y.xml", to="cvat", skip=["grass"])
    with pytest.raises(PixelwiseError, match="--unlabelled 'grass': not a class"):
        import_labels(tmp_path / "x.xml", spec, tmp_path / "b2", unlabelled="grass")


def test_binary_masks_need_a_class_for_unlabelled_pixels(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    lab = np.zeros((H, W), np.uint8)
    lab[3:6, 2:8] = 1
    _png(root / "images/a.png", np.zeros((H, W, 3), np.uint8))
    _png(root / "masks/a.png", lab * 255)
    cfg = {
        "root": ".",
        "classes": [{"name": "back"}, {"name": "cell"}],
        "mask": {"encoding": "binary"},
        "splits": {"all": {"images": "images", "masks": "masks"}},
    }
    (root / "b.yaml").write_text(yaml.safe_dump(cfg))
    spec = load_dataset_spec(root / "b.yaml")
    export_labels(spec, tmp_path / "b.json", to="coco", skip=["back"])
    report = import_labels(tmp_path / "b.json", spec, tmp_path / "out")
    assert not report.written and not (tmp_path / "out").exists()
    (problem,) = report.problems
    assert "b.json [image 1]" in problem and "--unlabelled CLASS" in problem
    assert import_labels(tmp_path / "b.json", spec, tmp_path / "out", unlabelled="back").written
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out/masks/a.png")), lab * 255)


# -------------------------------------------------------------------------- other readers agree


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools on numpy 2
def test_pycocotools_reads_the_coco_export(tmp_path: Path) -> None:
    pytest.importorskip("pycocotools")
    from pycocotools import mask as mask_api
    from pycocotools.coco import COCO

    cfg, truth = _dataset(tmp_path / "ds")
    spec = load_dataset_spec(cfg)
    export_labels(spec, tmp_path / "c.json", to="coco", splits=["train"])
    coco = COCO(str(tmp_path / "c.json"))
    names = {im["id"]: im["file_name"] for im in coco.dataset["images"]}
    for ann in coco.dataset["annotations"]:
        lab = truth["train/images/" + Path(names[ann["image_id"]]).name]
        mask = lab == ann["category_id"] - 1
        np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), mask)
        assert mask_api.area(ann["segmentation"]) == ann["area"]
        np.testing.assert_array_equal(mask_api.toBbox(ann["segmentation"]), ann["bbox"])


def test_pixelwise_readers_read_the_exports(tmp_path: Path) -> None:
    cfg, truth = _dataset(tmp_path / "ds")
    spec = load_dataset_spec(cfg)
    export_labels(spec, tmp_path / "c.json", to="coco", splits=["val"])
    export_labels(spec, tmp_path / "c.xml", to="cvat", splits=["val"])
    for image_id, rel in ((1, "val/images/0.png"), (2, "val/images/4.png")):
        lab = truth[rel]
        # the COCO dataset reader paints 0 where nothing is: shift classes by one to tell them
        coco = render_coco(tmp_path / "c.json", image_id, {k + 1: k + 1 for k in range(4)})
        np.testing.assert_array_equal(coco, np.where(lab == IGNORE_INDEX, 0, lab + 1))
        cvat = render_cvat(tmp_path / "c.xml", image_id - 1, class_lookup(spec), IGNORE_INDEX)
        np.testing.assert_array_equal(cvat, lab)


def test_labelstudio_config_names_every_exported_class(tmp_path: Path) -> None:
    from xml.etree import ElementTree as ET

    cfg, _ = _dataset(tmp_path / "ds")
    spec = load_dataset_spec(cfg)
    view = ET.fromstring(labelstudio_config(export_classes(spec, ["bg"])))
    brush = view.find("BrushLabels")
    assert brush is not None and brush.get("name") == "tag" and brush.get("toName") == "image"
    assert [(lb.get("value"), lb.get("background")) for lb in brush] == [
        ("road", "#804080"),
        ("car", "#dc143c"),
        ("sky", "#00008e"),
    ]


# ---------------------------------------------------------------------------------- name matching


def test_images_match_by_path_file_name_and_upload_prefix(tmp_path: Path) -> None:
    cfg, truth = _dataset(tmp_path / "ds")
    spec = load_dataset_spec(cfg)
    export_labels(spec, tmp_path / "t.json", to="labelstudio", splits=["val"])
    tasks = json.loads((tmp_path / "t.json").read_text())
    assert tasks[1]["data"]["image"] == "/data/local-files/?d=val/images/4.png"
    tasks[1]["data"]["image"] = "/data/upload/3/1a2b3c4d-4.png"  # an upload of 4.png
    tasks[0]["data"]["image"] = "http://host/files/val%2Fimages/0.png"  # 0.png twice: by path
    tasks.append({"data": {"image": "/data/upload/3/deadbeef-9.png"}, "annotations": []})
    (tmp_path / "t.json").write_text(json.dumps(tasks))
    report = import_labels(tmp_path / "t.json", spec, tmp_path / "back")
    assert report.written and report.masks == 2  # the unannotated task is skipped
    masks = _read_back(tmp_path / "back", spec)
    np.testing.assert_array_equal(masks["val/masks/4.png"], truth["val/images/4.png"])
    np.testing.assert_array_equal(masks["val/masks/0.png"], truth["val/images/0.png"])
    tasks[0]["data"]["image"] = "0.png"  # ambiguous: train/images/0.png and val/images/0.png
    tasks[1]["data"]["image"] = "nope.png"
    (tmp_path / "t.json").write_text(json.dumps(tasks))
    report = import_labels(tmp_path / "t.json", spec, tmp_path / "back2")
    assert not report.written and not (tmp_path / "back2").exists()
    assert any("'0.png' matches several dataset images" in p for p in report.problems)
    assert any(
        "[task 1]: image 'nope.png' is not an image of the dataset" in p for p in report.problems
    )
    # against one split only, 0.png is one image
    tasks[1]["data"]["image"] = "4.png"
    (tmp_path / "t.json").write_text(json.dumps(tasks))
    assert import_labels(tmp_path / "t.json", spec, tmp_path / "back3", splits=["val"]).written


# ------------------------------------------------------------------------------ untrusted files


def _cvat(tmp_path: Path, body: str, name: str = "a.xml") -> Path:
    path = tmp_path / name
    path.write_text(
        f'<?xml version="1.0"?>\n<annotations><version>1.1</version>{body}</annotations>'
    )
    return path


def _task(*results: dict) -> dict:
    return {"data": {"image": "4.png"}, "annotations": [{"result": list(results)}]}


def test_malformed_files_give_one_line_errors(tmp_path: Path) -> None:
    cfg, _ = _dataset(tmp_path / "ds")
    spec = load_dataset_spec(cfg)
    out = tmp_path / "out"
    cases: list[tuple[str, str, str]] = [
        ("a.json", "{not json", "a.json: not a readable JSON file"),
        ("b.json", '{"images": 3}', "b.json: a COCO JSON needs 'images' and 'categories' lists"),
        (
            "c.json",
            json.dumps(
                {
                    "images": [{"id": 1, "file_name": "0.png", "width": 2**15, "height": 2**14}],
                    "categories": [],
                }
            ),  # fmt: skip
            f"c.json [image 1]: image size 32768x16384 is over the {MAX_IMAGE_PIXELS:,}-pixel",
        ),
        (
            "d.json",
            json.dumps(
                {
                    "images": [{"id": 1, "file_name": "4.png", "width": W, "height": H}],
                    "categories": [{"id": 1, "name": "grass"}],
                    "annotations": [
                        {
                            "id": 5,
                            "image_id": 1,
                            "category_id": 1,
                            "segmentation": [[0, 0, 3, 0, 3, 3]],
                        }
                    ],
                }
            ),  # fmt: skip
            "d.json [annotation 5]: label 'grass' is not a class of the dataset ('bg', 'road'",
        ),
        (
            "e.json",
            json.dumps(
                {
                    "images": [{"id": 1, "file_name": "4.png", "width": W, "height": H}],
                    "categories": [{"id": 1, "name": "car"}],
                    "annotations": [
                        {
                            "id": 5,
                            "image_id": 1,
                            "category_id": 1,
                            "segmentation": {"size": [W, H], "counts": "0"},
                        }
                    ],
                }
            ),  # fmt: skip
            f"e.json [annotation 5]: RLE size [{W}, {H}] is not the image's [{H}, {W}]",
        ),
        ("f.xml", "<annotations><image", "f.xml: not well-formed XML"),
        ("g.xml", "<task/>", "g.xml: not a CVAT for images XML (root <task>)"),
        (
            "h.json",
            json.dumps(
                [
                    _task(
                        {
                            "type": "brushlabels",
                            "original_width": W,
                            "original_height": H,
                            "value": {
                                "format": "rle",
                                "brushlabels": ["car"],
                                "rle": ls_rle_encode(np.zeros((2, 2), bool)),
                            },
                        }
                    )
                ]
            ),
            f"h.json [task 0] result 0: brush rle holds 16 values, a {W}x{H} RGBA image",
        ),  # fmt: skip
        (
            "i.json",
            json.dumps([_task({"type": "polygonlabels", "value": {"points": []}})]),
            "i.json [task 0] result 0: polygonlabels results are not read",
        ),
    ]
    for name, text, message in cases:
        (tmp_path / name).write_text(text)
        fmt = "labelstudio" if name in ("h.json", "i.json") else None
        with pytest.raises(PixelwiseError) as info:
            import_labels(tmp_path / name, spec, out, fmt=fmt)
        msg = str(info.value)
        assert "\n" not in msg and message in msg, (name, msg)
    assert not out.exists()
    with pytest.raises(PixelwiseError, match="z.txt: not a COCO JSON, CVAT XML or Label Studio"):
        (tmp_path / "z.txt").write_text("hello")
        import_labels(tmp_path / "z.txt", spec, out)


def test_xml_with_a_dtd_is_refused(tmp_path: Path) -> None:
    cfg, _ = _dataset(tmp_path / "ds")
    spec = load_dataset_spec(cfg)
    bomb = (
        '<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>\n'
        '<annotations><image id="0" name="&lol2;" width="2" height="2"/></annotations>'
    )
    (tmp_path / "bomb.xml").write_text(bomb)
    external = (
        '<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
        "<annotations>&x;</annotations>"
    )
    (tmp_path / "ext.xml").write_text(external)
    for name in ("bomb.xml", "ext.xml"):
        with pytest.raises(PixelwiseError, match=f"{name}: XML with a document type declaration"):
            import_labels(tmp_path / name, spec, tmp_path / "out")


def test_bad_runs_stop_the_import_and_write_nothing(tmp_path: Path) -> None:
    cfg, _ = _dataset(tmp_path / "ds")
    spec = load_dataset_spec(cfg)
    image = f'<image id="0" name="4.png" width="{W}" height="{H}">{{}}</image>'
    good = '<mask label="car" rle="1, 2, 1" left="0" top="0" width="2" height="2"/>'
    bad = '<mask label="road" rle="1, 2" left="3" top="3" width="2" height="2"/>'
    path = _cvat(tmp_path, image.format(good + bad))
    report = import_labels(path, spec, tmp_path / "out", splits=["val"])
    assert not report.written and not (tmp_path / "out").exists()
    (problem,) = report.problems
    assert problem == f"{path} [image 0] <mask> 1: rle covers 3 pixels, its box 2x2"
    outside = '<mask label="road" rle="4" left="12" top="0" width="2" height="2"/>'
    with pytest.raises(
        PixelwiseError, match=r"\[image 0\] <mask> 0: mask box 2x2 at \(12, 0\) is outside"
    ):
        import_labels(_cvat(tmp_path, image.format(outside)), spec, tmp_path / "out")
    track = '<track id="0" label="car"/>'
    with pytest.raises(PixelwiseError, match="<track> elements \\(CVAT for video\\)"):
        import_labels(_cvat(tmp_path, track), spec, tmp_path / "out")
    wrong_size = f'<image id="0" name="4.png" width="{W + 1}" height="{H}"/>'
    report = import_labels(_cvat(tmp_path, wrong_size), spec, tmp_path / "out", splits=["val"])
    assert report.problems == [
        f"{tmp_path / 'a.xml'} [image 0]: size {W + 1}x{H}, the dataset image "
        f"{tmp_path / 'ds/val/images/4.png'} {W}x{H}"
    ]
    twice = f'<image id="0" name="4.png" width="{W}" height="{H}"/>' * 2
    report = import_labels(_cvat(tmp_path, twice), spec, tmp_path / "out", splits=["val"])
    assert "labels" in report.problems[0] and "again" in report.problems[0]


def test_cvat_polygons_boxes_and_z_order_are_painted(tmp_path: Path) -> None:
    cfg, _ = _dataset(tmp_path / "ds")
    spec = load_dataset_spec(cfg)
    shapes = (
        '<box label="road" xtl="0" ytl="0" xbr="6" ybr="4" z_order="1"/>'
        '<polygon label="car" points="0,0;13,0;13,9;0,9" z_order="0"/>'
        '<polyline label="sky" points="0,0;5,5"/>'
        '<mask label="sky" rle="0, 1" left="12" top="8" width="1" height="1" z_order="2"/>'
    )
    path = _cvat(tmp_path, f'<image id="0" name="4.png" width="{W}" height="{H}">{shapes}</image>')
    assert import_labels(path, spec, tmp_path / "out", splits=["val"]).written
    (got,) = _read_back(tmp_path / "out", spec).values()
    expected = np.full((H, W), 2, np.uint8)  # car everywhere, road box on top, one sky pixel
    expected[:4, :6] = 1
    expected[8, 12] = 3
    np.testing.assert_array_equal(got, expected)


def test_outputs_never_replace_inputs(tmp_path: Path) -> None:
    cfg, truth = _dataset(tmp_path / "ds")
    spec = load_dataset_spec(cfg)
    out = tmp_path / "x.json"
    export_labels(spec, out, to="coco")
    with pytest.raises(PixelwiseError, match="x.json: exists; give --overwrite"):
        export_labels(spec, out, to="coco")
    assert export_labels(spec, out, to="coco", overwrite=True).written
    mask = tmp_path / "ds/val/masks/4.png"
    before = mask.read_bytes()
    with pytest.raises(PixelwiseError, match="is a file of the dataset"):
        export_labels(spec, mask, to="coco", overwrite=True)
    with pytest.raises(PixelwiseError, match="is a folder"):
        export_labels(spec, tmp_path / "ds", to="coco")
    for dest in (tmp_path / "ds", tmp_path / "ds/val/masks", tmp_path):
        with pytest.raises(PixelwiseError, match="an input; write the masks elsewhere"):
            import_labels(out, spec, dest, overwrite=True)
    assert mask.read_bytes() == before
    busy = tmp_path / "busy"
    (busy / "keep").mkdir(parents=True)
    with pytest.raises(PixelwiseError, match="busy: exists and is not empty; give --overwrite"):
        import_labels(out, spec, busy)
    assert import_labels(out, spec, busy, overwrite=True).written
    assert not (busy / "keep").exists() and (busy / "val/masks/4.png").is_file()


# -------------------------------------------------------------------------------------------- CLI


_cli = run_cli


def test_cli_export_and_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, truth = _dataset(tmp_path / "ds")
    xml = tmp_path / "v.xml"
    code, out, err = _cli(
        capsys, "data", "export-labels", str(cfg), "--to", "cvat", "--out", str(xml),
        "--split", "val", "--skip", "bg",
    )  # fmt: skip
    assert code == 0, err
    assert f"wrote 2 images, 5 class regions (CVAT for images 1.1 XML) to {xml}" in out
    code, out, err = _cli(
        capsys, "data", "import-labels", str(xml), "--data", str(cfg), "--out",
        str(tmp_path / "m"), "--from", "cvat", "--unlabelled", "bg",
    )  # fmt: skip
    assert code == 0, err
    assert f"wrote 2 masks from {xml} (CVAT for images 1.1 XML) into {tmp_path / 'm'}" in out
    assert "3 of the dataset's 5 images have no labels in the file" in out
    code, out, err = _cli(
        capsys, "data", "export-labels", str(cfg), "--to", "labelstudio", "--out",
        str(tmp_path / "t.json"),
    )  # fmt: skip
    assert code == 0 and '<BrushLabels name="tag" toName="image">' in out
    code, out, err = _cli(
        capsys, "data", "import-labels", str(xml), "--data", str(cfg), "--out", str(tmp_path / "m")
    )
    assert code == 2 and err.strip().splitlines() == [
        f"error: {tmp_path / 'm'}: exists and is not empty; give --overwrite to replace it"
    ]
    code, out, err = _cli(
        capsys, "data", "export-labels", str(cfg), "--to", "voc", "--out", str(tmp_path / "v")
    )
    assert code == 2 and "unknown label format 'voc'; expected coco, cvat, labelstudio" in err
    (tmp_path / "bad.xml").write_text(
        f'<annotations><image id="0" name="nope.png" width="{W}" height="{H}"/></annotations>'
    )
    code, out, err = _cli(
        capsys, "data", "import-labels", str(tmp_path / "bad.xml"), "--data", str(cfg),
        "--out", str(tmp_path / "n"),
    )  # fmt: skip
    assert code == 1 and "problem: " in err and "'nope.png' is not an image of the dataset" in err
    assert not (tmp_path / "n").exists() and "Traceback" not in out + err
