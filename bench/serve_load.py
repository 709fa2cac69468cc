"""``pixelwise serve`` under load, on loopback: throughput and latency below the queue limit, clean
503s above it, the server's memory back to its baseline, and served ÷ raw images per second.

    python bench/serve_load.py                                  # the bundled camvid model
    python bench/serve_load.py --model runs/camvid_unet/best.ckpt --device cuda
    python bench/serve_load.py --requests 80 --overload-requests 160      # a quick check

Each phase starts ``pixelwise serve`` in a subprocess (``python -m pixelwise serve``) on a free port of
127.0.0.1 with a random bearer token, waits for ``/readyz``, and drives it with asyncio clients
(httpx, one connection each) that POST CamVid-size PNGs as raw bodies: real CamVid test images from
``../shared/data/camvid/test`` when present (``--images``), else seeded random 360×480 PNGs.

*below the limit* — ``--clients`` clients send ``--requests`` requests (after a warm-up) to a server
with ``--queue-size``; every answer must be 200. Reports images/s (200s ÷ wall time), latency
percentiles, the count by status and the mean batch the server formed (from ``/metrics``).

*raw* — the same model loaded in this process as a ``Segmenter`` (same device, same defaults as the
server), ``segment_batch`` on the same images decoded beforehand (decoding excluded), in batches of
the sizes the server formed in the phase above (from its ``pixelwise_batch_size`` histogram), while
no server runs. ``served ÷ raw`` is the share of the model's own speed the service delivers
(target ≥ 0.8).

*above the limit* — a fresh server with ``--overload-queue-size``, ``--overload-clients`` clients
sending ``--overload-requests`` requests back to back (a 503 is not waited out). Every 503 must be
clean (a ``Retry-After`` of whole seconds and a JSON ``{"error": ...}`` body), no other 5xx but 504
and no broken connection; afterwards ``/healthz`` and a normal request must still succeed, and the
server's resident memory (psutil, else ``/proc/<pid>/status``) must come back to within
``max(32 MiB, 10 %)`` of its warm idle value after ``--settle`` seconds.

Everything is bounded by ``--time-limit`` seconds. Markdown on stdout; the exit status is 1 when a
check fails (the served ÷ raw target is reported, not enforced), else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import platform
import secrets
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CAMVID_TEST = ROOT.parent / "shared" / "data" / "camvid" / "test"
SIZE = (360, 480)  # CamVid frames, height × width
MIB = 1 << 20


# ---- images ---------------------------------------------------------------------------------------


def _images(folder: Path, count: int) -> tuple[list[bytes], str]:
    """``count`` PNG bodies: the folder's first PNGs (by name), else seeded random frames."""
    files = sorted(folder.glob("*.png"))[:count] if folder.is_dir() else []
    if files:
        bodies = [f.read_bytes() for f in files]
        where = os.path.relpath(folder, Path.cwd())
        return bodies, f"{len(bodies)} CamVid test images from `{where}`"
    rng = np.random.default_rng(0)
    bodies = []
    for _ in range(count):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)).save(buf, format="PNG")
        bodies.append(buf.getvalue())
    return bodies, f"{count} random {SIZE[0]}×{SIZE[1]} PNGs ({folder} not found)"


def _describe(bodies: list[bytes]) -> str:
    sizes = Counter(Image.open(io.BytesIO(b)).size for b in bodies)
    shapes = ", ".join(f"{h}×{w}" for (w, h) in sizes)  # height × width, as SIZE
    return f"{shapes} PNG, {statistics.mean(len(b) for b in bodies) / 1024:.0f} KiB mean"


# ---- the server -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss(pid: int) -> int:
    """Resident memory of process ``pid`` in bytes."""
    try:
        import psutil
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS in /proc/{pid}/status") from None
    return psutil.Process(pid).memory_info().rss


class _RssPeak(threading.Thread):
    """Samples a process's resident memory every ``interval`` seconds until stopped; keeps the most."""

    def __init__(self, pid: int, interval: float = 0.02):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak = _rss(pid)
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            with contextlib.suppress(OSError, RuntimeError):
                self.peak = max(self.peak, _rss(self.pid))

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak


@dataclass(frozen=True)
class ServerArgs:
    model: str
    device: str
    max_batch: int
    batch_wait_ms: float
    queue_size: int
    timeout: float

    def flags(self) -> list[str]:
        return [
            "--model", self.model,
            "--device", self.device,
            "--max-batch", str(self.max_batch),
            "--batch-wait-ms", f"{self.batch_wait_ms:g}",
            "--queue-size", str(self.queue_size),
            "--timeout", f"{self.timeout:g}",
        ]  # fmt: skip


class Server:
    """``python -m pixelwise serve`` in a subprocess on a free loopback port, with a random token
    (``token=False``: none); ``extra``: more ``serve`` flags; ``env``: more environment."""

    def __init__(
        self,
        args: ServerArgs,
        *,
        token: bool = True,
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ):
        self.args = args
        self.token = secrets.token_urlsafe(24) if token else ""
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.TemporaryFile(mode="w+b")
        cmd = [sys.executable, "-m", "pixelwise", "serve", *args.flags(), *extra]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        environ = {k: v for k, v in os.environ.items() if k != "PIXELWISE_TOKEN"} | (env or {})
        if token:
            environ["PIXELWISE_TOKEN"] = self.token
        self.proc = subprocess.Popen(cmd, env=environ, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def log_tail(self, lines: int = 20) -> str:
        self._log.seek(0)
        return "\n".join(self._log.read().decode(errors="replace").splitlines()[-lines:])

    def wait_ready(self, deadline: float) -> float:
        """Poll ``/readyz`` until 200; the seconds it took. Raises if the server dies or time runs out."""
        start = time.monotonic()
        with httpx.Client(base_url=self.url, headers=self.headers, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"the server exited with {self.proc.returncode}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("/readyz", timeout=2.0).status_code == 200:
                        return time.monotonic() - start
                time.sleep(0.2)
        raise RuntimeError(f"the server was not ready before the time limit:\n{self.log_tail()}")

    def rss(self) -> int:
        return _rss(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@contextlib.contextmanager
def _serving(args: ServerArgs, deadline: float) -> Iterator[Server]:
    server = Server(args)
    try:
        server.wait_ready(deadline)
        yield server
    finally:
        server.stop()


# ---- the clients ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    status: int | None  # None: no answer (connection error, client timeout)
    seconds: float
    clean_503: bool = False
    error: str = ""


def _clean_503(response: httpx.Response) -> bool:
    """A 503 as the service means it: Retry-After in whole seconds and a JSON error body."""
    try:
        body = response.json()
    except ValueError:
        return False
    retry = response.headers.get("retry-after", "")
    return retry.isdigit() and int(retry) >= 1 and isinstance(body.get("error"), str)


async def _drive(
    server: Server,
    bodies: list[bytes],
    *,
    requests: int,
    clients: int,
    deadline: float,
    timeout: float,
) -> tuple[list[Result], float]:
    """``clients`` concurrent clients sending ``requests`` POSTs between them (until ``deadline``);
    the results and the wall time."""
    results: list[Result] = []
    sent = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {**server.headers, "Content-Type": "image/png"}

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < requests and time.monotonic() < deadline:
            body = bodies[sent % len(bodies)]
            sent += 1
            start = time.perf_counter()
            try:
                r = await http.post("/v1/segment", content=body, headers=headers)
            except httpx.HTTPError as exc:
                results.append(Result(None, time.perf_counter() - start, error=type(exc).__name__))
                continue
            seconds = time.perf_counter() - start
            results.append(Result(r.status_code, seconds, r.status_code == 503 and _clean_503(r)))

    async with httpx.AsyncClient(
        base_url=server.url, limits=limits, timeout=timeout, trust_env=False
    ) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return results, time.perf_counter() - start


def _run(server: Server, bodies: list[bytes], **kw: object) -> tuple[list[Result], float]:
    return asyncio.run(_drive(server, bodies, **kw))  # type: ignore[arg-type]


def _metrics(server: Server) -> dict[str, float]:
    """``/metrics`` as {"name{labels}": value}."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{server.url}/metrics", headers=server.headers, trust_env=False).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def _batch_counts(before: dict[str, float], after: dict[str, float]) -> Counter[int]:
    """Forward passes by batch size between two scrapes, from the cumulative histogram buckets
    (exact up to 16; beyond, a bucket's passes are counted at its upper bound)."""
    bounds = sorted(
        float(k.split("le=")[1].rstrip("}"))
        for k in after
        if k.startswith("pixelwise_batch_size_bucket") and "+Inf" not in k
    )
    counts: Counter[int] = Counter()
    below = 0.0
    for b in bounds:
        key = f"pixelwise_batch_size_bucket{{le={b}}}"
        cum = after.get(key, 0.0) - before.get(key, 0.0)
        if cum - below > 0:
            counts[int(b)] = int(round(cum - below))
        below = cum
    return counts


# ---- the raw model --------------------------------------------------------------------------------


def _raw(
    args: ServerArgs, bodies: list[bytes], batches: Counter[int], images: int, deadline: float
) -> tuple[float, int, str]:
    """Images per second of ``Segmenter.segment_batch`` in this process, in batches of the sizes
    the server formed, scaled to about ``images`` images; the images done and the device.

    Timed in a worker thread, as the server predicts in its batcher thread: on a busy CPU, OpenMP
    in a process's main thread can be several times slower than in another thread (seen on the
    2-core development machine next to a training job), which would flatter the server."""
    from pixelwise.engine import Segmenter
    from pixelwise.serve.limits import decode

    seg = Segmenter.from_checkpoint(args.model, device=args.device)
    arrays = [
        decode(b, max_pixels=1 << 40, channels=seg.meta.in_channels) for b in bodies
    ]  # decoding excluded from the timing
    served = sum(size * n for size, n in batches.items()) or 1
    scale = images / served
    sizes = []
    for size, n in sorted(batches.items(), reverse=True):
        sizes += [size] * max(1, round(n * scale))
    timed = {"done": 0, "seconds": 0.0}

    def work() -> None:
        for size in sorted(set(sizes)):  # warm-up, one pass per size
            seg.segment_batch([arrays[i % len(arrays)] for i in range(size)])
        k = 0
        for size in sizes:
            if time.monotonic() > deadline:
                break
            batch = [arrays[(k + i) % len(arrays)] for i in range(size)]
            k += size
            start = time.perf_counter()
            seg.segment_batch(batch)
            timed["seconds"] += time.perf_counter() - start
            timed["done"] += size

    worker = threading.Thread(target=work, name="raw-model")
    worker.start()
    worker.join()
    done, seconds = int(timed["done"]), timed["seconds"]
    return done / seconds if seconds else float("nan"), done, str(seg.device)


# ---- report ---------------------------------------------------------------------------------------


def _ms(values: list[float], q: float) -> str:
    return f"{np.percentile(np.asarray(values) * 1000, q):.0f}" if values else "–"


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f", {kib / (1 << 20):.0f} GiB"
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (
        f"{platform.machine()} {cpu}, {os.cpu_count()} cores{mem}{gpu}; Python "
        f"{platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )


def _status_rows(results: list[Result]) -> list[str]:
    by: dict[str, list[Result]] = {}
    for r in results:
        by.setdefault(
            str(r.status) if r.status is not None else f"no answer ({r.error})", []
        ).append(r)
    rows = ["| status | count | share | p50 ms | p99 ms |", "| --- | ---: | ---: | ---: | ---: |"]
    for status in sorted(by):
        rs = by[status]
        secs = [r.seconds for r in rs]
        rows.append(
            f"| {status} | {len(rs)} | {len(rs) / len(results):.1%} | {_ms(secs, 50)} | "
            f"{_ms(secs, 99)} |"
        )
    return rows


# ---- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="camvid", help="bundled name, .ckpt or .onnx")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--images", type=Path, default=CAMVID_TEST, help="folder of PNG frames")
    ap.add_argument("--num-images", type=int, default=32, help="distinct images sent")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--max-batch", type=int, default=1, help="the server's CPU default; 8 on CUDA")
    ap.add_argument("--batch-wait-ms", type=float, default=5.0)
    ap.add_argument("--queue-size", type=int, default=32)
    ap.add_argument("--timeout", type=float, default=30.0, help="the server's --timeout")
    ap.add_argument("--raw-images", type=int, default=None, help="default: --requests")
    ap.add_argument("--overload-clients", type=int, default=64)
    ap.add_argument("--overload-queue-size", type=int, default=4)
    ap.add_argument("--overload-requests", type=int, default=640)
    ap.add_argument("--settle", type=float, default=3.0, help="idle seconds before 'after' RSS")
    ap.add_argument("--no-overload", action="store_true")
    ap.add_argument("--time-limit", type=float, default=900.0, help="seconds for everything")
    args = ap.parse_args(argv)
    if args.clients > args.queue_size:
        ap.error("--clients must not exceed --queue-size: that phase stays below the limit")
    deadline = time.monotonic() + args.time_limit
    request_timeout = args.timeout + 30.0
    import pixelwise

    bodies, source = _images(args.images, args.num_images)
    normal = ServerArgs(
        args.model, args.device, args.max_batch, args.batch_wait_ms, args.queue_size, args.timeout
    )
    checks: list[tuple[str, bool, str]] = []
    command = shlex.join(["python", "bench/serve_load.py", *(argv or sys.argv[1:])])
    out = [
        "# pixelwise serve under load",
        "",
        f"    {command}",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {_machine()}; "
        f"pixelwise {pixelwise.__version__}.",
        "",
        f"Model `{args.model}`, `--device {args.device}`; {source} ({_describe(bodies)}), sent as "
        "raw `image/png` bodies to `POST /v1/segment` (defaults: class-index PNG answer, no CRF, "
        f"no TTA); server `--max-batch {args.max_batch} --batch-wait-ms {args.batch_wait_ms:g} "
        f"--timeout {args.timeout:g}` on 127.0.0.1 with a bearer token, one process; time limit "
        f"{args.time_limit:g} s.",
    ]

    # ---- below the queue limit ----
    warmup = max(args.clients, 2 * args.max_batch)
    with _serving(normal, deadline) as server:
        _run(server, bodies, requests=warmup, clients=args.clients, deadline=deadline,
             timeout=request_timeout)  # fmt: skip
        before = _metrics(server)
        results, wall = _run(
            server,
            bodies,
            requests=args.requests,
            clients=args.clients,
            deadline=deadline,
            timeout=request_timeout,
        )
        batches = _batch_counts(before, _metrics(server))
    ok = [r for r in results if r.status == 200]
    served = len(ok) / wall if wall else float("nan")
    lat = [r.seconds for r in ok]
    passes = sum(batches.values())
    mean_batch = sum(s * n for s, n in batches.items()) / passes if passes else float("nan")
    bad = len(results) - len(ok)
    checks.append(
        (
            f"below the limit ({args.clients} clients, `--queue-size {args.queue_size}`): "
            "every request answered 200",
            bad == 0 and len(results) == args.requests,
            f"{len(ok)} of {args.requests} ({bad} errors"
            + (", time limit reached" if len(results) < args.requests else "")
            + ")",
        )
    )

    # ---- raw ----
    raw_images = args.raw_images if args.raw_images is not None else args.requests
    raw, raw_done, device = _raw(normal, bodies, batches, raw_images, deadline)
    ratio = served / raw if raw else float("nan")
    split = ", ".join(f"{n} × {s}" for s, n in sorted(batches.items(), reverse=True))
    out += [
        "",
        f"## Below the queue limit: {args.clients} clients, `--queue-size {args.queue_size}`",
        "",
        f"{len(results)} requests after {warmup} warm-up requests, in {wall:.1f} s; the server "
        f"formed {passes} forward passes (passes × images: {split or '–'}), "
        f"{mean_batch:.2f} images per pass on average. *Raw*: `Segmenter.segment_batch` on the "
        f"same images decoded beforehand, in a worker thread of this process on `{device}` (as "
        f"the server runs it) while no server ran, {raw_done} images in batches of the same "
        "sizes.",
        "",
        "| served img/s | raw img/s | served ÷ raw | p50 ms | p95 ms | p99 ms | mean batch |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {served:.2f} | {raw:.2f} | **{ratio:.2f}** | {_ms(lat, 50)} | {_ms(lat, 95)} | "
        f"{_ms(lat, 99)} | {mean_batch:.2f} |",
        "",
        *_status_rows(results),
    ]

    # ---- above the queue limit ----
    if not args.no_overload:
        over = ServerArgs(
            args.model,
            args.device,
            args.max_batch,
            args.batch_wait_ms,
            args.overload_queue_size,
            args.timeout,
        )
        with _serving(over, deadline) as server:
            _run(server, bodies, requests=args.max_batch, clients=args.max_batch,
                 deadline=deadline, timeout=request_timeout)  # fmt: skip
            time.sleep(1.0)
            rss_before = server.rss()
            sampler = _RssPeak(server.proc.pid)
            sampler.start()
            results, wall = _run(
                server,
                bodies,
                requests=args.overload_requests,
                clients=args.overload_clients,
                deadline=deadline,
                timeout=request_timeout,
            )
            rss_peak = sampler.stop()
            with httpx.Client(base_url=server.url, trust_env=False, timeout=10.0) as http:
                try:
                    health = http.get("/healthz").status_code
                    after = http.post(
                        "/v1/segment",
                        content=bodies[0],
                        headers={**server.headers, "Content-Type": "image/png"},
                        timeout=request_timeout,
                    ).status_code
                except httpx.HTTPError as exc:
                    health = after = type(exc).__name__  # type: ignore[assignment]
            time.sleep(args.settle)
            rss_after = server.rss()
            alive = server.proc.poll() is None
        counts = Counter(r.status for r in results)
        n503 = counts[503]
        clean = sum(r.clean_503 for r in results)
        other_5xx = sum(
            n for s, n in counts.items() if s is not None and s >= 500 and s not in (503, 504)
        )
        broken = counts[None]
        tolerance = max(32 * MIB, 0.10 * rss_before)
        out += [
            "",
            f"## Above the queue limit: {args.overload_clients} clients, "
            f"`--queue-size {args.overload_queue_size}`",
            "",
            f"{len(results)} requests back to back (a 503 is not waited out) in {wall:.1f} s, "
            f"at most {args.overload_queue_size} + {args.max_batch} admitted at once; "
            f"{n503} answered 503, {clean} of them clean (`Retry-After` in whole seconds and a "
            f"JSON error): {clean / max(1, len(results)):.1%} of all answers.",
            "",
            *_status_rows(results),
            "",
            "| server RSS | MiB |",
            "| --- | ---: |",
            f"| before (warm, idle) | {rss_before / MIB:.0f} |",
            f"| peak (sampled every 20 ms) | {rss_peak / MIB:.0f} |",
            f"| after ({args.settle:g} s idle) | {rss_after / MIB:.0f} |",
        ]
        checks += [
            ("above the limit: the queue filled (some 503s)", n503 > 0, f"{n503} × 503"),
            ("every 503 clean", clean == n503, f"{clean} of {n503}"),
            ("no 5xx but 503 / 504", other_5xx == 0, f"{other_5xx} others"),
            ("no broken connection", broken == 0, f"{broken} without an answer"),
            ("`/healthz` answers afterwards", health == 200 and alive, f"{health}"),
            ("a normal request succeeds afterwards", after == 200, f"{after}"),
            (
                "memory back to baseline (within max(32 MiB, 10 %))",
                rss_after - rss_before <= tolerance,
                f"{(rss_after - rss_before) / MIB:+.0f} MiB after, "
                f"{(rss_peak - rss_before) / MIB:+.0f} MiB at peak",
            ),
        ]

    out += ["", "## Checks", "", "| check | result | |", "| --- | --- | --- |"]
    out += [
        f"| {name} | {'pass' if good else '**FAIL**'} | {detail} |" for name, good, detail in checks
    ]
    target = "met" if ratio >= 0.8 else "**missed**"
    out.append(f"| served ÷ raw ≥ 0.8 (target, not enforced) | {target} | {ratio:.2f} |")
    print("\n".join(out))
    return 0 if all(good for _, good, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
