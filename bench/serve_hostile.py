"""``pixelwise serve`` against hostile clients (issue 19): slow uploads, and many large 16-bit images
decoded at once.

    python bench/serve_hostile.py                   # about 2.5 minutes on 2 CPU cores

A tiny model (a U-Net with 2 base channels and depth 1, random weights, saved as a checkpoint in a
temporary folder) keeps the model's own cost out of the way: what is measured is the service.
Every server is ``python -m pixelwise serve`` in a subprocess on 127.0.0.1 without a token (the
default loopback setup), with its defaults but the flags named below.

*(i) slow uploads* — legitimate clients (``--clients``, from 127.0.0.1, one connection each) POST a
small PNG back to back, under three conditions that take turns in windows of ``--window`` seconds,
``--rounds`` times (so that other work on the machine weighs on each alike): no slow clients (the
unloaded rate); 33 slow clients from 33 loopback addresses (127.0.0.2 to 127.0.0.34: 33 machines);
33 from 127.0.0.2 alone (one machine: ``--max-uploads-per-client 8`` reads eight at a time, the
others wait unread). Each slow client (in a process of its own) sends a 100,000-byte upload's
headers, then one byte a second, and reconnects as soon as the server answers or closes. The server
runs with ``--timeout 2`` (so that the upload timeout comes round, and the slow clients reconnect,
within every window) and ``OMP_NUM_THREADS=1`` (OpenMP
threads spinning against the clients on 2 cores made the rate swing tenfold between windows).
Target: the loaded rates ≥ 80 % of the unloaded one.

*(ii) decode memory* — a fresh server with its defaults gets one 16-bit 4096 × 4096 grayscale PNG (a
smooth ramp, about 40 KiB) alone, then 33 at once from 33 addresses. Predicting such an image takes
the tiny model some 20 s on 2 busy cores (sliding windows), so most of the 33 time out (504) or
find no room to decode in time (503): what is measured is memory. The server's peak resident memory
(``VmHWM`` of ``/proc/PID/status``, reset through ``/proc/PID/clear_refs`` before each part) is
compared with the ceiling the decode budget implies: the peak of one request alone (its decoding,
prediction and answer) plus ``--decode-memory-mb`` (more decoding and the decoded images waiting).
Then the same 33 against a fresh server with ``--decode-memory-mb 100000`` (no budget in effect),
for comparison.

Markdown on stdout; exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import multiprocessing as mp
import shlex
import sys
import tempfile
import threading
import time
from collections import Counter
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import MIB, Server, ServerArgs, _machine, _metrics  # noqa: E402

SLOW = 33  # the attackers: --queue-size 32 + --max-batch 1
SLOW_LENGTH = 100_000  # the length a slow client declares
DECODE_BUDGET_MB = 1024  # the server's default --decode-memory-mb


# ---- the model and the images ---------------------------------------------------------------------


def _tiny_checkpoint(folder: Path) -> Path:
    import torch

    import pixelwise
    from pixelwise.engine.checkpoint import ModelMeta, save_checkpoint

    kwargs = {"base_channels": 2, "depth": 1}
    torch.manual_seed(0)
    model = pixelwise.create_model("unet", num_classes=3, in_channels=3, **kwargs)
    classes = {"a": [0, 0, 0], "b": [255, 0, 0], "c": [0, 255, 0]}
    meta = ModelMeta("unet", 3, 3, [*classes], [*classes.values()], [0.5] * 3, [0.25] * 3, kwargs)
    path = folder / "tiny.ckpt"
    save_checkpoint(path, {"meta": meta.to_dict(), "model": model.state_dict()})
    return path


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _small_png() -> bytes:
    return _png(np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8))


def _png16(side: int) -> bytes:
    """A 16-bit grayscale ``side`` × ``side`` PNG: a smooth ramp, which compresses to a few KiB."""
    ramp = np.linspace(0, 65535, side, dtype=np.float64).astype(np.uint16)
    return _png(np.broadcast_to(ramp, (side, side)).copy())


# ---- the slow clients (a process of their own) ----------------------------------------------------


async def _trickle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, active: Event
) -> str:
    """One byte a second until the server answers (its status), closes the connection, or
    ``active`` is cleared."""
    while active.is_set():
        try:
            writer.write(b"\x89")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 1.0)
        except asyncio.TimeoutError:
            continue
        except OSError:
            return "reset"
        return line.split()[1].decode() if len(line.split()) > 1 else "closed"
    return "still sending when the window closed"


async def _slow_client(
    address: str, port: int, active: Event, stats: Counter[str], connected: Synchronized
) -> None:
    """Connect from ``address``, send the headers, trickle; again at once, while ``active``."""
    head = (
        f"POST /v1/segment HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: image/png\r\n"
        f"Content-Length: {SLOW_LENGTH}\r\n\r\n"
    ).encode()
    while active.is_set():
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(address, 0)
            )
        except OSError:
            stats["connect failed"] += 1
            await asyncio.sleep(0.1)
            continue
        stats["connections"] += 1
        connected.value += 1
        writer.write(head)
        stats[await _trickle(reader, writer, active)] += 1
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        connected.value -= 1


def _attack(
    name: str,
    port: int,
    addresses: list[str],
    active: Event,
    stop: Event,
    connected: Synchronized,
    out: mp.Queue,
) -> None:
    """Slow clients from ``addresses`` while ``active`` is set, until ``stop``; then ``name`` and
    their counts go to ``out``. A process of its own, so that they do not share the legitimate
    clients' CPU time slice."""

    async def main() -> Counter[str]:
        stats: Counter[str] = Counter()
        while not stop.is_set():
            if active.is_set():
                await asyncio.gather(
                    *(_slow_client(a, port, active, stats, connected) for a in addresses)
                )
            await asyncio.sleep(0.05)
        return stats

    out.put((name, dict(asyncio.run(main()))))


# ---- legitimate clients ---------------------------------------------------------------------------


async def _legit(
    url: str, bodies: list[bytes], clients: int, seconds: float, addresses: list[str] | None = None
) -> tuple[Counter[object], float]:
    """``clients`` clients POSTing back to back for ``seconds`` (or each body once, when
    ``seconds`` is 0), each from its own address when ``addresses`` are given; answers by status
    and the wall time."""
    counts: Counter[object] = Counter()
    stop = time.monotonic() + seconds
    queue = list(bodies)

    def more() -> bool:
        return time.monotonic() < stop if seconds else bool(queue)

    async def one(address: str) -> None:
        transport = httpx.AsyncHTTPTransport(local_address=address)
        async with httpx.AsyncClient(
            base_url=url, transport=transport, timeout=300.0, trust_env=False
        ) as http:
            while more():
                body = bodies[0] if seconds else queue.pop()
                try:
                    r = await http.post(
                        "/v1/segment", content=body, headers={"Content-Type": "image/png"}
                    )
                    counts[r.status_code] += 1
                except httpx.HTTPError as exc:
                    counts[type(exc).__name__] += 1

    start = time.perf_counter()
    await asyncio.gather(*(one(addresses[i] if addresses else "127.0.0.1") for i in range(clients)))
    return counts, time.perf_counter() - start


def _rate(counts: Counter[object], wall: float) -> float:
    return counts[200] / wall if wall else float("nan")


def _statuses(counts: Counter[object]) -> str:
    return ", ".join(f"{n} × {s}" for s, n in sorted(counts.items(), key=lambda kv: str(kv[0])))


def _slow_uploads(model: Path, args: argparse.Namespace, deadline: float) -> tuple[list, list]:
    """Part (i): rows of the table and checks. The three conditions (no slow clients, 33 from 33
    addresses, 33 from one) take turns in windows of ``--window`` seconds, ``--rounds`` times, so
    that other work on the machine weighs on each alike."""
    body = _small_png()
    one_thread = {"OMP_NUM_THREADS": "1"}  # no OpenMP spinning against the clients on 2 cores
    server = Server(ServerArgs(str(model), "cpu", 1, 5.0, 32, 2.0), token=False, env=one_thread)
    ctx = mp.get_context("spawn")
    stop, results = ctx.Event(), ctx.Queue()
    spread = [f"127.0.0.{i}" for i in range(2, 2 + SLOW)]
    conditions = {
        "none": None,
        f"{SLOW} from {SLOW} addresses": spread,
        f"{SLOW} from one address": ["127.0.0.2"] * SLOW,
    }
    attackers = {}
    for name, addresses in conditions.items():
        if addresses is not None:
            active, connected = ctx.Event(), ctx.Value("i", 0)
            proc = ctx.Process(
                target=_attack,
                args=(name, server.port, addresses, active, stop, connected, results),
            )
            proc.start()
            attackers[name] = (active, connected, proc)
    totals = {name: (Counter(), 0.0) for name in conditions}
    try:
        server.wait_ready(deadline)
        asyncio.run(_legit(server.url, [body], args.clients, 2.0))  # warm-up
        for _ in range(args.rounds):
            for name in conditions:
                if name in attackers:
                    active, connected, _proc = attackers[name]
                    active.set()
                    end = time.monotonic() + 30
                    while connected.value < SLOW and time.monotonic() < end:
                        time.sleep(0.05)
                    time.sleep(1.0)  # they trickle
                counts, wall = asyncio.run(_legit(server.url, [body], args.clients, args.window))
                if name in attackers:
                    attackers[name][0].clear()
                    time.sleep(1.5)  # they hang up
                total, seconds = totals[name]
                totals[name] = (total + counts, seconds + wall)
    finally:
        stop.set()
        for active, _connected, _proc in attackers.values():
            active.clear()
        slow = dict(results.get(timeout=30) for _ in attackers)
        for _active, _connected, proc in attackers.values():
            proc.join(10)
        server.stop()
    unloaded = _rate(*totals["none"])
    rows, checks = [], []
    for name, (counts, wall) in totals.items():
        rate = _rate(counts, wall)
        stats = _slow_stats(slow.get(name))
        rows.append((name, f"{rate:.1f}", f"{rate / unloaded:.2f}", _statuses(counts), stats))
        if name != "none":
            good = rate >= 0.8 * unloaded
            checks.append(
                (f"(i) {name}: ≥ 80 % of the unloaded rate", good, f"{rate / unloaded:.2f}")
            )
    return rows, checks


def _slow_stats(stats: dict[str, int] | None) -> str:
    if stats is None:
        return "–"
    return ", ".join(f"{n} {s}" for s, n in sorted(stats.items()))


# ---- decode memory --------------------------------------------------------------------------------


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/{pid}/status")


class _GaugePeak(threading.Thread):
    """The most ``pixelwise_decode_bytes`` seen in ``/metrics`` (every 0.2 s) until stopped."""

    def __init__(self, server: Server):
        super().__init__(daemon=True)
        self.server, self.peak, self._done = server, 0.0, threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.2):
            with contextlib.suppress(httpx.HTTPError):
                self.peak = max(self.peak, _metrics(self.server)["pixelwise_decode_bytes{}"])

    def stop(self) -> float:
        self._done.set()
        self.join()
        return self.peak


def _flood(server: Server, big: bytes) -> tuple[Counter[object], float, float, float, float]:
    """33 uploads of ``big`` at once, each from its own address: the answers, the wall time, the
    server's peak and final RSS (MiB) and the most ``pixelwise_decode_bytes`` seen (MiB)."""
    _reset_peak(server.proc.pid)
    gauge = _GaugePeak(server)
    gauge.start()
    addresses = [f"127.0.0.{i}" for i in range(2, 2 + SLOW)]
    counts, wall = asyncio.run(_legit(server.url, [big] * SLOW, SLOW, 0, addresses))
    held = gauge.stop() / MIB
    peak = _status_kib(server.proc.pid, "VmHWM") / 1024
    return counts, wall, peak, _status_kib(server.proc.pid, "VmRSS") / 1024, held


def _decode_memory(model: Path, deadline: float) -> tuple[list, list, str]:
    """Part (ii): rows of the table, checks, and a line on the image. Then the same without a
    budget worth the name (``--decode-memory-mb 100000``), for comparison."""
    big = _png16(4096)
    server = Server(ServerArgs(str(model), "cpu", 1, 5.0, 32, 30.0), token=False)
    try:
        server.wait_ready(deadline)
        pid = server.proc.pid
        idle = _status_kib(pid, "VmRSS") / 1024
        _reset_peak(pid)
        alone, wall = asyncio.run(_legit(server.url, [big], 1, 0))
        one = _status_kib(pid, "VmHWM") / 1024
        rows = [("1 alone", "1024", _statuses(alone), f"{wall:.1f}", f"{idle:.0f}", f"{one:.0f}")]
        counts, wall, peak, after, held = _flood(server, big)
        small, _ = asyncio.run(_legit(server.url, [_small_png()], 1, 0))
    finally:
        server.stop()
    rows.append(
        (
            f"{SLOW} at once",
            "1024",
            _statuses(counts),
            f"{wall:.1f}",
            f"{after:.0f} after",
            f"{peak:.0f}",
            f"{held:.0f}",
        )  # fmt: skip
    )
    rows[0] += ("–",)
    unbounded = Server(
        ServerArgs(str(model), "cpu", 1, 5.0, 32, 30.0), token=False,
        extra=("--decode-memory-mb", "100000"),
    )  # fmt: skip
    try:
        unbounded.wait_ready(deadline)
        free, free_wall, free_peak, free_after, free_held = _flood(unbounded, big)
    finally:
        unbounded.stop()
    rows.append(
        (
            f"{SLOW} at once",
            "100000",
            _statuses(free),
            f"{free_wall:.1f}",
            f"{free_after:.0f} after",
            f"{free_peak:.0f}",
            f"{free_held:.0f}",
        )  # fmt: skip
    )
    ceiling = one + DECODE_BUDGET_MB
    errors = sum(n for s, n in counts.items() if s not in (200, 503, 504))
    checks = [
        ("(ii) no answers but 200, 503, 504", errors == 0, _statuses(counts)),
        ("(ii) a small image afterwards: 200", small[200] == 1, _statuses(small)),
        (
            f"(ii) peak RSS ≤ one request's peak + --decode-memory-mb {DECODE_BUDGET_MB}",
            peak <= ceiling,
            f"{peak:.0f} MiB ≤ {one:.0f} + {DECODE_BUDGET_MB} = {ceiling:.0f} MiB",
        ),
    ]
    what = f"16-bit grayscale 4096 × 4096 PNG of {len(big) / 1024:.0f} KiB"
    return rows, checks, what


# ---- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=4, help="legitimate clients in part (i)")
    ap.add_argument("--window", type=float, default=4.0, help="seconds of one window in (i)")
    ap.add_argument("--rounds", type=int, default=3, help="windows of each condition in (i)")
    ap.add_argument("--time-limit", type=float, default=300.0)
    args = ap.parse_args(argv)
    deadline = time.monotonic() + args.time_limit
    command = shlex.join(["python", "bench/serve_hostile.py", *(argv or sys.argv[1:])])
    with tempfile.TemporaryDirectory() as tmp:
        model = _tiny_checkpoint(Path(tmp))
        slow_rows, checks = _slow_uploads(model, args, deadline)
        memory_rows, more, what = _decode_memory(model, deadline)
    checks += more
    out = [
        "# pixelwise serve against hostile clients",
        "",
        f"    {command}",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {_machine()}.",
        "",
        f"### (i) Slow uploads: {args.clients} legitimate clients, {args.rounds} × "
        f"{args.window:g} s windows of each condition, taking turns",
        "",
        "Tiny U-Net (2 base channels, depth 1), 96 × 128 RGB PNGs; server defaults (`--max-batch 1"
        " --queue-size 32`: capacity 33, `--max-uploads-per-client 8`) with `--timeout 2` and "
        f"`OMP_NUM_THREADS=1`. Slow clients declare {SLOW_LENGTH} bytes and send one a second, "
        "reconnecting at once.",
        "",
        "| slow clients | legitimate img/s | ÷ unloaded | legitimate answers | slow clients' "
        "connections and answers |",
        "| --- | ---: | ---: | --- | --- |",
        *(f"| {' | '.join(row)} |" for row in slow_rows),
        "",
        f"### (ii) Decode memory: {what}",
        "",
        "Server defaults (`--decode-memory-mb 1024 --timeout 30`), then a fresh server with "
        "`--decode-memory-mb 100000` (no budget in effect) for comparison; each upload from its "
        "own address.",
        "",
        "| uploads | `--decode-memory-mb` | answers | wall s | RSS MiB (idle / after) | peak RSS "
        "(VmHWM) MiB | most `pixelwise_decode_bytes` MiB |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
        *(f"| {' | '.join(row)} |" for row in memory_rows),
        "",
        "| check | result | |",
        "| --- | --- | --- |",
        *(f"| {name} | {'pass' if ok else '**FAIL**'} | {detail} |" for name, ok, detail in checks),
    ]
    print("\n".join(out))
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
