"""Small datasets: ``train.samples_per_epoch`` and persistent DataLoader workers."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
from helpers import toy_dataset

from pixelwise.config import RunConfig
from pixelwise.engine import load_checkpoint, train
from pixelwise.engine.distributed import DistContext
from pixelwise.engine.train import setup, train_order

train_mod = importlib.import_module("pixelwise.engine.train")  # the module, not the function


def _cfg(dataset: Path, **train_kw) -> RunConfig:
    return RunConfig(
        data={"dataset": str(dataset), "train_split": "all", "val_split": None},
        model={"name": "unet", "params": {"base_channels": 4, "depth": 2}},
        augment={"crop_size": [16, 16], "scale": [0.75, 1.25], "color_jitter": 0.2},
        optim={"lr": 0.01},
        train={"epochs": 2, "batch_size": 4, "num_workers": 0, "amp": "off", "seed": 5, **train_kw},
    )


def test_train_order_draws_passes_of_seeded_permutations() -> None:
    ds, one = range(3), DistContext()
    epochs = [train_order(ds, one, 7, e, samples=4) for e in range(3)]
    assert all(len(o) == 4 for o in epochs)
    draws = [i for o in epochs for i in o]
    assert all(sorted(draws[j : j + 3]) == [0, 1, 2] for j in range(0, 12, 3))  # every pass
    assert epochs[1] == train_order(ds, one, 7, 1, samples=4)  # a function of seed and epoch
    assert epochs != [train_order(ds, one, 8, e, samples=4) for e in range(3)]
    # one pass per epoch is the order without samples_per_epoch
    assert all(
        train_order(ds, one, 7, e, samples=3) == train_order(ds, one, 7, e) for e in range(3)
    )
    # torchrun: every process its share of the epoch's draws, padded to equal shares
    shares = [train_order(ds, DistContext(rank=r, world_size=3), 7, 1, samples=4) for r in range(3)]
    assert [len(s) for s in shares] == [2, 2, 2]
    padded = epochs[1] + epochs[1][:2]
    assert [i for k in range(2) for i in (s[k] for s in shares)] == padded


def test_samples_per_epoch_sets_the_epoch_length(tmp_path: Path) -> None:
    data = toy_dataset(tmp_path / "data")  # 8 images
    state = setup(_cfg(data, samples_per_epoch=20), tmp_path / "run", progress=False)
    assert state.per_rank == 20
    res = train(_cfg(data, samples_per_epoch=20), tmp_path / "run", progress=False)
    assert res.steps == 2 * 5  # 20 samples / batch 4, two epochs


def test_resume_with_samples_per_epoch_continues_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = toy_dataset(tmp_path / "data")
    cfg = _cfg(data, epochs=3, samples_per_epoch=12)  # epochs cross the passes of 8
    train(cfg, tmp_path / "full", progress=False)
    real_save = train_mod.save_checkpoint

    def interrupted_save(path, payload, **kw):  # noqa: ANN001, ANN003
        real_save(path, payload, **kw)
        if Path(path).name == "last.ckpt" and payload["epoch"] == 1:
            raise KeyboardInterrupt  # killed right after the first epoch's checkpoint

    monkeypatch.setattr(train_mod, "save_checkpoint", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "split", progress=False)
    monkeypatch.setattr(train_mod, "save_checkpoint", real_save)
    resumed = train(cfg, tmp_path / "split", resume=True, progress=False)
    assert resumed.epochs_run == 2
    a = load_checkpoint(tmp_path / "full" / "last.ckpt")
    b = load_checkpoint(tmp_path / "split" / "last.ckpt")
    assert a["train_state"]["step"] == b["train_state"]["step"] == 9
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def _epoch_batches(tmp_path: Path, name: str, **train_kw) -> tuple[list, int]:
    """The image batches of epochs 0-2 (the last resumed after its first batch), and how many
    loaders served them."""
    data = toy_dataset(tmp_path / "data") if not (tmp_path / "data").exists() else tmp_path / "data"
    state = setup(_cfg(data, **train_kw), tmp_path / name, progress=False)
    batches, loaders = [], []  # kept alive: their ids stay distinct
    for epoch, skip in ((0, 0), (1, 0), (2, 1)):
        state.epoch = epoch
        loader = train_mod._epoch_loader(state, skip)
        loaders.append(loader)
        batches.append([b["image"] for b in loader])
    return batches, len({id(loader) for loader in loaders})


def test_persistent_workers_give_the_augmentations_of_a_fresh_loader(tmp_path: Path) -> None:
    plain, _ = _epoch_batches(tmp_path, "plain", num_workers=0)
    fresh, many = _epoch_batches(tmp_path, "fresh", num_workers=2, persistent_workers=False)
    kept, one = _epoch_batches(tmp_path, "kept", num_workers=2, persistent_workers=True)
    assert many == 3 and one == 1  # a loader per epoch, or one kept
    for batches in (fresh, kept):
        assert [len(e) for e in batches] == [2, 2, 1]
        for e, epoch in enumerate(batches):
            assert all(torch.equal(x, y) for x, y in zip(epoch, plain[e], strict=True))
    assert not torch.equal(kept[0][0], kept[1][0])  # epochs differ (another order and augmentation)
    # the same sample in two epochs gets two augmentations
    state = setup(_cfg(tmp_path / "data"), tmp_path / "x", progress=False)
    assert not torch.equal(state.train_ds[(0, 3)]["image"], state.train_ds[(1, 3)]["image"])


def test_persistent_workers_train_the_same_weights(tmp_path: Path) -> None:
    data = toy_dataset(tmp_path / "data")
    a = train(_cfg(data, num_workers=0), tmp_path / "a", progress=False)
    b = train(_cfg(data, num_workers=1, persistent_workers=True), tmp_path / "b", progress=False)
    assert a.steps == b.steps == 4
    wa = load_checkpoint(tmp_path / "a" / "last.ckpt")["model"]
    wb = load_checkpoint(tmp_path / "b" / "last.ckpt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
