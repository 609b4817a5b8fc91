"""clients.compare against the real gateway: counts equal what was published, ids match."""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
import sys
from pathlib import Path

import pytest

from clients.compare import TRANSPORTS, Report, TransportResult, compare, latency_figure
from tests.helpers import TIMEOUT, start_gateway, wait_for

ROOT = Path(__file__).resolve().parent.parent


def _key(message_id: str) -> tuple[int, int]:
    ms, _, seq = message_id.partition("-")
    return int(ms), int(seq)


async def test_compare_live_counts_equal_published() -> None:
    """All five clients, started together, see every message published during the run."""
    async with start_gateway(topics=("news",)) as gw:
        published: list[str] = []

        async def publisher() -> None:
            for i in range(40):
                published.append(await gw.publish("news", {"i": i}))

        progress: list[dict[str, int]] = []
        run = asyncio.create_task(
            compare(
                gw.url,
                "news",
                1.0,
                transports=TRANSPORTS,
                drain_timeout=TIMEOUT,
                progress=lambda _t, rs: progress.append({r.name: r.messages for r in rs}),
                progress_interval=0.2,
            )
        )
        await publisher()
        async with asyncio.timeout(TIMEOUT + 5):
            report = await run
    # Everything published after the start id and up to the last id when the time
    # was up, in order.
    assert report.since is not None and report.until is not None
    start, end = _key(report.since), _key(report.until)
    expected = [i for i in published if start < _key(i) <= end]
    assert expected, "nothing was published within the run"
    for r in report.results:
        assert r.error is None, (r.name, r.error)
        assert r.ids == expected, r.name
        assert r.reconnects == 0 and r.gaps == 0
        assert r.first_message_ms is not None and r.first_message_ms > 0
        assert r.percentile(50) is not None and r.percentile(99) is not None
        assert r.bytes_per_message is not None and r.bytes_per_message > 50
    assert report.same_ids
    assert progress and set(progress[-1]) == set(TRANSPORTS)
    figures = report.to_json()
    assert figures["same_ids"] is True
    assert {t: f["messages"] for t, f in figures["transports"].items()} == dict.fromkeys(
        TRANSPORTS, len(expected)
    )
    table = report.table()
    assert "same id sequence on every transport: yes" in table
    for name in TRANSPORTS:
        assert f"\n{name} " in table


async def test_compare_survives_drops() -> None:
    async with start_gateway(topics=("news",), retry_ms=20) as gw:
        published = await gw.publish_many("news", [{"i": i} for i in range(30)])
        run = asyncio.create_task(
            compare(gw.url, "news", 1.0, since="0-0", drain_timeout=TIMEOUT, progress_interval=0.1)
        )
        # Let every transport connect and read, then cut them all.
        await wait_for(
            lambda: sum(gw.context.hub.subscriber_counts("news").values()) >= 3,
            what="three subscribers",
        )
        assert gw.drop_all() >= 3
        published += await gw.publish_many("news", [{"i": i} for i in range(30, 60)])
        async with asyncio.timeout(TIMEOUT + 5):
            report = await run
    assert report.until == published[-1]
    for r in report.results:
        assert r.error is None, (r.name, r.error)
        assert r.ids == published, r.name
        assert r.reconnects >= 1, r.name
    assert report.same_ids


def test_report_detects_different_sequences() -> None:
    a = TransportResult("chunked", ids=["1-0", "2-0"], latencies_ms=[1.0, 3.0])
    b = TransportResult("ws", ids=["1-0", "3-0"], latencies_ms=[2.0, 2.0])
    report = Report("t", 1.0, "0-0", "3-0", [a, b])
    assert not report.same_ids
    assert "same id sequence on every transport: NO" in report.table()
    assert a.percentile(50) == 1.0 and a.percentile(99) == 3.0
    assert TransportResult("sse").percentile(50) is None


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        # The run that showed 6×10⁻¹ … 10⁰: every latency under a millisecond.
        (0.6, 0.98, None),
        (0.61, 0.64, None),
        (0.3, 12.0, ["0.5", "1", "2", "5", "10"]),
        (0.05, 2500.0, ["0.1", "1", "10", "100", "1000"]),
    ],
)
def test_plot_latency_axis_reads_plain_milliseconds(
    lo: float, hi: float, expected: list[str] | None
) -> None:
    """The --plot figure, drawn by Agg: the latency tick labels are plain numbers of ms at
    their ticks' positions (no 6×10⁻¹, no offset), the minor ticks unlabelled."""
    pytest.importorskip("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    rng = random.Random(7)
    results = []
    for name in ("chunked", "sse", "ws"):
        # Spread evenly on the log axis, with both ends in.
        latencies = [lo, hi] + [lo * (hi / lo) ** rng.random() for _ in range(200)]
        results.append(
            TransportResult(name, ids=[str(i) for i in range(202)], latencies_ms=latencies)
        )
    fig = latency_figure(Report("ticks", 10.0, "0-0", "1-0", results))
    FigureCanvasAgg(fig).draw()
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    assert "ms" in ax.get_xlabel()
    left, right = ax.get_xlim()
    # The axis spans the data, which is in ms (matplotlib's margins widen it a little).
    assert left <= lo and hi <= right
    assert math.log(right / left) < 1.2 * math.log(hi / lo)
    shown = [
        (label.get_position()[0], label.get_text())
        for label in ax.get_xticklabels()
        if left <= label.get_position()[0] <= right
    ]
    texts = [text for _, text in shown]
    assert len(texts) >= 3, texts
    for x, text in shown:
        assert re.fullmatch(r"\d+(\.\d+)?", text), texts
        assert math.isclose(float(text), x, rel_tol=1e-9), (x, text)
    if expected is not None:
        assert texts == expected
    assert [t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text()] == []


async def _run_cli(*args: str) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clients.compare",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(TIMEOUT * 2):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_compare_cli_json_and_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    plot = tmp_path / "latency.png"
    async with start_gateway(topics=("news",)) as gw:
        ids = await gw.publish_many("news", [{"i": i} for i in range(25)])
        status, out, err = await _run_cli(
            gw.url, "--topic", "news", "--seconds", "0.5", "--since", "0-0", "--json",
            "--plot", str(plot),
        )  # fmt: skip
    assert status == 0, err
    figures = json.loads(out)
    assert figures["same_ids"] is True
    assert figures["until"] == ids[-1]
    assert {t: f["messages"] for t, f in figures["transports"].items()} == {
        "chunked": 25,
        "sse": 25,
        "ws": 25,
    }
    assert "[" in err  # progress lines
    assert plot.read_bytes().startswith(b"\x89PNG")


async def test_compare_cli_plot_without_matplotlib_says_so_before_the_run(tmp_path: Path) -> None:
    """--plot where matplotlib cannot be imported: one line naming the pip command, at
    once, before any connection (nothing listens on the URL: that error would come next)."""
    plot = tmp_path / "latency.png"
    code = (
        "import runpy, sys; sys.modules['matplotlib'] = None; "  # as if not installed
        "runpy.run_module('clients.compare', run_name='__main__', alter_sys=True)"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, "http://127.0.0.1:9", "--plot", str(plot),
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(TIMEOUT):
        out, err = await proc.communicate()
    assert proc.returncode == 1
    assert out == b""
    assert err.decode().splitlines() == [
        "error: --plot needs matplotlib (import of matplotlib halted; None in sys.modules): "
        "pip install -e '.[clients]'"
    ]
    assert not plot.exists()


async def test_compare_cli_table() -> None:
    async with start_gateway(topics=("news",)) as gw:
        await gw.publish_many("news", [{"i": i} for i in range(5)])
        status, out, err = await _run_cli(
            gw.url, "--topic", "news", "--seconds", "0.3", "--since", "0-0", "--quiet",
            "--transports", "chunked,json,sync",
        )  # fmt: skip
    assert status == 0, err
    assert err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["transport", "msgs", "first", "ms", "p50", "ms", "p99", "ms",
                                "B/msg", "reconn", "gaps"]  # fmt: skip
    assert [line.split()[:2] for line in lines[2:5]] == [
        ["chunked", "5"],
        ["json", "5"],
        ["sync", "5"],
    ]
    assert "same id sequence on every transport: yes" in out


@pytest.mark.parametrize(
    ("args", "status", "text"),
    [
        (["--topic", "nope"], 1, "unknown topic"),
        (["--transports", "chunked,carrier-pigeon"], 2, "unknown transport"),
    ],
)
async def test_compare_cli_errors(args: list[str], status: int, text: str) -> None:
    async with start_gateway(topics=("news",)) as gw:
        got, _, err = await _run_cli(gw.url, "--seconds", "0.2", "--quiet", *args)
    assert got == status, err
    assert text in err and "Traceback" not in err


async def test_compare_cli_bad_url() -> None:
    got, _, err = await _run_cli("localhost:8080", "--quiet")
    assert got == 2 and "bad URL" in err and "Traceback" not in err
