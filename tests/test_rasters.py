"""TIFF, BigTIFF and GeoTIFF reading and label-map writing (pixelwise.data.rasters).

Every file is written in ``tmp_path`` by tifffile, Pillow or rasterio; GeoTIFF tests skip without
rasterio, codec tests without imagecodecs.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps

from pixelwise.data import rasters
from pixelwise.data.io import read_image
from pixelwise.data.rasters import (
    CodecUnavailableError,
    GeoRef,
    is_raster_path,
    read_label_raster,
    read_raster,
    write_label_raster,
)
from pixelwise.errors import PixelwiseError

COLORS = [[128, 64, 128], [70, 70, 70], [0, 0, 142], [255, 255, 0]]
UTM_ORIGIN = (500000.0, 5000000.0)  # EPSG:32633 (WGS 84 / UTM 33N), 0.5 m pixels


def _rgb(h: int = 6, w: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _labels(h: int = 30, w: int = 40) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((yy // 8 + xx // 8) % len(COLORS)).astype(np.uint8)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("L"))


def _no_rasterio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rasterio", None)  # `import rasterio` now raises ImportError
    monkeypatch.setattr(rasters, "_warned_no_rasterio", False)


@pytest.fixture
def geotiff(tmp_path: Path) -> tuple[Path, np.ndarray, object]:
    """A 3-band 30×40 GeoTIFF in EPSG:32633 at 0.5 m pixels: (path, H×W×3 pixels, transform)."""
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import Affine

    transform = Affine(0.5, 0.0, UTM_ORIGIN[0], 0.0, -0.5, UTM_ORIGIN[1])
    pixels = _rgb(30, 40)
    path = tmp_path / "ortho.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=40, height=30, count=3, dtype="uint8",
        crs="EPSG:32633", transform=transform,
    ) as ds:  # fmt: skip
        ds.write(pixels.transpose(2, 0, 1))
    return path, pixels, transform


# --------------------------------------------------------------------------------------------------
# reading: layouts, sample types, band choice


def test_is_raster_path() -> None:
    assert all(is_raster_path(p) for p in ("a.tif", "b.TIFF", "dir/c.gtiff", "d.gtif"))
    assert not any(is_raster_path(p) for p in ("a.png", "b.jpg", "tif", "c.tif.bak"))


def test_rgb_uint8_round_trip(tmp_path: Path) -> None:
    arr = _rgb()
    tifffile.imwrite(tmp_path / "rgb.tif", arr)
    raster = read_raster(tmp_path / "rgb.tif")
    np.testing.assert_array_equal(raster.image, arr)
    assert raster.image.flags.c_contiguous
    assert (raster.source_dtype, raster.bands, raster.georef) == ("uint8", 3, None)
    np.testing.assert_array_equal(
        read_raster(tmp_path / "rgb.tif", 1).image[..., 0], _luminance(arr)
    )


def test_grayscale_to_rgb_and_one_channel(tmp_path: Path) -> None:
    arr = np.array([[0, 17, 255], [3, 128, 77]], np.uint8)
    tifffile.imwrite(tmp_path / "g.tif", arr)
    np.testing.assert_array_equal(
        read_raster(tmp_path / "g.tif").image, np.repeat(arr[..., None], 3, 2)
    )
    gray = read_raster(tmp_path / "g.tif", channels=1)
    assert gray.image.shape == (2, 3, 1) and gray.bands == 1
    np.testing.assert_array_equal(gray.image[..., 0], arr)


def test_uint16_scaled_by_255_over_65535(tmp_path: Path) -> None:
    arr = np.array([[0, 128, 129, 257], [1000, 32767, 32768, 65535]], np.uint16)
    tifffile.imwrite(tmp_path / "u16.tif", arr)
    raster = read_raster(tmp_path / "u16.tif", channels=1)
    # 128·255/65535 = 0.498 → 0; 129 → 0.502 → 1; 1000 → 3.89 → 4; 32767 → 127.498; 32768 → 127.502
    assert raster.image[..., 0].tolist() == [[0, 0, 1, 1], [4, 127, 128, 255]]
    assert raster.source_dtype == "uint16"


def test_int16_negative_values_clip_to_zero(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "i16.tif", np.array([[-5, 0, 300, 32767]], np.int16))
    assert read_raster(tmp_path / "i16.tif", 1).image[..., 0].tolist() == [[0, 0, 1, 127]]


def test_uint16_rgb_interleaved(tmp_path: Path) -> None:
    arr = _rgb()
    tifffile.imwrite(tmp_path / "rgb16.tif", arr.astype(np.uint16) * 257)
    np.testing.assert_array_equal(read_raster(tmp_path / "rgb16.tif").image, arr)


def test_planar_four_bands_and_band_selection(tmp_path: Path) -> None:
    planes = np.stack([np.full((4, 5), v, np.uint8) for v in (10, 20, 30, 40)])
    planes[3, 0, 0] = 99
    tifffile.imwrite(tmp_path / "p4.tif", planes, planarconfig="separate", photometric="minisblack")
    with tifffile.TiffFile(tmp_path / "p4.tif") as tif:
        assert tif.pages[0].axes == "SYX"
    path = tmp_path / "p4.tif"
    raster = read_raster(path)
    assert raster.bands == 4 and raster.image.shape == (4, 5, 3)
    assert raster.image[1, 1].tolist() == [10, 20, 30]  # bands 1, 2, 3 by default
    assert read_raster(path, bands=[4, 3, 2]).image[0, 0].tolist() == [99, 30, 20]
    assert read_raster(path, bands=[4]).image[1, 1].tolist() == [40, 40, 40]
    assert read_raster(path, 1, bands=[2]).image[..., 0].tolist() == [[20] * 5] * 4
    lum = read_raster(path, 1).image[1, 1, 0]
    assert lum == _luminance(np.array([[[10, 20, 30]]], np.uint8))[0, 0]


@pytest.mark.parametrize("bands", [[5], [0], [1, 2], [1.0]])
def test_bad_band_selection_names_the_file(tmp_path: Path, bands: list) -> None:
    path = tmp_path / "p4.tif"
    tifffile.imwrite(
        path, np.zeros((4, 3, 3), np.uint8), planarconfig="separate", photometric="minisblack"
    )
    with pytest.raises(PixelwiseError, match=str(path)):
        read_raster(path, bands=bands)


def test_planar_uint16_multispectral(tmp_path: Path) -> None:
    planes = (np.arange(5, dtype=np.uint16)[:, None, None] * 257 * 50).repeat(2, 1).repeat(2, 2)
    tifffile.imwrite(tmp_path / "ms.tif", planes, planarconfig="separate", photometric="minisblack")
    raster = read_raster(tmp_path / "ms.tif", bands=[5, 4, 3])
    assert raster.image[0, 0].tolist() == [200, 150, 100] and raster.bands == 5


def test_float32_unit_range_scaled_by_255(tmp_path: Path) -> None:
    arr = np.array([[0.0, 0.25, 0.5], [1.0, np.nan, 0.002]], np.float32)
    tifffile.imwrite(tmp_path / "f.tif", arr)
    raster = read_raster(tmp_path / "f.tif", 1)
    # 63.75 → 64, 127.5 → 128 (round half to even), NaN → 0, 0.51 → 1
    assert raster.image[..., 0].tolist() == [[0, 64, 128], [255, 0, 1]]
    assert raster.source_dtype == "float32"


def test_float32_outside_unit_range_taken_as_levels(tmp_path: Path) -> None:
    arr = np.array([[-3.0, 10.4, 300.0, 1.5, np.inf]], np.float32)
    tifffile.imwrite(tmp_path / "f.tif", arr)
    assert read_raster(tmp_path / "f.tif", 1).image[..., 0].tolist() == [[0, 10, 255, 2, 255]]


def test_palette_tiff_reads_as_colours(tmp_path: Path) -> None:
    idx = np.array([[0, 1], [2, 3]], np.uint8)
    write_label_raster(tmp_path / "pal.tif", idx, COLORS)
    np.testing.assert_array_equal(
        read_raster(tmp_path / "pal.tif").image, np.array(COLORS, np.uint8)[idx]
    )
    assert read_raster(tmp_path / "pal.tif", bands=[1]).image[..., 0].tolist() == idx.tolist()
    np.testing.assert_array_equal(
        read_raster(tmp_path / "pal.tif", 1).image[..., 0],
        _luminance(np.array(COLORS, np.uint8)[idx]),
    )


@pytest.mark.parametrize("photometric", ["miniswhite", "separated"])
def test_miniswhite_and_cmyk_match_pillow(tmp_path: Path, photometric: str) -> None:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (5, 6) if photometric == "miniswhite" else (5, 6, 4), dtype=np.uint8)
    path = tmp_path / f"{photometric}.tif"
    tifffile.imwrite(path, arr, photometric=photometric)
    with Image.open(path) as im:
        expected = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(read_raster(path).image, expected)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_tag_applied_like_pillow(tmp_path: Path, orientation: int) -> None:
    arr = _rgb(4, 7)
    path = tmp_path / "o.tif"
    tifffile.imwrite(path, arr, extratags=[(274, "H", 1, orientation, True)], metadata=None)
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    np.testing.assert_array_equal(read_raster(path).image, expected)


def test_first_page_of_a_stack(tmp_path: Path) -> None:
    pages = np.stack([np.full((3, 4), v, np.uint8) for v in (7, 8, 9, 10, 11)])
    with tifffile.TiffWriter(tmp_path / "stack.tif") as tw:
        for page in pages:
            tw.write(page, photometric="minisblack", metadata=None)
    with tifffile.TiffFile(tmp_path / "stack.tif") as tif:
        assert len(tif.pages) == 5
    assert read_raster(tmp_path / "stack.tif", 1).image[..., 0].tolist() == [[7] * 4] * 3


def test_bigtiff_read_back_exactly(tmp_path: Path) -> None:
    arr = _rgb(20, 30)
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, arr, bigtiff=True, tile=(16, 16), compression="zlib")
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff
    raster = read_raster(path)
    np.testing.assert_array_equal(raster.image, arr)
    assert raster.bands == 3


def test_read_image_routes_tiffs_through_read_raster(tmp_path: Path) -> None:
    arr = _rgb(8, 9)
    tifffile.imwrite(tmp_path / "big16.tif", arr.astype(np.uint16) * 257, bigtiff=True)
    np.testing.assert_array_equal(read_image(tmp_path / "big16.tif"), arr)
    np.testing.assert_array_equal(read_image(tmp_path / "big16.tif", 1)[..., 0], _luminance(arr))
    tifffile.imwrite(tmp_path / "f.tiff", np.array([[0.0, 0.5, 1.0]], np.float32))
    assert read_image(tmp_path / "f.tiff", 1)[..., 0].tolist() == [[0, 128, 255]]


def test_missing_codec_is_named_and_read_image_falls_back_to_pillow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arr = _rgb(8, 8)
    path = tmp_path / "lzw.tif"
    Image.fromarray(arr).save(path, compression="tiff_lzw")
    monkeypatch.setattr(rasters, "_codec_available", lambda compression: False)
    with pytest.raises(
        CodecUnavailableError, match=rf"{path}: LZW compression needs the imagecodecs"
    ):
        read_raster(path)
    np.testing.assert_array_equal(read_image(path), arr)


@pytest.mark.parametrize("compression", ["tiff_lzw", "jpeg"])
def test_lzw_and_jpeg_tiffs_with_imagecodecs(tmp_path: Path, compression: str) -> None:
    pytest.importorskip("imagecodecs")
    arr = _rgb(16, 16)
    path = tmp_path / f"{compression}.tif"
    Image.fromarray(arr).save(path, compression=compression)
    with Image.open(path) as im:
        expected = np.asarray(im.convert("RGB"))
    out = read_raster(path).image
    tolerance = 0 if compression == "tiff_lzw" else 3  # JPEG decoders may differ by a level or two
    assert np.abs(out.astype(int) - expected).max() <= tolerance


# --------------------------------------------------------------------------------------------------
# errors: one line naming the file


def _truncated(tmp_path: Path, compression: str | None) -> Path:
    path = tmp_path / f"cut-{compression}.tif"
    tifffile.imwrite(path, _rgb(32, 32), compression=compression)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    return path


@pytest.mark.parametrize(
    "case, reason",
    [
        ("missing", "file not found"),
        ("directory", "is a directory"),
        ("text", "not a readable TIFF"),
        ("empty", "not a readable TIFF"),
        ("truncated", "truncated TIFF"),
        ("truncated-deflate", "truncated TIFF"),
        ("header-only", "TIFF"),
        ("zero-size", "zero size"),
        ("too-many-pixels", "exceeds the limit"),
    ],
)
def test_unreadable_files_raise_one_line_naming_the_file(
    tmp_path: Path, case: str, reason: str
) -> None:
    path = tmp_path / f"{case}.tif"
    max_pixels = rasters.DEFAULT_MAX_PIXELS
    if case == "directory":
        path.mkdir()
    elif case == "text":
        path.write_text("this is not an image\n")
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        path = _truncated(tmp_path, None)
    elif case == "truncated-deflate":
        path = _truncated(tmp_path, "zlib")
    elif case == "header-only":
        tifffile.imwrite(path, _rgb(32, 32))
        path.write_bytes(path.read_bytes()[:12])
    elif case == "zero-size":
        with pytest.warns(UserWarning):
            tifffile.imwrite(path, np.zeros((0, 5), np.uint8))
    elif case == "too-many-pixels":
        tifffile.imwrite(path, _rgb(10, 10))
        max_pixels = 99
    for read in (
        lambda: read_raster(path, max_pixels=max_pixels),
        lambda: read_label_raster(path, max_pixels=max_pixels),
    ):
        with pytest.raises(PixelwiseError) as info:
            read()
        message = str(info.value)
        assert message.startswith(str(path)) and reason in message and "\n" not in message
    if case != "too-many-pixels":
        with pytest.raises(PixelwiseError, match=str(path)):
            read_image(path)


def test_deflate_data_corrupted_in_place(tmp_path: Path) -> None:
    path = tmp_path / "bad.tif"
    tifffile.imwrite(path, _rgb(32, 32), compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[0].dataoffsets[0]
    data = bytearray(path.read_bytes())
    data[offset : offset + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))
    with pytest.raises(PixelwiseError, match=rf"{path}: cannot decode TIFF"):
        read_raster(path)


# --------------------------------------------------------------------------------------------------
# label maps without georeference


def test_palette_label_tiff_round_trip(tmp_path: Path) -> None:
    labels = _labels()
    path = tmp_path / "mask.tif"
    write_label_raster(path, labels, COLORS)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.photometric == tifffile.PHOTOMETRIC.PALETTE
        assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert not tif.is_bigtiff
        np.testing.assert_array_equal(page.colormap[:, : len(COLORS)].T, np.array(COLORS) * 257)
        assert not page.colormap[:, len(COLORS) :].any()
    out, georef = read_label_raster(path)
    assert out.dtype == np.uint8 and georef is None
    np.testing.assert_array_equal(out, labels)
    with Image.open(path) as im:  # other readers see the palette too
        assert im.mode == "P" and im.getpalette()[:6] == COLORS[0] + COLORS[1]
        np.testing.assert_array_equal(np.asarray(im), labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif"]


def test_label_tiff_without_colours_is_grey_and_tiled_when_large(tmp_path: Path) -> None:
    labels = _labels(260, 300)
    write_label_raster(tmp_path / "m.tif", labels, compress="none")
    with tifffile.TiffFile(tmp_path / "m.tif") as tif:
        page = tif.pages[0]
        assert page.photometric == tifffile.PHOTOMETRIC.MINISBLACK and page.colormap is None
        assert page.is_tiled and page.tilewidth == 256 and page.compression == 1
    np.testing.assert_array_equal(read_label_raster(tmp_path / "m.tif")[0], labels)


def test_bigtiff_chosen_above_the_size_threshold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rasters, "_BIGTIFF_BYTES", 100)
    labels = _labels(10, 11)  # 110 bytes
    write_label_raster(tmp_path / "big.tif", labels, COLORS)
    with tifffile.TiffFile(tmp_path / "big.tif") as tif:
        assert tif.is_bigtiff
    np.testing.assert_array_equal(read_label_raster(tmp_path / "big.tif")[0], labels)


def test_wide_integer_labels_within_range_accepted(tmp_path: Path) -> None:
    labels = _labels().astype(np.int64)
    write_label_raster(tmp_path / "m.tif", labels)
    np.testing.assert_array_equal(read_label_raster(tmp_path / "m.tif")[0], labels)


def test_read_label_raster_rejects_multiband_and_wide_values(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "rgb.tif", _rgb())
    with pytest.raises(PixelwiseError, match=r"rgb\.tif: a label map has one band"):
        read_label_raster(tmp_path / "rgb.tif")
    tifffile.imwrite(tmp_path / "wide.tif", np.array([[1, 300]], np.uint16))
    with pytest.raises(PixelwiseError, match=r"wide\.tif: label values outside 0\.\.255"):
        read_label_raster(tmp_path / "wide.tif")
    tifffile.imwrite(tmp_path / "ok16.tif", np.array([[1, 255]], np.uint16))
    assert read_label_raster(tmp_path / "ok16.tif")[0].tolist() == [[1, 255]]


@pytest.mark.parametrize(
    "labels, colors, compress, reason",
    [
        (np.zeros((2, 2, 3), np.uint8), None, "deflate", "H×W array"),
        (np.zeros((0, 4), np.uint8), None, "deflate", "H×W array"),
        (np.array([[0, 256]]), None, "deflate", "0..255"),
        (np.zeros((2, 2), np.float32), None, "deflate", "integers"),
        (np.zeros((2, 2), np.uint8), [[0, 0]], "deflate", "triples"),
        (np.zeros((2, 2), np.uint8), [[0, 0, 256]], "deflate", "0..255"),
        (np.zeros((2, 2), np.uint8), [[0, 0, 0]] * 257, "deflate", "triples"),
        (np.zeros((2, 2), np.uint8), None, "gzip", "unknown compression"),
    ],
)
def test_bad_label_input_raises_before_writing(
    tmp_path: Path, labels, colors, compress, reason
) -> None:
    path = tmp_path / "m.tif"
    with pytest.raises(PixelwiseError, match=reason) as info:
        write_label_raster(path, labels, colors, compress=compress)
    assert str(info.value).startswith(str(path))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("writer", ["_write_tiff", "_write_geotiff"])
def test_failed_write_leaves_destination_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: str
) -> None:
    georef = None
    if writer == "_write_geotiff":
        pytest.importorskip("rasterio")
        georef = GeoRef("EPSG:4326", (0.1, 0.0, 10.0, 0.0, -0.1, 50.0), 40, 30)

    def half_written(tmp: Path, *args: object) -> None:
        tmp.write_bytes(b"II*\x00partial")
        raise OSError("disk full")

    monkeypatch.setattr(rasters, writer, half_written)
    fresh = tmp_path / "fresh.tif"
    with pytest.raises(OSError, match="disk full"):
        write_label_raster(fresh, _labels(), COLORS, georef)
    assert list(tmp_path.iterdir()) == []
    existing = tmp_path / "existing.tif"
    existing.write_bytes(b"previous mask")
    with pytest.raises(OSError, match="disk full"):
        write_label_raster(existing, _labels(), COLORS, georef)
    assert existing.read_bytes() == b"previous mask"
    assert list(tmp_path.iterdir()) == [existing]


# --------------------------------------------------------------------------------------------------
# GeoTIFF: the mask lines up with its source


def test_georef_dict_round_trip_through_json() -> None:
    georef = GeoRef("EPSG:4326", (0.1, 0, 10, 0, -0.1, 50), 40, 30)
    assert georef.transform == (0.1, 0.0, 10.0, 0.0, -0.1, 50.0)
    assert GeoRef.from_dict(json.loads(json.dumps(georef.to_dict()))) == georef
    with pytest.raises(PixelwiseError, match=r"pred\.json: georeference lacks crs, width"):
        GeoRef.from_dict({"transform": [1, 0, 0, 0, -1, 0], "height": 3}, source="pred.json")
    with pytest.raises(PixelwiseError, match="pred.json: transform must be 6 finite numbers"):
        GeoRef.from_dict(
            {"crs": None, "transform": [1, 0, 0], "width": 3, "height": 3}, source="pred.json"
        )
    with pytest.raises(PixelwiseError, match="width must be a positive integer"):
        GeoRef(None, (1, 0, 0, 0, -1, 0), 0, 3)


def test_geotiff_georeference_read(geotiff) -> None:
    from rasterio.crs import CRS

    path, pixels, transform = geotiff
    raster = read_raster(path)
    np.testing.assert_array_equal(raster.image, pixels)
    georef = raster.georef
    assert georef is not None
    assert CRS.from_wkt(georef.crs) == CRS.from_epsg(32633)
    assert georef.transform == (0.5, 0.0, UTM_ORIGIN[0], 0.0, -0.5, UTM_ORIGIN[1])
    assert georef.transform == tuple(transform)[:6]
    assert (georef.width, georef.height) == (40, 30)


def test_geotiff_label_map_lines_up_with_its_source(geotiff, tmp_path: Path) -> None:
    import rasterio

    path, _, transform = geotiff
    georef = read_raster(path).georef
    labels = _labels(30, 40)
    out = tmp_path / "pred" / "ortho_mask.tif"
    write_label_raster(out, labels, COLORS, georef)
    with rasterio.open(path) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs and dst.crs.to_epsg() == 32633
        assert dst.transform == src.transform == transform
        assert (dst.width, dst.height, dst.count, dst.dtypes) == (40, 30, 1, ("uint8",))
        assert dst.bounds == src.bounds
        np.testing.assert_array_equal(dst.read(1), labels)
        colormap = dst.colormap(1)
        assert [list(colormap[i][:3]) for i in range(len(COLORS))] == COLORS
        assert dst.colorinterp[0] == rasterio.enums.ColorInterp.palette
        assert dst.profile["tiled"] and dst.compression == rasterio.enums.Compression.deflate
    assert sorted(p.name for p in out.parent.iterdir()) == ["ortho_mask.tif"]  # no temp or .aux.xml
    back, back_georef = read_label_raster(out)
    np.testing.assert_array_equal(back, labels)
    assert back_georef == georef


@pytest.mark.parametrize("compress", ["none", "lzw"])
def test_geotiff_in_degrees_without_colours(tmp_path: Path, compress: str) -> None:
    rasterio = pytest.importorskip("rasterio")
    georef = GeoRef(
        rasterio.crs.CRS.from_epsg(4326).to_wkt(),
        (0.001, 0.0, 13.4, 0.0, -0.001, 52.5),
        width=7,
        height=5,
    )
    labels = np.arange(35, dtype=np.uint8).reshape(5, 7)
    path = tmp_path / "m.tif"
    write_label_raster(path, labels, georef=georef, compress=compress)
    with rasterio.open(path) as ds:
        assert ds.crs.to_epsg() == 4326 and (ds.transform.c, ds.transform.f) == (13.4, 52.5)
        assert ds.colorinterp[0] == rasterio.enums.ColorInterp.gray
        assert (ds.compression.value if ds.compression else "NONE") == compress.upper()
        np.testing.assert_array_equal(ds.read(1), labels)
    if compress == "lzw" and not rasters._codec_available(tifffile.COMPRESSION.LZW):
        with pytest.raises(CodecUnavailableError, match="imagecodecs"):
            read_label_raster(path)
        return
    back, back_georef = read_label_raster(path)
    np.testing.assert_array_equal(back, labels)
    assert back_georef == georef


def test_world_file_georeferences_and_keeps_the_stored_grid(tmp_path: Path) -> None:
    pytest.importorskip("rasterio")
    arr = _rgb(4, 7)
    path = tmp_path / "scan.tif"
    tifffile.imwrite(path, arr, extratags=[(274, "H", 1, 6, True)], metadata=None)
    path.with_suffix(".tfw").write_text("2.0\n0.0\n0.0\n-2.0\n101.0\n199.0\n")  # pixel centres
    raster = read_raster(path)
    np.testing.assert_array_equal(
        raster.image, arr
    )  # not rotated: the transform describes this grid
    assert raster.georef.transform == (2.0, 0.0, 100.0, 0.0, -2.0, 200.0)
    assert (raster.georef.width, raster.georef.height, raster.georef.crs) == (7, 4, None)


def test_georef_size_must_match_the_labels(tmp_path: Path) -> None:
    georef = GeoRef(None, (1.0, 0.0, 0.0, 0.0, -1.0, 0.0), width=40, height=31)
    with pytest.raises(
        PixelwiseError, match=r"m\.tif: labels are 40×30 but the georeference is 40×31"
    ):
        write_label_raster(tmp_path / "m.tif", _labels(30, 40), georef=georef)
    assert list(tmp_path.iterdir()) == []


def test_without_rasterio_pixels_load_and_georef_is_dropped_with_one_warning(
    geotiff, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path, pixels, _ = geotiff
    georef = read_raster(path).georef
    _no_rasterio(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="pixelwise.data.rasters"):
        first, second = read_raster(path), read_raster(path)
    np.testing.assert_array_equal(first.image, pixels)
    assert first.georef is None and second.georef is None
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "pixelwise[geo]" in warnings[0] and str(path) in warnings[0]
    out = path.with_name("mask.tif")
    with pytest.raises(PixelwiseError, match=rf"{out}: .*needs rasterio .*pixelwise\[geo\]"):
        write_label_raster(out, _labels(30, 40), COLORS, georef)
    assert not out.exists()
