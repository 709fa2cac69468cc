"""Dataset formats: each test writes a tiny dataset in that format itself, reads it through the
dataset (``load_pair`` / ``SegmentationDataset``), and checks the masks pixel for pixel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pixelwise.data import (
    IGNORE_INDEX,
    SegmentationDataset,
    build_eval_transform,
    check_split,
    load_dataset_spec,
    load_pair,
    resolve_split,
)
from pixelwise.data.formats import detect_format, get_format, list_formats
from pixelwise.data.formats._common import decode_coco_rle, fill_polygon
from pixelwise.data.formats.ade20k import ADE20K_CLASSES
from pixelwise.data.formats.voc import voc_colormap
from pixelwise.errors import PixelwiseError

H, W = 6, 8


def _image(
    path: Path, seed: int = 0, size: tuple[int, int] = (H, W), fmt: str = "PNG"
) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)
    return arr


def _gray_png(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8), mode="L").save(path)


def _yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _labels(spec, split: str = "train") -> list[np.ndarray]:
    samples, problems = resolve_split(spec, split)
    assert not problems, problems
    return [load_pair(s, spec)[1] for s in samples]


def test_registry_lists_every_family() -> None:
    assert set(list_formats()) >= {
        "folders", "camvid", "voc", "cityscapes", "ade20k", "coco", "labelme", "cvat", "nifti",
        "geotiff",
    }  # fmt: skip
    with pytest.raises(PixelwiseError, match="unknown dataset format 'nope'"):
        get_format("nope")
    assert len(ADE20K_CLASSES) == 150 and len(set(ADE20K_CLASSES)) == 150


def test_unknown_format_and_option_are_one_line_errors(tmp_path: Path) -> None:
    cfg = _yaml(tmp_path / "d.yaml", {"format": "pascal", "root": "."})
    with pytest.raises(PixelwiseError, match=r"d\.yaml: unknown dataset format 'pascal'"):
        load_dataset_spec(cfg)
    (tmp_path / "JPEGImages").mkdir()
    cfg = _yaml(tmp_path / "d.yaml", {"format": "voc", "root": ".", "options": {"axis": 1}})
    with pytest.raises(PixelwiseError, match=r"d\.yaml: format 'voc' has no option 'axis'"):
        load_dataset_spec(cfg)
    cfg = _yaml(
        tmp_path / "d.yaml", {"root": ".", "options": {"axis": 1}, "classes": [], "splits": {}}
    )
    with pytest.raises(PixelwiseError, match="format 'folders' has no option 'axis'"):
        load_dataset_spec(cfg)


# ------------------------------------------------------------------------------------------- VOC


def _voc(root: Path) -> np.ndarray:
    _image(root / "JPEGImages/2007_000032.jpg", fmt="JPEG")
    _image(root / "JPEGImages/2007_000033.jpg", seed=1, fmt="JPEG")
    idx = np.zeros((H, W), np.uint8)
    idx[1:4, 2:6] = 15  # person
    idx[1:4, 1] = 255  # boundary
    idx[5, :] = 20  # tvmonitor
    mask = Image.fromarray(idx, mode="P")
    pal = np.array(voc_colormap(256), np.uint8)
    pal[255] = (224, 224, 192)
    mask.putpalette(pal.reshape(-1).tolist())
    (root / "SegmentationClass").mkdir(parents=True)
    mask.save(root / "SegmentationClass/2007_000032.png")
    mask.save(root / "SegmentationClass/2007_000033.png")
    (root / "ImageSets/Segmentation").mkdir(parents=True)
    (root / "ImageSets/Segmentation/train.txt").write_text("2007_000032\n")
    (root / "ImageSets/Segmentation/val.txt").write_text("2007_000033\n")
    return idx


def test_voc_palette_indices_and_void(tmp_path: Path) -> None:
    idx = _voc(tmp_path / "VOC2012")
    spec = load_dataset_spec(_yaml(tmp_path / "voc.yaml", {"format": "voc", "root": "VOC2012"}))
    assert spec.num_classes == 21 and spec.class_names[15] == "person"
    assert spec.colors[15] == (192, 128, 128)
    assert set(spec.splits) == {"train", "val"}
    (labels,) = _labels(spec, "train")
    np.testing.assert_array_equal(labels, idx)  # 255 stays the ignore label
    # detected without a YAML
    detected = load_dataset_spec(tmp_path / "VOC2012")
    assert detected.format == "voc"
    (labels,) = _labels(detected, "val")
    np.testing.assert_array_equal(labels, idx)


# ------------------------------------------------------------------------------------ Cityscapes


def test_cityscapes_label_ids_to_train_ids(tmp_path: Path) -> None:
    root = tmp_path / "cityscapes"
    ids = np.array(
        [
            [7, 8, 11, 12, 13, 17, 19, 20],
            [21, 22, 23, 24, 25, 26, 27, 28],
            [31, 32, 33, 0, 1, 4, 9, 255],
        ]
        * 2,
        np.uint8,
    )
    expected = np.array(
        [[0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15], [16, 17, 18] + [255] * 5] * 2,
        np.uint8,
    )
    for split, city in (("train", "aachen"), ("val", "lindau")):
        stem = f"{city}_000000_000019"
        _image(root / f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png")
        _gray_png(root / f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png", ids)
        # the other gtFine files of a real release must be ignored
        _gray_png(root / f"gtFine/{split}/{city}/{stem}_gtFine_instanceIds.png", ids)
    spec = load_dataset_spec(
        _yaml(tmp_path / "cs.yaml", {"format": "cityscapes", "root": "cityscapes"})
    )
    assert spec.num_classes == 19 and spec.class_names[18] == "bicycle"
    for split in ("train", "val"):
        (labels,) = _labels(spec, split)
        np.testing.assert_array_equal(labels, expected)
    assert load_dataset_spec(root).format == "cityscapes"
    # a value outside the label table is an error naming the file
    bad = ids.copy()
    bad[0, 0] = 40
    _gray_png(root / "gtFine/val/lindau/lindau_000000_000019_gtFine_labelIds.png", bad)
    report = check_split(spec, "val")
    assert any("mask value 40 is not a declared class" in p for p in report.problems)


# --------------------------------------------------------------------------------------- ADE20K


def test_ade20k_shifts_values_and_ignores_zero(tmp_path: Path) -> None:
    root = tmp_path / "ADEChallengeData2016"
    raw = np.arange(H * W, dtype=np.int64).reshape(H, W) * 3 % 151
    for sub in ("training", "validation"):
        _image(root / f"images/{sub}/ADE_{sub}_00000001.jpg", fmt="JPEG")
        _gray_png(root / f"annotations/{sub}/ADE_{sub}_00000001.png", raw)
    spec = load_dataset_spec(root)
    assert spec.format == "ade20k" and spec.num_classes == 150
    expected = np.where(raw == 0, IGNORE_INDEX, raw - 1).astype(np.uint8)
    for split in ("train", "val"):
        (labels,) = _labels(spec, split)
        np.testing.assert_array_equal(labels, expected)
    assert spec.class_names[0] == "wall" and spec.class_names[149] == "flag"


# ----------------------------------------------------------------------------------------- COCO

# pycocotools.mask.encode of _RLE_MASK below (a fixed value, so the test needs no pycocotools)
_RLE_STRING = "01c02@000003N"
_RLE_MASK = np.zeros((H, W), bool)
_RLE_MASK[2:5, 3:7] = True
_RLE_MASK[0, 0] = True
_RLE_MASK[5, 7] = True


def test_coco_rle_string_decodes_exactly() -> None:
    np.testing.assert_array_equal(
        decode_coco_rle({"size": [H, W], "counts": _RLE_STRING}, "x"), _RLE_MASK
    )
    with pytest.raises(PixelwiseError, match="RLE runs cover"):
        decode_coco_rle({"size": [H, W + 1], "counts": _RLE_STRING}, "ann.json")


def _coco(root: Path) -> np.ndarray:
    _image(root / "train2017/000000000001.jpg", fmt="JPEG")
    _image(root / "train2017/000000000002.jpg", seed=1, fmt="JPEG")
    counts = [0, 2, 1, 3]  # column-major runs: column 0 rows 0-1 on, row 2 off, rows 3-5 on
    counts.append(H * W - sum(counts))
    data = {
        "images": [
            {"id": 1, "file_name": "000000000001.jpg", "height": H, "width": W},
            {"id": 2, "file_name": "000000000002.jpg", "height": H, "width": W},
        ],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
        "annotations": [
            # a big dog rectangle, pixels rows 1-3 x cols 1-4 (centres inside [1, 5] x [1, 4])
            {"id": 10, "image_id": 1, "category_id": 7, "iscrowd": 0, "area": 12,
             "segmentation": [[1, 1, 5, 1, 5, 4, 1, 4]]},
            # a smaller cat on top of it (painted later: smaller area)
            {"id": 11, "image_id": 1, "category_id": 3, "iscrowd": 0, "area": 2,
             "segmentation": [[3, 2, 5, 2, 5, 3, 3, 3]]},
            {"id": 12, "image_id": 1, "category_id": 3, "iscrowd": 1, "area": 5,
             "segmentation": {"size": [H, W], "counts": counts}},
            {"id": 13, "image_id": 2, "category_id": 7, "iscrowd": 0, "area": 14,
             "segmentation": {"size": [H, W], "counts": _RLE_STRING}},
        ],
    }  # fmt: skip
    (root / "annotations").mkdir(parents=True)
    (root / "annotations/instances_train2017.json").write_text(json.dumps(data))
    first = np.zeros((H, W), np.uint8)
    first[1:4, 1:5] = 2  # dog: categories sorted by id -> background 0, cat 1, dog 2
    first[2, 3:5] = 1
    first[[0, 1, 3, 4, 5], 0] = 1  # crowd RLE (cat)
    return first


def test_coco_polygons_and_rle(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    first = _coco(root)
    spec = load_dataset_spec(root)
    assert spec.format == "coco" and spec.class_names == ["background", "cat", "dog"]
    assert set(spec.splits) == {"train2017"}
    one, two = _labels(spec, "train2017")
    np.testing.assert_array_equal(one, first)
    np.testing.assert_array_equal(two, _RLE_MASK.astype(np.uint8) * 2)
    # crowd regions unlabelled on request; through the torch dataset
    cfg = {"format": "coco", "root": "coco", "options": {"crowd": "ignore"}}
    spec = load_dataset_spec(_yaml(tmp_path / "c.yaml", cfg))
    ds = SegmentationDataset(
        spec, "train2017", build_eval_transform(mean=(0.5,) * 3, std=(0.5,) * 3)
    )
    expected = first.copy()
    expected[[0, 1, 3, 4, 5], 0] = IGNORE_INDEX
    np.testing.assert_array_equal(ds[0]["mask"].numpy(), expected)


def test_coco_errors_name_the_file(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    _coco(root)
    ann = root / "annotations/instances_train2017.json"
    data = json.loads(ann.read_text())
    data["annotations"][0]["category_id"] = 99
    ann.write_text(json.dumps(data))
    spec = load_dataset_spec(root)
    report = check_split(spec, "train2017")
    assert any(str(ann) in p and "unknown category 99" in p for p in report.problems)
    ann.write_text("{not json")
    with pytest.raises(PixelwiseError, match="instances_train2017.json: not a readable COCO JSON"):
        load_dataset_spec(root)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools on numpy 2
def test_polygon_renderer_agrees_with_pycocotools_off_the_edges() -> None:
    mask_api = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    for _ in range(20):
        centre = rng.uniform(20, 40, 2)
        angles = np.sort(rng.uniform(0, 2 * np.pi, 7))
        radii = rng.uniform(5, 18, 7)
        pts = centre + np.stack([np.cos(angles), np.sin(angles)], 1) * radii[:, None]
        ref = mask_api.decode(mask_api.frPyObjects([pts.ravel().tolist()], 60, 60))[..., 0]
        ours = np.zeros((60, 60), np.uint8)
        fill_polygon(ours, pts, 1)
        perimeter = np.linalg.norm(np.diff(np.vstack([pts, pts[:1]]), axis=0), axis=1).sum()
        assert (ours != ref).sum() <= 0.25 * perimeter  # only pixels whose centre is near an edge
    # RLE: exact
    for _ in range(20):
        h, w = rng.integers(1, 50, 2)
        m = rng.random((h, w)) < rng.random()
        rle = mask_api.encode(np.asfortranarray(m.astype(np.uint8)))
        got = decode_coco_rle({"size": rle["size"], "counts": rle["counts"].decode()}, "x")
        np.testing.assert_array_equal(got, m)


# -------------------------------------------------------------------------------------- LabelMe


def test_labelme_shapes(tmp_path: Path) -> None:
    root = tmp_path / "lm"
    _image(root / "a.png")
    _image(root / "b.png", seed=1)
    shapes = [
        {"label": "road", "points": [[0, 3], [8, 3], [8, 6], [0, 6]], "shape_type": "polygon"},
        {"label": "car", "points": [[5, 0], [7, 2]], "shape_type": "rectangle"},
        {
            "label": "__ignore__",
            "points": [[0, 0], [2, 0], [2, 1], [0, 1]],
            "shape_type": "polygon",
        },
        {"label": "car", "points": [[1, 1], [2, 2]], "shape_type": "line"},
    ]
    for stem in ("a", "b"):
        doc = {"imagePath": f"{stem}.png", "imageHeight": H, "imageWidth": W, "shapes": shapes}
        (root / f"{stem}.json").write_text(json.dumps(doc))
    spec = load_dataset_spec(root)
    assert spec.format == "labelme" and spec.class_names == ["background", "car", "road"]
    expected = np.zeros((H, W), np.uint8)
    expected[3:6, :] = 2
    expected[0:2, 5:7] = 1
    expected[0, 0:2] = IGNORE_INDEX
    for labels in _labels(spec, "all"):
        np.testing.assert_array_equal(labels, expected)
    # a label that is not a class: one line naming the file and the label
    cfg = {"format": "labelme", "root": "lm", "classes": [{"name": "background"}, {"name": "road"}]}
    spec = load_dataset_spec(_yaml(tmp_path / "lm.yaml", cfg))
    with pytest.raises(PixelwiseError, match=r"a\.json shape 1: label 'car' is not a class"):
        load_pair(resolve_split(spec, "all")[0][0], spec)


# ----------------------------------------------------------------------------------------- CVAT


def test_cvat_polygons_boxes_masks_by_z_order(tmp_path: Path) -> None:
    root = tmp_path / "cvat"
    _image(root / "images/frame_0.png")
    xml = f"""<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta><task><labels>
    <label><name>road</name></label><label><name>car</name></label><label><name>person</name></label>
  </labels></task></meta>
  <image id="0" name="frame_0.png" width="{W}" height="{H}">
    <box label="car" xtl="4" ytl="0" xbr="8" ybr="3" z_order="1" occluded="0"/>
    <polygon label="road" points="0,2;8,2;8,6;0,6" z_order="0" occluded="0"/>
    <mask label="person" rle="1, 2, 1, 2" left="0" top="0" width="3" height="2" z_order="2"/>
  </image>
</annotations>"""
    (root / "annotations.xml").write_text(xml)
    spec = load_dataset_spec(root)
    assert spec.format == "cvat" and spec.class_names == ["background", "road", "car", "person"]
    expected = np.zeros((H, W), np.uint8)
    expected[2:6, :] = 1
    expected[0:3, 4:8] = 2
    # mask runs, row-major in its 3x2 box: off 1, on 2, off 1, on 2
    expected[0, 1:3] = 3
    expected[1, 1:3] = 3
    (labels,) = _labels(spec, "all")
    np.testing.assert_array_equal(labels, expected)


# ---------------------------------------------------------------------------------------- NIfTI


def test_nifti_slices_along_an_axis(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    root = tmp_path / "Task09"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    vol = rng.normal(0, 100, (5, 6, 4)).astype(np.float32)
    lab = rng.integers(0, 3, (5, 6, 4)).astype(np.uint8)
    for case in ("spleen_1", "spleen_2"):
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(root / f"imagesTr/{case}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, np.eye(4)), str(root / f"labelsTr/{case}.nii.gz"))
    (root / "dataset.json").write_text(
        json.dumps({"labels": {"0": "background", "1": "spleen", "2": "vessel"}})
    )
    spec = load_dataset_spec(root)
    assert spec.format == "nifti" and spec.class_names == ["background", "spleen", "vessel"]
    samples, problems = resolve_split(spec, "all")
    assert not problems and len(samples) == 2 * 4  # 4 slices along axis 2
    for s in samples:
        image, labels = load_pair(s, spec)
        np.testing.assert_array_equal(labels, lab[:, :, s.index])
        lo, hi = vol.min(), vol.max()
        want = np.round((vol[:, :, s.index].astype(np.float64) - lo) * 255 / (hi - lo))
        np.testing.assert_array_equal(image[..., 0], want.astype(np.uint8))
    cfg = {"format": "nifti", "root": "Task09", "options": {"axis": 0, "window": [-100, 100]}}
    spec0 = load_dataset_spec(_yaml(tmp_path / "n.yaml", cfg))
    samples, _ = resolve_split(spec0, "all")
    assert len(samples) == 2 * 5
    image, labels = load_pair(samples[3], spec0)
    np.testing.assert_array_equal(labels, lab[3])
    want = np.round((vol[3].astype(np.float64) + 100) * 255 / 200).clip(0, 255)
    np.testing.assert_array_equal(image[..., 0], want.astype(np.uint8))
    # splits are by case: a case's slices never straddle train and val
    volumes = {}
    for split in spec.splits:
        images = [s.image for s in resolve_split(spec, split)[0]]
        assert all(images.count(v) == 4 for v in images)  # every slice of a case, or none
        volumes[split] = set(images)
    if "train" in volumes:
        assert not volumes["train"] & volumes["val"]


# -------------------------------------------------------------------------------------- GeoTIFF


def test_geotiff_tiles(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    root = tmp_path / "tiles"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    labels_in = []
    for k in range(3):
        img = rng.integers(0, 65535, (H, W, 3), dtype=np.uint16)
        tifffile.imwrite(root / f"images/tile_{k}.tif", img, photometric="rgb", tile=None)
        lab = rng.integers(0, 4, (H, W), dtype=np.uint8)
        lab[0, 0] = 255
        tifffile.imwrite(root / f"masks/tile_{k}.tif", lab, compression="deflate")
        labels_in.append(lab)
    spec = load_dataset_spec(root)
    assert spec.format == "geotiff" and spec.num_classes == 4 and spec.mask.ignore_index == 255
    samples, problems = resolve_split(spec, "all")
    assert not problems
    for s, lab in zip(samples, labels_in, strict=True):
        image, labels = load_pair(s, spec)
        np.testing.assert_array_equal(labels, lab)
        assert image.dtype == np.uint8 and image.shape == (H, W, 3)
    assert not check_split(spec, "all").problems


def test_camvid_layout_is_detected(tmp_path: Path) -> None:
    root = tmp_path / "camvid"
    lab = np.arange(H * W).reshape(H, W) % 12
    for split in ("train", "val", "test"):
        _image(root / f"{split}/0001TP_0.png")
        _gray_png(root / f"{split}annot/0001TP_0.png", lab)
        (root / f"{split}.txt").write_text(f"{split}/0001TP_0.png {split}annot/0001TP_0.png\n")
    spec = load_dataset_spec(root)
    assert spec.format == "camvid" and spec.num_classes == 11
    assert set(spec.splits) == {"train", "val", "test", "trainval"}
    (labels,) = _labels(spec, "test")
    np.testing.assert_array_equal(labels, np.where(lab == 11, 255, lab))
    assert detect_format(tmp_path) is None


def test_detection_by_file_head(tmp_path: Path) -> None:
    # COCO: the first annotations/*.json without LabelMe's "shapes"; LabelMe: with them; CVAT: the
    # head of annotations.xml. An unreadable (non-UTF-8) file is no format, not an error.
    coco = tmp_path / "coco"
    (coco / "annotations").mkdir(parents=True)
    (coco / "annotations" / "a.json").write_text('{"images": [], "annotations": []}')
    assert get_format("coco").detect(coco)
    labelme = tmp_path / "labelme"
    labelme.mkdir()
    (labelme / "x.json").write_text('{"shapes": []}')
    assert get_format("labelme").detect(labelme) and not get_format("coco").detect(labelme)
    (coco / "annotations" / "a.json").write_text('{"shapes": []}')
    assert not get_format("coco").detect(coco)
    cvat = tmp_path / "cvat"
    cvat.mkdir()
    (cvat / "annotations.xml").write_text('<?xml version="1.0"?>\n<annotations></annotations>')
    assert get_format("cvat").detect(cvat)
    for path in (coco / "annotations" / "a.json", labelme / "x.json", cvat / "annotations.xml"):
        path.write_bytes(b"\xff\xfe\x00 not utf-8")
    assert not any(get_format(n).detect(r) for n, r in [("coco", coco), ("labelme", labelme)])
    assert not get_format("cvat").detect(cvat)
