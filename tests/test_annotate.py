"""``pixelwise annotate``'s store and API: saves in the dataset's own encoding, versions and
conflicts, history, the model's pre-labels and uncertainty, superpixels, the token."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import pixel_segmenter, toy_dataset
from PIL import Image

from pixelwise.annotate.store import NO_VERSION, Conflict, LabelStore
from pixelwise.data.classes import IGNORE_INDEX
from pixelwise.data.spec import load_dataset_spec
from pixelwise.errors import PixelwiseError

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from pixelwise.annotate.app import AnnotateSettings, create_annotate_app, heat_map  # noqa: E402


def _png(labels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(labels.astype(np.uint8), "L").save(buf, format="PNG")
    return buf.getvalue()


def _labels(response) -> np.ndarray:  # noqa: ANN001
    return np.asarray(Image.open(io.BytesIO(response.content)))


def _value_map_dataset(root: Path) -> Path:
    """Two 8×6 images whose masks hold 0 (bg), 128 (fg), 255 (unlabelled): a value-map dataset."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).save(
            root / "images" / f"a{i}.png"
        )
    mask = np.zeros((6, 8), np.uint8)
    mask[:, 4:] = 128
    mask[0, 0] = 255
    Image.fromarray(mask).save(root / "masks" / "a0.png")  # a1 has no mask
    spec = {
        "name": "vm",
        "root": str(root),
        "classes": [{"name": "bg", "mask_value": 0}, {"name": "fg", "mask_value": 128}],
        "mask": {"encoding": "value_map", "ignore_values": [255]},
        "splits": {"train": {"images": "images", "masks": "masks"}},
    }
    (root / "vm.yaml").write_text(json.dumps(spec))
    return root / "vm.yaml"


@pytest.fixture
def vm(tmp_path: Path):  # noqa: ANN201
    spec = load_dataset_spec(_value_map_dataset(tmp_path / "data"))
    return spec, tmp_path / "labels"


def test_store_starts_from_the_dataset_mask_and_saves_in_its_encoding(vm) -> None:  # noqa: ANN001
    spec, labels_dir = vm
    store = LabelStore(spec, labels_dir)
    assert [it.name for it in store.items] == ["images/a0.png", "images/a1.png"]
    first, second = store.items
    labels, version = store.labels(first)
    assert version == NO_VERSION
    assert labels[0, 0] == IGNORE_INDEX and labels[1, 0] == 0 and labels[1, 5] == 1
    blank, _ = store.labels(second)  # no mask anywhere: all unlabelled
    assert (blank == IGNORE_INDEX).all() and blank.shape == (6, 8)
    labels[0, 0] = 1
    v1 = store.save(first, labels, NO_VERSION)
    raw = np.asarray(Image.open(labels_dir / "images" / "a0.png"))
    assert raw[0, 0] == 128 and raw[1, 0] == 0 and raw[1, 5] == 128  # the value map, not indices
    assert store.version(first) == v1
    np.testing.assert_array_equal(store.labels(first)[0], labels)
    # the dataset's own mask is untouched
    assert np.asarray(Image.open(spec.root / "masks" / "a0.png"))[0, 0] == 255


def test_a_stale_version_is_refused_and_nothing_is_written(vm) -> None:  # noqa: ANN001
    spec, labels_dir = vm
    store = LabelStore(spec, labels_dir)
    item = store.items[1]
    ones = np.ones((6, 8), np.uint8)
    v1 = store.save(item, ones, NO_VERSION)
    before = (labels_dir / "images" / "a1.png").read_bytes()
    with pytest.raises(Conflict, match="changed since you opened it") as err:
        store.save(item, np.zeros((6, 8), np.uint8), NO_VERSION)  # a second tab's stale save
    assert err.value.current == v1
    assert (labels_dir / "images" / "a1.png").read_bytes() == before
    v2 = store.save(item, np.zeros((6, 8), np.uint8), v1)  # saved over it, knowingly
    assert v2 != v1


def test_history_keeps_every_replaced_version(vm) -> None:  # noqa: ANN001
    spec, labels_dir = vm
    store = LabelStore(spec, labels_dir)
    item = store.items[1]
    a = np.ones((6, 8), np.uint8)
    b = a.copy()
    b[:2] = 0
    v1 = store.save(item, a, NO_VERSION)
    v2 = store.save(item, b, v1, source="model")
    log = store.history(item)
    assert [e["version"] for e in log] == [v1, v2]
    assert [e["replaced"] for e in log] == [NO_VERSION, v1]
    assert log[1]["changed_pixels"] == 16 and log[1]["source"] == "model"
    assert log[0]["changed_pixels"] == 48 and log[1]["labelled_pixels"] == 48
    np.testing.assert_array_equal(store.version_labels(item, v1), a)
    np.testing.assert_array_equal(store.version_labels(item, v2), b)
    with pytest.raises(PixelwiseError, match="not a version"):
        store.version_labels(item, "../../etc/passwd")


def test_in_place_writes_the_dataset_masks_and_keeps_the_old_one(vm) -> None:  # noqa: ANN001
    spec, _ = vm
    store = LabelStore(spec, in_place=True)
    first, second = store.items
    assert first.label_path == spec.root / "masks" / "a0.png"
    assert second.label_path == spec.root / "masks" / "a1.png"  # derived for an unlabelled image
    old = (spec.root / "masks" / "a0.png").read_bytes()
    labels, version = store.labels(first)
    assert version != NO_VERSION  # the dataset's file is the saved label
    labels[:] = 0
    store.save(first, labels, version)
    assert (np.asarray(Image.open(spec.root / "masks" / "a0.png")) == 0).all()
    assert (first.history_dir / f"{version}.png").read_bytes() == old
    assert str(first.history_dir).startswith(str(spec.root / ".pixelwise-history"))


def test_an_encoding_that_cannot_store_unlabelled_pixels_says_so(tmp_path: Path) -> None:
    root = toy_dataset(tmp_path / "toy", n=1, size=8)  # index masks, no ignore value declared
    store = LabelStore(load_dataset_spec(root), tmp_path / "labels")
    partial = np.full((8, 8), IGNORE_INDEX, np.uint8)
    partial[0] = 1
    with pytest.raises(PixelwiseError, match="cannot write unlabelled"):
        store.save(store.items[0], partial, NO_VERSION)
    assert not (tmp_path / "labels").exists() or not any((tmp_path / "labels").rglob("*.png"))


def test_heat_map_runs_dark_to_bright_and_transparent_to_opaque() -> None:
    rgba = heat_map(np.array([[0.0, 0.5, 1.0]], np.float32))
    assert rgba.shape == (1, 3, 4) and rgba.dtype == np.uint8
    assert rgba[0, 0, :3].sum() < rgba[0, 1, :3].sum() < rgba[0, 2, :3].sum()
    assert rgba[0, 0, 3] == 40 and rgba[0, 2, 3] == 255


# -- the API ------------------------------------------------------------------------------------


@pytest.fixture
def toy(tmp_path: Path):  # noqa: ANN201
    root = toy_dataset(tmp_path / "toy", n=3, size=16)
    spec = load_dataset_spec(root)
    for p in (root / "masks").glob("im2.png"):
        p.unlink()  # one unlabelled image for the ranking
    spec = load_dataset_spec(root)
    return spec, tmp_path / "labels"


def test_api_round_trip_conflict_and_history(toy) -> None:  # noqa: ANN001
    spec, labels_dir = toy
    app = create_annotate_app(LabelStore(spec, labels_dir), None, AnnotateSettings(rank=False))
    with TestClient(app) as client:
        info = client.get("/api/dataset").json()
        assert [c["name"] for c in info["classes"]] == spec.class_names
        assert info["encoding"] == "index" and info["model"] is None
        listing = client.get("/api/items").json()
        names = {it["name"]: it for it in listing["items"]}
        assert set(names) == {"images/im0.png", "images/im1.png", "images/im2.png"}
        item = names["images/im0.png"]["id"]
        image = client.get(f"/api/items/{item}/image")
        assert image.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(image.content)).size == (16, 16)
        got = client.get(f"/api/items/{item}/labels")
        assert got.headers["etag"] == '"none"'
        labels = _labels(got)
        np.testing.assert_array_equal(labels, np.asarray(Image.open(spec.root / "masks/im0.png")))
        labels = labels.copy()
        labels[5:9, 5:9] = 2
        # no If-Match: refused
        assert client.put(f"/api/items/{item}/labels", content=_png(labels)).status_code == 428
        ok = client.put(
            f"/api/items/{item}/labels", content=_png(labels), headers={"If-Match": '"none"'}
        )
        assert ok.status_code == 200, ok.text
        version = ok.json()["version"]
        on_disk = np.asarray(Image.open(labels_dir / "images" / "im0.png"))
        np.testing.assert_array_equal(on_disk, labels)
        assert client.get(f"/api/items/{item}/labels").headers["etag"] == f'"{version}"'
        # a second tab still at "none"
        stale = client.put(
            f"/api/items/{item}/labels",
            content=_png(np.zeros((16, 16))),
            headers={"If-Match": '"none"'},
        )
        assert stale.status_code == 409
        assert stale.json()["current"] == version and "changed since" in stale.json()["error"]
        np.testing.assert_array_equal(np.asarray(Image.open(labels_dir / "images/im0.png")), labels)
        hist = client.get(f"/api/items/{item}/history").json()
        assert hist["current"] == version and len(hist["saves"]) == 1
        assert hist["saves"][0]["changed_pixels"] == 16
        assert client.get(f"/api/items/{item}/history/0123456789abcdef").status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"not a png", 400, "not a readable PNG"),
        (_png(np.zeros((15, 16))), 422, "16x16 grayscale PNG"),
        (_png(np.full((16, 16), 7)), 422, "label 7 is not a class"),
        (b"\x89PNG" + b"\0" * 400_000, 413, ""),
    ],
)
def test_bad_label_uploads_get_one_line(toy, body: bytes, status: int, words: str) -> None:  # noqa: ANN001
    spec, labels_dir = toy
    app = create_annotate_app(LabelStore(spec, labels_dir), None, AnnotateSettings(rank=False))
    with TestClient(app) as client:
        r = client.put("/api/items/0/labels", content=body, headers={"If-Match": '"none"'})
        assert r.status_code == status
        assert words in r.json()["error"] and "\n" not in r.json()["error"]
    assert not labels_dir.exists() or not any(labels_dir.rglob("*.png"))


@pytest.mark.parametrize(
    "path", ["/api/items/99/labels", "/api/items/-1/image", "/api/items/x/image"]
)
def test_unknown_images_are_404(toy, path: str) -> None:  # noqa: ANN001
    spec, labels_dir = toy
    app = create_annotate_app(LabelStore(spec, labels_dir), None, AnnotateSettings(rank=False))
    with TestClient(app) as client:
        assert client.get(path).status_code == 404


def test_token_guards_the_api_but_not_the_page(toy) -> None:  # noqa: ANN001
    spec, labels_dir = toy
    app = create_annotate_app(
        LabelStore(spec, labels_dir), None, AnnotateSettings(token="s3cret", rank=False)
    )
    with TestClient(app) as client:
        assert client.get("/").status_code == 200
        assert "default-src 'none'" in client.get("/").headers["content-security-policy"]
        assert client.get("/api/items").status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        assert client.get("/api/items", headers=auth).status_code == 200


def test_without_a_token_other_hosts_are_refused(toy) -> None:  # noqa: ANN001
    spec, labels_dir = toy
    app = create_annotate_app(
        LabelStore(spec, labels_dir), None, AnnotateSettings(host="127.0.0.1", rank=False)
    )
    with TestClient(app) as client:
        assert client.get("/api/items", headers={"Host": "evil.example"}).status_code == 421
        assert client.get("/api/items", headers={"Host": "localhost:8010"}).status_code == 200


def test_model_prelabels_ranks_and_maps_uncertainty(toy) -> None:  # noqa: ANN001
    spec, labels_dir = toy
    seg = pixel_segmenter()
    seg.meta.class_names = spec.class_names
    store = LabelStore(spec, labels_dir)
    app = create_annotate_app(store, seg, AnnotateSettings())
    with TestClient(app) as client:
        assert client.get("/api/dataset").json()["model"]["classes"] == 3
        assert "warning" not in client.get("/api/dataset").json()["model"]
        pred = client.post("/api/items/2/predict")
        assert pred.status_code == 200
        image = np.asarray(Image.open(spec.root / "images/im2.png").convert("RGB"))
        np.testing.assert_array_equal(_labels(pred), seg.segment(image).labels)
        u = float(pred.headers["x-uncertainty"])
        assert 0.0 < u < 1.0
        heat = Image.open(io.BytesIO(client.get("/api/items/2/uncertainty").content))
        assert heat.mode == "RGBA" and heat.size == (16, 16)
        app.state.annotate.rank()  # what the start-up thread runs
        listing = client.get("/api/items").json()
        assert listing["ranking"]["total"] == 1 and listing["ranking"]["scored"] == 1
        assert listing["order"][0] == 2  # the one unlabelled image first
        assert listing["items"][2]["uncertainty"] == pytest.approx(u, abs=1e-6)


def test_a_model_with_other_classes_is_refused(toy) -> None:  # noqa: ANN001
    spec, labels_dir = toy
    seg = pixel_segmenter()
    seg.meta.num_classes = 5
    with pytest.raises(PixelwiseError, match="5 classes, the dataset 3"):
        create_annotate_app(LabelStore(spec, labels_dir), seg)


def test_no_model_means_404_for_prelabels(toy) -> None:  # noqa: ANN001
    spec, labels_dir = toy
    app = create_annotate_app(LabelStore(spec, labels_dir), None, AnnotateSettings(rank=False))
    with TestClient(app) as client:
        r = client.post("/api/items/0/predict")
        assert r.status_code == 404 and "--model" in r.json()["error"]


def test_superpixels_cover_the_image_with_compact_ids(toy) -> None:  # noqa: ANN001
    pytest.importorskip("skimage")
    spec, labels_dir = toy
    app = create_annotate_app(
        LabelStore(spec, labels_dir), None, AnnotateSettings(rank=False, superpixels=16)
    )
    with TestClient(app) as client:
        im = np.asarray(Image.open(io.BytesIO(client.get("/api/items/0/superpixels").content)))
    im = im.astype(np.int64)
    ids = im[..., 0] + 256 * im[..., 1] + 65536 * im[..., 2]
    found = np.unique(ids)
    np.testing.assert_array_equal(found, np.arange(len(found)))
    assert 2 <= len(found) <= 64


def test_saved_labels_form_a_dataset_to_retrain_on(vm) -> None:  # noqa: ANN001
    from pixelwise.data.dataset import load_pair
    from pixelwise.data.spec import resolve_split

    spec, labels_dir = vm
    store = LabelStore(spec, labels_dir)
    labels = np.zeros((6, 8), np.uint8)
    labels[2:4] = 1
    labels[0] = IGNORE_INDEX
    store.save(store.items[1], labels, NO_VERSION)
    again = load_dataset_spec(labels_dir / "dataset.yaml")
    assert again.class_names == ["bg", "fg"] and again.mask.encoding == "value_map"
    samples, problems = resolve_split(again, "train")
    assert problems == [] and [s.image.name for s in samples] == ["a1.png"]
    image, back = load_pair(samples[0], again)
    np.testing.assert_array_equal(back, labels)
    assert image.shape == (6, 8, 3)


# -- the command ---------------------------------------------------------------------------------


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch) -> dict:
    """``uvicorn.run`` replaced: what ``pixelwise annotate`` would have served."""
    import uvicorn

    seen: dict = {}

    def fake_run(app, **kwargs) -> None:  # noqa: ANN001, ANN003
        seen.update(kwargs, app=app)

    monkeypatch.setattr(uvicorn, "run", fake_run)
    return seen


def test_command_serves_the_dataset_and_prints_where(
    toy, ran: dict, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:  # noqa: ANN001
    from pixelwise.cli import main

    spec, _ = toy
    monkeypatch.chdir(tmp_path)
    main(["annotate", str(spec.root)])
    out = capsys.readouterr().out
    assert "annotating 3 images of toy (index masks → pixelwise-labels/toy)" in out
    assert "open http://127.0.0.1:8010/" in out and "#token=" not in out
    assert ran["host"] == "127.0.0.1" and ran["port"] == 8010
    store = ran["app"].state.annotate.store
    assert store.labels_dir == Path("pixelwise-labels/toy")


def test_command_beyond_loopback_makes_a_token(toy, ran: dict, capsys) -> None:  # noqa: ANN001
    from pixelwise.cli import main

    spec, labels = toy
    main(["annotate", str(spec.root), "--labels", str(labels), "--host", "0.0.0.0"])
    out = capsys.readouterr().out
    token = out.split("#token=")[1].split()[0]
    assert len(token) >= 20
    with TestClient(ran["app"]) as client:
        assert client.get("/api/items").status_code == 401
        ok = client.get("/api/items", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--in-place", "--labels", "x"], "choose one place to save"),
        (["--port", "0"], "--port 0"),
        (["--uncertainty", "vibes"], "unknown uncertainty kind"),
    ],
)
def test_command_errors_are_one_line(toy, ran: dict, capsys, extra: list[str], words: str) -> None:  # noqa: ANN001
    from pixelwise.cli import main

    spec, _ = toy
    with pytest.raises(SystemExit) as exit_:
        main(["annotate", str(spec.root), *extra])
    assert exit_.value.code != 0
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err and "Traceback" not in err
    assert "app" not in ran


def test_a_labels_folder_that_would_write_over_images_is_refused(vm) -> None:  # noqa: ANN001
    spec, _ = vm
    with pytest.raises(PixelwiseError, match="would be written over an image"):
        LabelStore(spec, spec.root)  # labels/<images/a0.png> is the image itself


def test_a_model_whose_class_names_differ_is_flagged(toy) -> None:  # noqa: ANN001
    spec, labels_dir = toy
    seg = pixel_segmenter()  # bg, red, green; the toy dataset's are class_0..class_2
    app = create_annotate_app(LabelStore(spec, labels_dir), seg, AnnotateSettings(rank=False))
    with TestClient(app) as client:
        warning = client.get("/api/dataset").json()["model"]["warning"]
    assert "0: 'bg' / 'class_0'" in warning and "2: 'green' / 'class_2'" in warning


def test_two_images_sharing_a_label_file_are_refused(vm) -> None:  # noqa: ANN001
    spec, labels_dir = vm
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(spec.root / "images" / "a0.jpg")
    with pytest.raises(PixelwiseError, match="the label of both"):
        LabelStore(spec, labels_dir)
