"""streamgate's benchmark harness: ``python -m bench`` (see BENCHMARKS.md).

* :mod:`bench.run` — the scenarios (fan-out, latency, idle memory, slow reader,
  the ``send()`` floor) and the processes they start;
* :mod:`bench.load` — raw-socket subscribers and publishers;
* :mod:`bench.baseline` — the tutorial design the gateway is measured against;
* :mod:`bench.peer` — sse-starlette on uvicorn, the SSE peer;
* :mod:`bench.floor` — a bare ``send()`` loop;
* :mod:`bench.report` — tables, target verdicts and the latency plot.
"""
