"""streamgate clients: one per transport, plus a side-by-side compare tool.

Each module is self-contained (it imports nothing from ``gateway/`` nor from
its siblings), so a user can copy a single file:

* :mod:`clients.sse` -- WHATWG-exact ``SSEDecoder``, an aiohttp ``EventSource``,
  and ``SSEClient`` (resumes with ``Last-Event-ID``);
* :mod:`clients.ws` -- ``WSClient`` on ``websockets`` (resumes with ``since=``);
* :mod:`clients.chunked` -- ``NDJSONDecoder``, ``JSONArrayDecoder`` (ijson) and
  ``ChunkedClient`` on aiohttp;
* :mod:`clients.sync` -- ``SyncClient`` on blocking ``requests``;
* :mod:`clients.compare` -- every transport at once, figures side by side.

Every client runs as a script: ``python -m clients.<name> URL``.
"""

__all__ = ["chunked", "compare", "sse", "sync", "ws"]
