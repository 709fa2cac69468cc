"""Mask encodings as objects: every registered encoding round-trips ``encode`` → ``decode`` (in memory
and through a PNG file), describes itself as ``data inspect`` prints it, and the registry is the one
lookup (an unknown name is the same one-line error as ever; a new encoding is one registered class)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from pixelwise.data import (
    IGNORE_INDEX,
    ClassInfo,
    DatasetSpec,
    MaskEncoding,
    decode_mask,
    encode_mask,
    get_encoding,
    list_encodings,
    load_dataset_spec,
    read_mask,
    register_encoding,
)
from pixelwise.data import encodings as encodings_module
from pixelwise.data.inspect import inspect_dataset, report_text
from pixelwise.errors import PixelwiseError

H, W = 6, 9
_COLORS = [(0, 0, 0), (200, 30, 30), (30, 200, 30), (30, 30, 200), (250, 250, 0)]
_VALUES = [0, 40, 80, 160, 255]  # value_map's raw values; 255 is a class here, not unlabelled


def _spec(root: Path, encoding: str, **mask: object) -> DatasetSpec:
    """A spec in ``encoding`` whose classes carry a colour and a mask value: five classes, or two
    where the encoding takes no more (binary)."""
    mask = {"encoding": encoding, **mask}
    for n in (5, 2):
        classes = [
            {"name": f"c{i}", "color": _COLORS[i], "mask_value": _VALUES[i]} for i in range(n)
        ]
        try:
            return DatasetSpec(
                name="enc",
                root=root,
                classes=classes,
                mask=mask,
                splits={"all": {"images": "images", "masks": "masks"}},
                source=str(root),
            )
        except ValidationError:
            continue
    raise AssertionError(f"no class count suits encoding {encoding!r}")


def _ignore_settings(encoding: str) -> dict[str, object]:
    """Mask settings that give unlabelled pixels a raw value, for the encodings that have one."""
    return {"ignore_index": 200, "ignore_color": (9, 9, 9)} if encoding != "binary" else {}


def _labels(n: int, *, unlabelled: bool, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n, (H, W)).astype(np.uint8)
    labels[0, :n] = np.arange(n)  # every class present
    if unlabelled:
        labels[1:3, 2:5] = IGNORE_INDEX
    return labels


# --------------------------------------------------------------------------------------------------
# round trips over the registry


@pytest.mark.parametrize("name", list_encodings())
def test_encode_then_decode_gives_the_labels_back(tmp_path: Path, name: str) -> None:
    spec = _spec(tmp_path, name, **_ignore_settings(name))
    codec = get_encoding(name)
    assert spec.mask.codec is codec
    writes_unlabelled = name != "binary"
    labels = _labels(spec.num_classes, unlabelled=writes_unlabelled)
    raw = codec.encode(labels, spec)
    assert raw.shape[:2] == labels.shape and raw.dtype == np.uint8
    back, bad = codec.decode(raw, spec)
    np.testing.assert_array_equal(back, labels)
    assert bad == {} and back.dtype == np.uint8
    np.testing.assert_array_equal(encode_mask(labels, spec), raw)
    np.testing.assert_array_equal(decode_mask(raw, spec)[0], labels)


@pytest.mark.parametrize("name", list_encodings())
def test_encoded_mask_reads_back_through_a_png_file(synth, name: str) -> None:
    spec = _spec(synth.root, name, **_ignore_settings(name))
    codec = spec.mask.codec
    labels = _labels(spec.num_classes, unlabelled=name != "binary", seed=1)
    path = synth.png("masks/m.png", codec.encode(labels, spec))
    back, bad = decode_mask(read_mask(path, as_rgb=codec.reads_rgb), spec)
    np.testing.assert_array_equal(back, labels)
    assert bad == {}


@pytest.mark.parametrize("name", list_encodings())
def test_labels_that_are_not_classes_are_refused(tmp_path: Path, name: str) -> None:
    spec = _spec(tmp_path, name, **_ignore_settings(name))
    labels = _labels(spec.num_classes, unlabelled=False)
    labels[2, 2] = spec.num_classes
    with pytest.raises(PixelwiseError, match=f"label {spec.num_classes} is not a class"):
        spec.mask.codec.encode(labels, spec)
    with pytest.raises(PixelwiseError, match="H×W integer array"):
        spec.mask.codec.encode(labels.astype(np.float32), spec)


def test_only_rgb_reads_masks_as_colours() -> None:
    assert {n for n in list_encodings() if get_encoding(n).reads_rgb} == {"rgb"}


def test_value_map_writes_16_bit_values_and_reads_them_back(synth) -> None:
    spec = DatasetSpec(
        root=synth.root,
        classes=[{"name": "bg", "mask_value": 0}, {"name": "cell", "mask_value": 1000}],
        mask={"encoding": "value_map", "ignore_index": 65535},
        splits={"all": {"images": "images"}},
    )
    labels = np.array([[0, 1, IGNORE_INDEX]], np.uint8)
    raw = encode_mask(labels, spec)
    assert raw.dtype == np.uint16 and raw.tolist() == [[0, 1000, 65535]]
    back, bad = decode_mask(read_mask(synth.png("m.png", raw)), spec)
    np.testing.assert_array_equal(back, labels)
    assert bad == {}


@pytest.mark.parametrize(
    ("encoding", "mask", "classes", "needle"),
    [
        # no raw value declared for unlabelled: it would read back as an undeclared value
        (
            "index",
            {},
            None,
            "cannot write unlabelled pixels: they would read back as an undeclared",
        ),
        ("rgb", {}, None, "cannot write unlabelled pixels: they would read back as class 'c0'"),
        # a binary mask has no unlabelled value at all
        ("binary", {}, None, "cannot write unlabelled pixels: they would read back as class 'c0'"),
        # the ignore value is a class's value
        ("value_map", {"ignore_index": 40}, None, "cannot write class 'c1'"),
        # two classes share one colour
        (
            "rgb",
            {"ignore_color": (9, 9, 9)},
            [{"name": "a", "color": (1, 1, 1)}, {"name": "b", "color": (1, 1, 1)}],
            "cannot write class 'a': they would read back as class 'b'",
        ),
    ],
)
def test_a_spec_that_cannot_write_a_label_says_which(
    tmp_path: Path, encoding: str, mask: dict, classes: list | None, needle: str
) -> None:
    spec = _spec(tmp_path, encoding)
    # unvalidated copies: loading refuses an ignore value that is a class's (test_settings.py);
    # writing must still refuse such a spec made in code
    spec = spec.model_copy(update={"mask": spec.mask.model_copy(update=mask)})
    if classes is not None:
        spec = spec.model_copy(update={"classes": [ClassInfo(**c) for c in classes]})
    with pytest.raises(PixelwiseError, match=needle) as exc:
        spec.mask.codec.check_writable(spec)
    assert f"mask encoding {encoding!r}" in str(exc.value) and "\n" not in str(exc.value)


# --------------------------------------------------------------------------------------------------
# describe: what data inspect prints


@pytest.mark.parametrize("name", list_encodings())
def test_describe_is_the_line_inspect_prints(synth, name: str) -> None:
    spec = _spec(synth.root, name, **_ignore_settings(name), ignore_values=[7])
    codec = spec.mask.codec
    labels = _labels(spec.num_classes, unlabelled=name != "binary")
    synth.png("images/a.png", synth.image(H, W))
    synth.png("masks/a.png", codec.encode(labels, spec))
    report = inspect_dataset(spec, workers=1)
    assert report["declared_values"] == codec.declared(spec)
    line = codec.describe(spec)
    assert line.startswith("declared mask values: ") and "\n" not in line
    assert line in report_text(report).splitlines()


def test_declared_values_per_encoding(tmp_path: Path) -> None:
    def declared(encoding: str, **mask: object) -> dict[str, str]:
        spec = _spec(tmp_path, encoding, **mask)
        return spec.mask.codec.declared(spec)

    assert declared("index", ignore_index=200) == {
        **{str(i): f"c{i}" for i in range(5)},
        "200": "(ignored)",
    }
    assert declared("value_map", ignore_values=[7]) == {
        "0": "c0", "7": "(ignored)", "40": "c1", "80": "c2", "160": "c3", "255": "c4",
    }  # fmt: skip
    rgb = declared("rgb", ignore_color=(9, 9, 9))
    assert rgb["rgb(200,30,30)"] == "c1" and rgb["rgb(9,9,9)"] == "(ignored)" and len(rgb) == 6
    assert declared("binary", threshold=100) == {"<100": "c0", ">=100": "c1"}


# --------------------------------------------------------------------------------------------------
# the registry and the spec


@pytest.mark.parametrize("value", ["palette", "RGB", 3, None, ["rgb"]])
def test_unknown_encoding_is_the_same_one_line_error(synth, value: object) -> None:
    path = synth.yaml(
        "bad.yaml",
        {"classes": [{"name": "a"}, {"name": "b"}], "mask": {"encoding": value}, "splits": {}},
    )
    with pytest.raises(PixelwiseError) as exc:
        load_dataset_spec(path)
    assert str(exc.value) == (
        f"{path}: mask.encoding: Input should be 'index', 'value_map', 'rgb' or 'binary'"
    )


def test_get_encoding_names_the_choices() -> None:
    with pytest.raises(PixelwiseError, match="unknown mask encoding 'palette'; expected 'index'"):
        get_encoding("palette")
    assert list_encodings() == ["index", "value_map", "rgb", "binary"]


def test_a_registered_name_cannot_be_registered_again() -> None:
    class Again(MaskEncoding):
        name = "index"

    with pytest.raises(ValueError, match="'index' is already registered"):
        register_encoding(Again)


def test_mask_spec_as_yaml_keeps_the_keys_its_encoding_reads(tmp_path: Path) -> None:
    rgb = _spec(tmp_path, "rgb", ignore_index=3, ignore_color=(1, 2, 3)).mask
    assert rgb.as_yaml() == {"encoding": "rgb", "ignore_color": [1, 2, 3]}
    index = _spec(tmp_path, "index", ignore_index=255, ignore_color=(1, 2, 3)).mask
    assert index.as_yaml() == {"encoding": "index", "ignore_index": 255}
    assert _spec(tmp_path, "binary").mask.as_yaml() == {"encoding": "binary"}


def test_a_new_encoding_is_one_registered_class(synth, monkeypatch: pytest.MonkeyPatch) -> None:
    """The contributor's path in docs/datasets.md: subclass, register, name it in the YAML."""
    monkeypatch.setattr(encodings_module, "_REGISTRY", dict(encodings_module._REGISTRY))

    @register_encoding
    class Inverted(MaskEncoding):  # class i is stored as 255 - i
        name = "inverted"

        def decode(self, raw: np.ndarray, spec: DatasetSpec) -> tuple[np.ndarray, dict[str, int]]:
            labels = 255 - raw.astype(np.int64)
            labels[labels >= spec.num_classes] = IGNORE_INDEX
            return labels.astype(np.uint8), {}

        def _encode(self, labels: np.ndarray, spec: DatasetSpec) -> np.ndarray:
            return np.where(labels == IGNORE_INDEX, 0, 255 - labels).astype(np.uint8)

        def _declared(self, spec: DatasetSpec) -> dict[str, str]:
            return {str(255 - i): c.name for i, c in enumerate(spec.classes)}

    spec = _spec(synth.root, "inverted")
    assert spec.mask.codec.name == "inverted"
    labels = _labels(spec.num_classes, unlabelled=True)
    back, _ = decode_mask(encode_mask(labels, spec), spec)
    np.testing.assert_array_equal(back, labels)
    assert spec.mask.codec.describe(spec).startswith("declared mask values: 251: c4")
