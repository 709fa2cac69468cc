"""The video path measured (issue 22): speed against the image path, memory on a long video, and
label flicker on CamVid with and without temporal stabilisation.

    python bench/video_bench.py speed   [--frames 120] [--repeats 2]
    python bench/video_bench.py memory  [--minutes 10]
    python bench/video_bench.py flicker [--alpha 0.5]
    python bench/video_bench.py flicker --source synthetic [--clips 3 --frames 60 --fps 30]

``speed``: the first ``--frames`` CamVid test frames (file order: sequences in order) are written as a
30 fps H.264 clip (360×480); the bundled ``camvid`` model segments them through the video path
(``write_segmented_video``: decode, batches of 4, overlay video encoded) and through the image path
(``predict_files`` on the same frames as PNGs: masks and overlay PNGs), alternately, ``--repeats``
times each in this process; medians of frames (images) per second and their ratio.

``memory``: a ``--minutes`` long 30 fps 360×480 clip made by cycling the test frames, segmented by
the video path (overlay video) in a fresh process whose resident memory is sampled every 0.5 s;
peak (VmHWM) and the RSS at 10% and 90% of the frames show whether memory grows with length.

``flicker``: each CamVid test sequence's labelled frames, in frame order (CamVid labels every 30th
frame of its 30 fps videos, so consecutive labelled frames are 1 s apart: the only consecutive ground
truth there is), segmented frame by frame through ``Segmenter.segment_batch`` (probabilities) and
stabilised by none / ``TemporalEMA`` / ``TemporalFlow`` at ``--alpha``; flicker (pixels whose
predicted class changes where the ground truth does not, over all pairs of consecutive labelled
frames, ignored pixels left out) and test mIoU by the one confusion matrix. ``--source synthetic``:
the same on generated drives (``pixelwise.data.synthetic.road_clip``, seeds 1..``--clips``), truly
consecutive frames at ``--fps`` with exact labels — the 30 fps case that ../shared has no labels for.

Results: JSON files under docs/results/ (video_speed.json, video_memory.json, video_flicker.json,
video_flicker_synthetic.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "configs" / "data" / "camvid.yaml"
RESULTS = REPO / "docs" / "results"
FPS = Fraction(30)


def _test_samples():  # noqa: ANN202
    from pixelwise.data.spec import load_dataset_spec, resolve_split

    spec = load_dataset_spec(DATA)
    samples, _ = resolve_split(spec, "test")
    return spec, sorted(samples, key=lambda s: s.image.name)


def _rgb(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def _write_clip(path: Path, frames: list[Path], count: int) -> None:
    from pixelwise.video import VideoWriter

    first = _rgb(frames[0])
    w = VideoWriter(path, FPS, first.shape[1], first.shape[0])
    try:
        for i in range(count):
            w.write(_rgb(frames[i % len(frames)]))
    finally:
        w.close()


def _save(name: str, doc: dict) -> None:
    from pixelwise._atomic import write_text_atomic

    doc |= {"machine": {"cpus": os.cpu_count()}, "date": time.strftime("%Y-%m-%d %H:%M")}
    doc["command"] = "python bench/video_bench.py " + " ".join(sys.argv[1:])
    write_text_atomic(RESULTS / name, json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))


def speed(frames: int, repeats: int) -> None:
    import pixelwise as pw
    from pixelwise.engine import predict_files

    _, samples = _test_samples()
    paths = [s.image for s in samples][:frames]
    seg = pw.load("camvid")
    video, image = [], []
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        _write_clip(clip, paths, len(paths))
        for r in range(repeats):
            out = Path(tmp) / f"v{r}"
            res = pw.write_segmented_video(seg, clip, out, progress=False)
            video.append(res.frames / res.seconds)
            summary = predict_files(
                seg, [str(p) for p in paths], Path(tmp) / f"i{r}", progress=False
            )
            image.append(summary.images_per_second)
    v, i = statistics.median(video), statistics.median(image)
    _save(
        "video_speed.json",
        {
            "frames": len(paths),
            "video_frames_per_second": video,
            "image_images_per_second": image,
            "median_video": round(v, 2),
            "median_image": round(i, 2),
            "ratio_video_over_image": round(v / i, 3),
        },
    )


def _memory_child(clip: Path, out: Path) -> None:
    import pixelwise as pw

    rss: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss.append((time.perf_counter(), int(line.split()[1]) // 1024))
            done.wait(0.5)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    t0 = time.perf_counter()
    res = pw.write_segmented_video(pw.load("camvid"), clip, out, progress=False)
    done.set()
    t.join()
    hwm = next(
        int(x.split()[1]) // 1024
        for x in Path("/proc/self/status").read_text().splitlines()
        if x.startswith("VmHWM:")
    )
    span = rss[-1][0] - t0

    def at(share: float) -> int:
        return next(m for ts, m in rss if ts - t0 >= share * span)

    print(
        json.dumps(
            {
                "frames": res.frames,
                "seconds": round(res.seconds, 1),
                "peak_mib": hwm,
                "rss_10_mib": at(0.1),
                "rss_50_mib": at(0.5),
                "rss_90_mib": at(0.9),
            }
        )
    )


def memory(minutes: float) -> None:
    _, samples = _test_samples()
    count = int(minutes * 60 * FPS)
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "long.mp4"
        t0 = time.perf_counter()
        _write_clip(clip, [s.image for s in samples], count)
        made = time.perf_counter() - t0
        child = subprocess.run(
            [sys.executable, __file__, "_memory_child", str(clip), str(Path(tmp) / "out")],
            capture_output=True,
            text=True,
            check=True,
        )
    doc = json.loads(child.stdout.strip().splitlines()[-1])
    _save(
        "video_memory.json",
        {
            "minutes": minutes,
            "fps": 30,
            "size": "360x480",
            "clip_written_seconds": round(made, 1),
            **doc,
        },
    )


def _camvid_sequences():  # noqa: ANN202 - (num_classes, {sequence: [(image, target) loader]})
    from pixelwise.data.dataset import load_pair

    spec, samples = _test_samples()
    seqs: dict[str, list] = {}
    for s in samples:
        seqs.setdefault(s.image.name.split("_")[0], []).append(
            lambda s=s: load_pair(s, spec)  # read when its turn comes
        )
    return spec.num_classes, seqs


def _synthetic_sequences(clips: int, frames: int, fps: float):  # noqa: ANN202
    from pixelwise.data.synthetic import ROAD_SCENE_CLASSES, road_clip

    seqs = {}
    for seed in range(1, clips + 1):
        scenes = [(f.image, f.labels) for f in road_clip(seed, frames=frames, fps=fps)]
        seqs[f"street{seed}"] = [lambda x=x: x for x in scenes]
    return len(ROAD_SCENE_CLASSES), seqs


def flicker(alpha: float, source: str, clips: int, frames: int, fps: float) -> None:
    import torch

    import pixelwise as pw
    from pixelwise.data.classes import IGNORE_INDEX
    from pixelwise.metrics import ConfusionMatrix
    from pixelwise.video import TemporalEMA, TemporalFlow
    from pixelwise.video.temporal import flicker_counts

    if source == "camvid":
        num_classes, seqs = _camvid_sequences()
    else:
        num_classes, seqs = _synthetic_sequences(clips, frames, fps)
    seg = pw.load("camvid")
    modes = {"none": None, "ema": TemporalEMA(alpha), "flow": TemporalFlow(alpha)}
    result = {}
    for mode, stab in modes.items():
        cm = ConfusionMatrix(num_classes)
        changed = stable = 0
        per_seq = {}
        t0 = time.perf_counter()
        for name, items in seqs.items():
            if stab is not None:
                stab.reset()
            prev = prev_t = None
            c_seq = s_seq = 0
            for load in items:
                image, target = load()
                p = seg.segment_batch([image], probs=True)[0]
                probs = p.probs if stab is None else stab(p.probs, image)
                labels = probs.argmax(0).astype(np.uint8)
                cm.update(
                    torch.from_numpy(labels.astype(np.int64)),
                    torch.from_numpy(target.astype(np.int64)),
                )
                if prev is not None:
                    c, st = flicker_counts(prev, labels, prev_t, target, ignore_index=IGNORE_INDEX)
                    c_seq, s_seq = c_seq + c, s_seq + st
                prev, prev_t = labels, target
            per_seq[name] = {"frames": len(items), "flicker": round(c_seq / max(s_seq, 1), 5)}
            changed, stable = changed + c_seq, stable + s_seq
        scores = cm.scores()
        result[mode] = {
            "flicker": round(changed / stable, 5),
            "miou": round(scores.miou, 5),
            "per_sequence": per_seq,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(mode, result[mode]["flicker"], result[mode]["miou"], flush=True)
    if source == "camvid":
        _save("video_flicker.json", {"alpha": alpha, "frames_apart": 30, "modes": result})
    else:
        doc = {
            "alpha": alpha,
            "source": f"pixelwise.data.synthetic.road_clip, seeds 1..{clips}",
            "frames_per_clip": frames,
            "fps": fps,
            "modes": result,
        }
        _save("video_flicker_synthetic.json", doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--frames", type=int, default=120)
    s.add_argument("--repeats", type=int, default=2)
    m = sub.add_parser("memory")
    m.add_argument("--minutes", type=float, default=10.0)
    f = sub.add_parser("flicker")
    f.add_argument("--alpha", type=float, default=0.5)
    f.add_argument("--source", choices=["camvid", "synthetic"], default="camvid")
    f.add_argument("--clips", type=int, default=3, help="synthetic: streets (seeds 1..N)")
    f.add_argument("--frames", type=int, default=60, help="synthetic: frames per clip")
    f.add_argument("--fps", type=float, default=30.0, help="synthetic: frames per second")
    c = sub.add_parser("_memory_child")
    c.add_argument("clip", type=Path)
    c.add_argument("out", type=Path)
    a = ap.parse_args()
    if a.what == "speed":
        speed(a.frames, a.repeats)
    elif a.what == "memory":
        memory(a.minutes)
    elif a.what == "flicker":
        flicker(a.alpha, a.source, a.clips, a.frames, a.fps)
    else:
        _memory_child(a.clip, a.out)


if __name__ == "__main__":
    main()
