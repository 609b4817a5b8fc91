// streamgate demo page: one topic over chunked NDJSON, WebSocket and EventSource, side by side.
// Plain browser JavaScript, no build step, nothing fetched from elsewhere. The wire contract is
// PROTOCOL.md; every string from the network reaches the DOM through textContent only.
//
// Connections per host (HTTP/1.1 allows 6): the chunked fetch holds 1, the EventSource 1, and
// short fetches (topics, publish, resume check) come and go. The WebSocket does not count. A
// column always closes its old connection before it opens a new one.
//
// Access control (optional): open the page as /?token=<JWT> and it sends that token with every
// request: an `Authorization: Bearer` header on fetch (the chunked stream, publish, topics), and
// `?token=` on the WebSocket and EventSource URLs (a browser cannot give them headers). When a
// token runs out (a 401, or a `goodbye` with reason `token_expired`) the page asks freshToken()
// below for another before it reconnects. Without a token the page sends none.
"use strict";

// The token for the next connections, or null for none. Called once at start, and again after
// a 401 or a `token_expired` goodbye (the three columns share one call). This default re-reads
// the token from sessionStorage (where the page keeps the `?token=` it was opened with; an app
// may put a fresher one there) or the page URL. An app replaces it with a call to its own
// backend, which knows the signed-in user, e.g.:
//
//   async function freshToken() {
//     const r = await fetch("/my-app/streamgate-token", { credentials: "same-origin" });
//     return r.ok ? (await r.json()).token : null;
//   }
//
// (or, without editing this file: window.streamgate.freshToken = async () => ...).
async function freshToken() {
  let stored = null;
  try {
    stored = sessionStorage.getItem("streamgate_token");
  } catch {
    // storage disabled: the URL only
  }
  return stored || new URLSearchParams(location.search).get("token") || null;
}

(() => {
  const TRANSPORTS = ["chunked", "ws", "sse"];
  const LOG_MAX = 100; // lines kept in each column's list
  const TOPIC_RE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/; // the gateway's own rule (PROTOCOL.md)
  const IDS_MAX = 100000; // ids kept per column for the checks (oldest dropped beyond that)
  const RATE_WINDOW_MS = 5000;
  const LATENCY_SAMPLES = 50;
  const TOPICS_REFRESH_MS = 5000;
  const CONTROL_TYPES = ["gap", "goodbye", "end", "stream-error"];
  const encoder = new TextEncoder();

  // ---- ids: "<ms>-<seq>", ordered by (ms, seq) as integers (up to 20 digits: BigInt) ----------
  // Compared as decimal strings (shorter is smaller once leading zeros are gone): exact for any
  // length, and cheap enough to run over every id a column holds.
  const ID_RE = /^(\d{1,20})-(\d{1,20})$/;
  function parseId(id) {
    const m = typeof id === "string" ? ID_RE.exec(id) : null;
    return m ? [m[1].replace(/^0+(?=\d)/, ""), m[2].replace(/^0+(?=\d)/, "")] : null;
  }
  function cmpNum(a, b) {
    if (a.length !== b.length) return a.length < b.length ? -1 : 1;
    return a < b ? -1 : a > b ? 1 : 0;
  }
  function cmpId(a, b) {
    // null sorts before every id
    if (a === b) return 0;
    if (a === null) return -1;
    if (b === null) return 1;
    const x = parseId(a);
    const y = parseId(b);
    return cmpNum(x[0], y[0]) || cmpNum(x[1], y[1]);
  }

  const now = () => performance.timeOrigin + performance.now(); // epoch ms, sub-ms precision
  const utf8len = (s) => encoder.encode(s).length;
  const enc = encodeURIComponent;

  function fmtBytes(n) {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
    return `${(n / 1024 / 1024).toFixed(2)} MiB`;
  }
  function fmtMs(ms) {
    if (ms === null || !Number.isFinite(ms)) return "–";
    return Math.abs(ms) < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
  }
  function median(xs) {
    if (!xs.length) return null;
    const s = [...xs].sort((a, b) => a - b);
    const h = s.length >> 1;
    return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
  }
  function short(s, n) {
    return s.length > n ? `${s.slice(0, n - 1)}…` : s;
  }

  // NDJSON framing (PROTOCOL.md, chunked): split on "\n", never on chunk boundaries. One read
  // may carry several lines, and a line (even one UTF-8 character) may span reads. Blank lines
  // are heartbeats. Only the new text is searched for "\n", so a long line costs O(length).
  class NdjsonLines {
    constructor() {
      this.decoder = new TextDecoder(); // stream mode keeps a split character for the next read
      this.parts = [];
    }

    feed(bytes) {
      const text = this.decoder.decode(bytes, { stream: true });
      const out = [];
      let start = 0;
      let nl = text.indexOf("\n");
      while (nl >= 0) {
        this.parts.push(text.slice(start, nl));
        const line = this.parts.join("");
        this.parts = [];
        if (line.trim() !== "") out.push(line);
        start = nl + 1;
        nl = text.indexOf("\n", start);
      }
      if (start < text.length) this.parts.push(text.slice(start));
      return out;
    }

    end() {
      this.parts.push(this.decoder.decode());
      const rest = this.parts.join("");
      this.parts = [];
      return rest.trim() === "" ? [] : [rest];
    }
  }

  // ---- the token (see freshToken above) ---------------------------------------------------------
  const TOKEN_KEY = "streamgate_token";
  const auth = { token: null, refreshing: null, calls: 0 };

  // ?token= moves from the address bar (history, bookmarks, screenshots) to this tab's
  // sessionStorage, which a reload keeps.
  function takeTokenFromUrl() {
    const params = new URLSearchParams(location.search);
    const t = params.get("token");
    if (t === null) return;
    try {
      sessionStorage.setItem(TOKEN_KEY, t);
    } catch {
      return; // no storage (a sandboxed frame): leave the token where freshToken can read it
    }
    params.delete("token");
    const q = params.toString();
    history.replaceState(null, "", `${location.pathname}${q ? `?${q}` : ""}${location.hash}`);
  }

  // Asks freshToken() for a token, once for every column that needs one at the same time. `used`
  // is the token the caller's connection had: if the page has another since, that one is fresh.
  function refreshToken(used = auth.token) {
    if (auth.refreshing) return auth.refreshing;
    if (used !== auth.token) return Promise.resolve(auth.token);
    auth.refreshing = (async () => {
      try {
        auth.calls += 1;
        const t = await page.freshToken();
        auth.token = typeof t === "string" && t.trim() !== "" ? t.trim() : null;
      } catch (e) {
        pageError(`freshToken() failed: ${e.message}`);
      } finally {
        auth.refreshing = null;
      }
      return auth.token;
    })();
    return auth.refreshing;
  }

  // Headers for a fetch: the token as a bearer token, if there is one.
  function authHeaders(headers = {}) {
    return auth.token === null ? headers : { ...headers, Authorization: `Bearer ${auth.token}` };
  }

  const page = {
    topic: null,
    startId: null, // every column starts from this id, so all three lists match
    published: [], // ids posted from the publish box
    serverTopics: [],
    errors: [], // problems the page noticed (also shown in the status line)
    transports: {},
    missing: (name) => page.transports[name].missingVsOthers(),
    cmpId, // exposed for tests and the console
    NdjsonLines,
    auth, // auth.token: the token in use; auth.calls: how many times freshToken() was asked
    freshToken, // replaceable: see freshToken at the top of this file
  };
  window.streamgate = page;

  const $ = (sel, root = document) => root.querySelector(sel);
  const statusEl = () => $("#status");
  function setStatus(text, kind = "") {
    const el = statusEl();
    el.textContent = text;
    el.dataset.kind = kind;
  }
  function pageError(text) {
    page.errors.push(text);
    lastPublished = null;
    setStatus(text, "error");
  }

  // ---- one column: one transport's connection, figures and checks -----------------------------
  class Column {
    constructor(name, el) {
      this.name = name;
      this.el = el;
      this.token = 0; // bumped on every connect/close: callbacks of an older connection are ignored
      this.timer = null;
      this.handle = null; // AbortController | WebSocket | EventSource
      this.reset(null);
      this.fields = {};
      for (const f of el.querySelectorAll("[data-field]")) this.fields[f.dataset.field] = f;
      this.button = el.querySelector("[data-action=toggle]");
      this.button.addEventListener("click", () => this.toggle());
    }

    reset(startId) {
      this.close();
      this.startId = startId;
      this.ids = [];
      this.idSet = new Set();
      this.floorId = startId; // ids at or below this are not kept (start, or trimmed)
      this.count = 0;
      this.bytes = 0;
      this.connects = 0;
      this.reconnects = 0;
      this.gaps = 0;
      this.gapEvents = [];
      this.controls = []; // every control event received, newest last
      this.dups = 0;
      this.bad = 0; // frames or lines that were not a message or control event
      this.lastId = null;
      this.state = "idle";
      this.userClosed = false;
      this.ended = false;
      this.failures = 0;
      this.authRetried = false; // a 401 was answered with a fresh token: the next one stops
      this.usedToken = null; // the token this column's connection was opened with
      this.goodbye = null;
      this.arrivals = [];
      this.latencies = [];
      this.resume = null;
      this.resumeText = "";
      this.resumeOk = null;
      this.rateSince = now();
      this.missingCache = [];
      this.missingAt = 0;
      this.openedAt = 0;
      this.pendingLog = [];
      this.clearLog = true;
      this.dirty = true;
    }

    live(token) {
      return token === this.token;
    }

    // -- lifecycle ------------------------------------------------------------------------------
    connect() {
      this.close();
      const token = ++this.token;
      this.connects += 1;
      if (this.connects > 1) this.reconnects += 1;
      this.ended = false;
      this.goodbye = null;
      this.openedAt = now();
      const since = this.lastId ?? this.startId;
      if (this.connects > 1 && since !== null) this.beginResumeCheck(since);
      this.usedToken = auth.token;
      const params = new URLSearchParams();
      if (since !== null) params.set("since", since);
      // WebSocket and EventSource cannot send headers: their token goes in the query.
      if (auth.token !== null && this.name !== "chunked") params.set("token", auth.token);
      const query = params.toString() ? `?${params}` : "";
      // Relative to the page, so the gateway works mounted under a prefix (/stream/).
      const path = `${this.name}/${enc(page.topic)}${query}`;
      this.setState("connecting", `since=${since ?? "(live)"}`);
      if (this.name === "chunked") this.openChunked(token, path);
      else if (this.name === "ws") this.openWs(token, path);
      else this.openSse(token, path);
    }

    close() {
      this.token += 1;
      clearTimeout(this.timer);
      this.timer = null;
      const h = this.handle;
      this.handle = null;
      if (!h) return;
      if (h instanceof AbortController) h.abort();
      else if (h instanceof WebSocket) {
        if (h.readyState === WebSocket.CONNECTING) h.onopen = () => h.close(1000);
        else h.close(1000);
      } else h.close();
    }

    toggle() {
      if (this.userClosed) {
        this.userClosed = false;
        this.connect();
      } else {
        this.userClosed = true;
        this.close();
        this.setState("disconnected", "by you");
        this.resume = null;
        this.resumeText =
          `disconnected at ${this.lastId ?? "(nothing yet)"}; what is published now ` +
          "is replayed on reconnect (since=last id)";
        this.resumeOk = null;
      }
      setTimeout(refreshTopics, 500); // let the subscriber counts show the change
      this.dirty = true;
      scheduleRender();
    }

    opened(token) {
      if (!this.live(token)) return;
      this.authRetried = false;
      this.setState("live");
      if (this.resume) this.maybeFinishResume();
    }

    // The stream is over (dropped, goodbye, or end). Reconnect unless told not to; with `refresh`
    // (a 401, a token that expired, a connection refused before it opened) ask for a fresh token
    // first.
    finished(token, why, { stop = false, delay = null, refresh = false } = {}) {
      if (!this.live(token)) return;
      const h = this.handle;
      this.handle = null;
      if (h instanceof EventSource) h.close(); // do not let it retry with its first URL
      if (this.ended || stop) {
        this.setState("ended", why);
        return;
      }
      if (this.userClosed) return;
      let wait = delay;
      const expired = this.goodbye?.reason === "token_expired";
      if (expired) {
        // Only the token ran out: back at once (after the server's hint), with a fresh one.
        refresh = true;
        if (wait === null) wait = Math.max(0, Number(this.goodbye.reconnect_ms) || 0);
      }
      if (wait === null && this.goodbye) wait = Number(this.goodbye.reconnect_ms) || 1000;
      if (wait === null) {
        this.failures += 1;
        wait = Math.min(30000, 500 * 2 ** Math.min(this.failures, 6)) * (0.75 + Math.random() / 2);
      }
      this.setState("reconnecting", `in ${Math.round(wait)} ms (${why})`);
      const token2 = ++this.token;
      const used = this.usedToken;
      this.timer = setTimeout(async () => {
        if (!this.live(token2) || this.userClosed) return;
        if (refresh) await refreshToken(used);
        if (this.live(token2) && !this.userClosed) this.connect();
      }, wait);
    }

    setState(state, detail = "") {
      this.state = state;
      this.stateDetail = detail;
      this.dirty = true;
      scheduleRender();
    }

    // -- incoming --------------------------------------------------------------------------------
    // One JSON document: a message, or a control event (an object with a "type" key).
    receive(token, text) {
      if (!this.live(token)) return;
      let obj;
      try {
        obj = JSON.parse(text);
      } catch {
        this.log({ kind: "bad", text: `not JSON: ${short(text, 80)}` });
        return;
      }
      if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
        this.log({ kind: "bad", text: `not an object: ${short(text, 80)}` });
      } else if (Object.hasOwn(obj, "type")) this.control(token, obj);
      else this.message(obj);
    }

    message(msg) {
      const id = msg.id;
      if (parseId(id) === null) {
        this.log({ kind: "bad", text: `bad id: ${short(String(id), 40)}` });
        return;
      }
      if (this.lastId !== null && cmpId(id, this.lastId) <= 0) {
        this.dups += 1; // replayed twice or out of order: the gateway promises neither
        this.log({ kind: "bad dup", text: `duplicate or out of order: ${id}` });
        return;
      }
      const t = now();
      this.failures = 0; // the backoff restarts once messages flow again
      this.lastId = id;
      this.count += 1;
      this.ids.push(id);
      this.idSet.add(id);
      if (this.ids.length > IDS_MAX + IDS_MAX / 10) {
        // trimmed in batches, so that a long run does not pay a splice per message
        const drop = this.ids.splice(0, this.ids.length - IDS_MAX);
        for (const d of drop) this.idSet.delete(d);
        this.floorId = drop[drop.length - 1];
      }
      this.arrivals.push(t);
      const latency = typeof msg.ts === "number" ? t - msg.ts : null;
      // A message published before this connection was asked for is a replay: its age is not
      // delivery latency.
      const replayed = typeof msg.ts === "number" && msg.ts < this.openedAt;
      if (latency !== null && !replayed) {
        this.latencies.push(latency);
        if (this.latencies.length > LATENCY_SAMPLES) this.latencies.shift();
      }
      let data;
      try {
        data = JSON.stringify(msg.data) ?? "(no data)";
      } catch {
        data = "?";
      }
      this.log({ kind: replayed ? "msg replayed" : "msg", id, data, latency });
      notePublishedArrival(this.name, id);
      if (this.resume) this.maybeFinishResume();
      this.dirty = true;
      scheduleRender();
    }

    control(token, ev) {
      this.controls.push(ev);
      const type = String(ev.type);
      if (type === "gap") {
        this.gaps += 1;
        this.gapEvents.push(ev);
        if (this.resume) this.resume.gap = ev;
        this.log({
          kind: "ctl gap",
          text: `gap: history starts at ${ev.first_id ?? "(nothing)"}, asked since ${ev.since}`,
        });
      } else if (type === "goodbye") {
        this.goodbye = ev;
        this.log({
          kind: "ctl",
          text: `goodbye (${ev.reason}), reconnect in ${ev.reconnect_ms} ms, last ${ev.last_id}`,
        });
        if (this.name === "sse") {
          // Reconnect ourselves with since=<last id> (EventSource's own retry would resume
          // too, Last-Event-ID wins over the URL's since=), so the column can count the
          // reconnect and check the resume like the other two.
          this.finished(token, `goodbye: ${ev.reason}`);
        }
      } else if (type === "end") {
        this.ended = true;
        this.log({ kind: "ctl", text: `end (${ev.reason}), last ${ev.last_id}` });
        if (this.name === "sse") {
          this.close();
          this.setState("ended", String(ev.reason));
        }
      } else if (type === "stream-error" || type === "error") {
        this.log({ kind: "ctl bad", text: `${type} ${ev.code}: ${ev.message}` });
      } else {
        this.log({ kind: "ctl", text: `${type}` });
      }
      this.dirty = true;
      scheduleRender();
    }

    // -- transports --------------------------------------------------------------------------------
    openChunked(token, path) {
      const ctrl = new AbortController();
      this.handle = ctrl;
      (async () => {
        let resp;
        try {
          resp = await fetch(path, {
            signal: ctrl.signal,
            cache: "no-store",
            headers: authHeaders({ Accept: "application/x-ndjson" }),
          });
        } catch (e) {
          if (this.live(token)) this.finished(token, `fetch failed: ${e.message}`);
          return;
        }
        if (!this.live(token)) return;
        if (!resp.ok) {
          const body = await resp.text().catch(() => "");
          this.log({ kind: "ctl bad", text: `HTTP ${resp.status} ${short(body, 120)}` });
          if (resp.status === 401 && !this.authRetried) {
            // Once, at once, with a token from freshToken(); a second 401 stops the column.
            this.authRetried = true;
            this.finished(token, "HTTP 401: asking for a fresh token", { delay: 0, refresh: true });
            return;
          }
          this.finished(token, `HTTP ${resp.status}`, { stop: resp.status < 500 });
          return;
        }
        this.opened(token);
        const reader = resp.body.getReader();
        const lines = new NdjsonLines();
        try {
          for (;;) {
            const { value, done } = await reader.read();
            if (!this.live(token)) return;
            if (done) break;
            this.bytes += value.byteLength;
            for (const line of lines.feed(value)) this.receive(token, line);
            this.dirty = true;
          }
          for (const line of lines.end()) this.receive(token, line);
        } catch (e) {
          if (this.live(token)) this.finished(token, `read failed: ${e.message}`);
          return;
        }
        if (!this.live(token)) return;
        this.finished(token, this.goodbye ? `goodbye: ${this.goodbye.reason}` : "stream closed");
      })();
    }

    openWs(token, path) {
      const url = new URL(path, location.href);
      url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
      const ws = new WebSocket(url);
      this.handle = ws;
      let wasOpen = false;
      ws.onopen = () => {
        wasOpen = true;
        this.opened(token);
      };
      ws.onmessage = (ev) => {
        if (!this.live(token)) return;
        if (typeof ev.data !== "string") {
          this.log({ kind: "bad", text: "binary frame" });
          return;
        }
        this.bytes += utf8len(ev.data);
        this.receive(token, ev.data);
      };
      ws.onerror = () => {}; // a close event always follows
      ws.onclose = (ev) => {
        if (!this.live(token)) return;
        const why = `close ${ev.code}${ev.reason ? ` ${ev.reason}` : ""}`;
        // 1000: complete (after "end"); 1009: frame too big; 4500-4999: do not reconnect.
        const stop = ev.code === 1000 || ev.code === 1009 || (ev.code >= 4500 && ev.code <= 4999);
        // 1011 (a source failed) and abnormal closes back off; goodbye codes use reconnect_ms.
        // 4003: the token expired. A browser hides the status of a refused handshake (a 401
        // looks like any failure): before retrying one, ask for a fresh token too.
        const refresh = ev.code === 4003 || !wasOpen;
        const delay = ev.code === 4003 && !this.goodbye ? 0 : null;
        this.finished(token, why, { stop, refresh, delay });
      };
    }

    openSse(token, path) {
      const es = new EventSource(path);
      this.handle = es;
      es.onopen = () => this.opened(token);
      es.onmessage = (ev) => {
        if (!this.live(token)) return;
        // EventSource hides the raw stream: count the event as it was framed.
        this.bytes += utf8len(`id: ${ev.lastEventId}\ndata: ${ev.data}\n\n`);
        this.receive(token, ev.data);
      };
      for (const type of CONTROL_TYPES) {
        es.addEventListener(type, (ev) => {
          if (!this.live(token)) return;
          this.bytes += utf8len(`event: ${type}\ndata: ${ev.data}\n\n`);
          this.receive(token, ev.data);
        });
      }
      es.onerror = () => {
        if (!this.live(token)) return;
        if (this.ended) return;
        // Dropped (CONNECTING) or refused (CLOSED). Either way: close, and come back with
        // since=<last id> ourselves, so the column counts and checks the resume.
        // A refusal may be a 401 (EventSource hides the status): ask for a fresh token too.
        const refused = es.readyState === EventSource.CLOSED;
        es.close();
        this.finished(token, refused ? "refused" : "stream dropped", { refresh: refused });
      };
    }

    // -- resume check ----------------------------------------------------------------------------
    // After a reconnect with since=S: ask the gateway (a short fetch) for its last id L, wait
    // until this column has caught up to L, then list what history holds in (S, L] and check
    // that every one of those ids arrived here.
    beginResumeCheck(since) {
      const resume = { since, target: undefined, gap: null, done: false };
      this.resume = resume;
      this.resumeOk = null;
      this.resumeText = `reconnected with since=${since}, catching up…`;
      (async () => {
        try {
          const r = await fetch(`topics/${enc(page.topic)}/messages?limit=1`, {
            cache: "no-store",
            headers: authHeaders(),
          });
          const body = await r.json();
          resume.target = body.last_id ?? null;
        } catch (e) {
          resume.target = null;
          resume.error = `could not read the topic: ${e.message}`;
        }
        this.maybeFinishResume();
      })();
    }

    maybeFinishResume() {
      const resume = this.resume;
      if (!resume || resume.done || resume.target === undefined) return;
      if (this.state !== "live" && !this.ended) return;
      if (resume.target !== null && cmpId(this.lastId, resume.target) < 0) return; // catching up
      resume.done = true;
      this.verifyResume(resume);
    }

    async verifyResume(resume) {
      const expected = [];
      let gap = resume.gap;
      try {
        let cursor = resume.since;
        while (resume.target !== null && cmpId(cursor, resume.target) < 0) {
          const r = await fetch(
            `topics/${enc(page.topic)}/messages?since=${enc(cursor)}&limit=1000`,
            { cache: "no-store", headers: authHeaders() },
          );
          if (!r.ok) throw new Error(`HTTP ${r.status}`);
          const body = await r.json();
          if (body.gap && !gap) gap = { first_id: body.first_id };
          if (!body.messages.length) break;
          for (const m of body.messages) {
            if (cmpId(m.id, resume.target) <= 0) expected.push(m.id);
          }
          cursor = body.messages[body.messages.length - 1].id;
        }
      } catch (e) {
        resume.error = `could not list history: ${e.message}`;
      }
      if (this.resume !== resume) return; // superseded by a newer reconnect
      const missed = expected.filter((id) => !this.idSet.has(id));
      resume.expected = expected;
      resume.missed = missed;
      const n = expected.length;
      if (gap) {
        this.resumeOk = false;
        this.resumeText =
          `✗ resumed from ${resume.since}: gap, history now starts at ` +
          `${gap.first_id ?? "(nothing)"}; older messages were missed`;
      } else if (missed.length) {
        this.resumeOk = false;
        this.resumeText =
          `✗ resumed from ${resume.since}: ${missed.length} of ${n} missed ` +
          `(first ${missed[0]})`;
      } else if (resume.error) {
        this.resumeOk = null;
        this.resumeText = `resumed from ${resume.since}; ${resume.error}`;
      } else {
        this.resumeOk = true;
        this.resumeText =
          `✓ resumed from ${resume.since}: ${n} message${n === 1 ? "" : "s"} published ` +
          `while away, ${n === 1 ? "it" : "all"} received, nothing missed`;
      }
      this.dirty = true;
      scheduleRender();
    }

    // Ids another column has, within this column's range, that this column lacks.
    missingVsOthers() {
      let floor = this.floorId;
      for (const other of Object.values(page.transports)) {
        if (cmpId(other.floorId, floor) > 0) floor = other.floorId;
      }
      const out = new Set();
      if (this.lastId === null) return [];
      for (const other of Object.values(page.transports)) {
        if (other === this) continue;
        for (const id of other.ids) {
          if (cmpId(id, this.lastId) > 0) break; // ids are ascending
          if (cmpId(id, floor) > 0 && !this.idSet.has(id)) out.add(id);
        }
      }
      return [...out];
    }

    // -- display ---------------------------------------------------------------------------------
    log(entry) {
      if (entry.kind === "bad") this.bad += 1;
      this.pendingLog.push(entry);
      if (this.pendingLog.length > LOG_MAX) this.pendingLog.splice(0, this.pendingLog.length - LOG_MAX);
      this.dirty = true;
      scheduleRender();
    }

    render(t) {
      const f = this.fields;
      while (this.arrivals.length && this.arrivals[0] < t - RATE_WINDOW_MS) this.arrivals.shift();
      const span = Math.min(RATE_WINDOW_MS, t - this.rateSince);
      const rate = span > 500 ? (this.arrivals.length * 1000) / Math.max(span, 1000) : null;
      f.rate.textContent = rate === null ? "–" : `${rate.toFixed(1)}/s`;
      if (t - this.missingAt > 1000) {
        // a full scan of the other columns' ids: at most once a second
        this.missingAt = t;
        const before = this.missingCache.length;
        this.missingCache = this.missingVsOthers();
        if (this.missingCache.length !== before) this.dirty = true;
      }
      if (!this.dirty) return;
      this.dirty = false;
      f.count.textContent = String(this.count);
      f.lastId.textContent = this.lastId ?? "–";
      const lat = median(this.latencies);
      f.latency.textContent = fmtMs(lat);
      f.latency.title = this.latencies.length
        ? `median of the last ${this.latencies.length} live messages; last ${fmtMs(
            this.latencies[this.latencies.length - 1],
          )}`
        : "";
      f.bytes.textContent = fmtBytes(this.bytes);
      f.reconnects.textContent = String(this.reconnects);
      f.gaps.textContent = String(this.gaps);
      f.gaps.dataset.bad = this.gaps ? "1" : "";
      f.state.textContent = this.stateDetail ? `${this.state} · ${this.stateDetail}` : this.state;
      f.state.dataset.state = this.state;
      this.el.dataset.state = this.state;
      this.button.textContent = this.userClosed ? "Reconnect" : "Disconnect";
      this.button.setAttribute("aria-pressed", this.userClosed ? "true" : "false");
      f.resume.textContent = this.resumeText;
      f.resume.dataset.ok = this.resumeOk === true ? "yes" : this.resumeOk === false ? "no" : "";
      const missing = this.missingCache;
      if (this.dups) {
        f.match.textContent = `✗ ${this.dups} duplicate or out-of-order message(s) dropped`;
        f.match.dataset.ok = "no";
      } else if (missing.length) {
        f.match.textContent = `✗ ${missing.length} id(s) seen by another column missing here`;
        f.match.dataset.ok = "no";
      } else {
        f.match.textContent = this.count ? "same ids as the other columns" : "";
        f.match.dataset.ok = this.count ? "yes" : "";
      }
      this.flushLog();
    }

    flushLog() {
      const list = this.fields.log;
      if (this.clearLog) {
        list.replaceChildren();
        this.clearLog = false;
      }
      if (!this.pendingLog.length) return;
      const frag = document.createDocumentFragment();
      for (const e of this.pendingLog) {
        const li = document.createElement("li");
        li.className = e.kind;
        if (e.id !== undefined) {
          const id = document.createElement("span");
          id.className = "id";
          id.textContent = e.id;
          const data = document.createElement("span");
          data.className = "data";
          data.textContent = short(e.data, 120);
          data.title = short(e.data, 2000);
          const lat = document.createElement("span");
          lat.className = "lat";
          lat.textContent = e.kind.includes("replayed") ? "replay" : fmtMs(e.latency);
          li.append(id, data, lat);
        } else {
          li.textContent = e.text;
        }
        frag.prepend(li); // newest first
      }
      this.pendingLog = [];
      list.prepend(frag);
      while (list.childElementCount > LOG_MAX) list.lastElementChild.remove();
    }
  }

  // ---- rendering is batched: messages only mark columns dirty --------------------------------
  let renderTimer = null;
  function scheduleRender() {
    if (renderTimer === null) renderTimer = setTimeout(render, 100);
  }
  function render() {
    renderTimer = null;
    const t = now();
    for (const col of Object.values(page.transports)) col.render(t);
    renderPublished();
  }

  // ---- publish box --------------------------------------------------------------------------------
  let lastPublished = null;
  function notePublishedArrival(name, id) {
    if (lastPublished && lastPublished.id === id && !lastPublished.arrived[name]) {
      lastPublished.arrived[name] = now() - lastPublished.at;
    }
  }
  function renderPublished() {
    if (!lastPublished) return;
    const parts = TRANSPORTS.map((n) => {
      const ms = lastPublished.arrived[n];
      return ms === undefined ? `${n} …` : `${n} ✓ ${fmtMs(ms)}`;
    });
    const all = TRANSPORTS.every((n) => lastPublished.arrived[n] !== undefined);
    setStatus(`published ${lastPublished.id} → ${parts.join(" · ")}`, all ? "ok" : "");
  }

  // The status line shows the last publish until something goes wrong.
  function publishFailed(text) {
    lastPublished = null;
    setStatus(text, "error");
  }

  async function publish(ev) {
    ev.preventDefault();
    const input = $("#payload");
    const text = input.value;
    try {
      JSON.parse(text);
    } catch (e) {
      publishFailed(`not valid JSON: ${e.message}`);
      return;
    }
    if (!page.topic) {
      publishFailed("no topic selected");
      return;
    }
    const btn = $("#publish-btn");
    btn.disabled = true;
    try {
      const at = now();
      const post = () =>
        fetch(`topics/${enc(page.topic)}`, {
          method: "POST",
          headers: authHeaders({ "Content-Type": "application/json" }),
          body: text,
        });
      const used = auth.token;
      let r = await post();
      if (r.status === 401) {
        // The token ran out: once more with a fresh one.
        await refreshToken(used);
        if (auth.token !== used) r = await post();
      }
      const body = await r.json().catch(() => ({}));
      if (r.status !== 201) {
        publishFailed(`publish failed: HTTP ${r.status} ${body.error ?? ""} ${body.message ?? ""}`);
        return;
      }
      page.published.push(body.id);
      lastPublished = { id: body.id, at, arrived: {} };
      for (const col of Object.values(page.transports)) {
        if (col.idSet.has(body.id)) notePublishedArrival(col.name, body.id);
      }
      renderPublished();
    } catch (e) {
      publishFailed(`publish failed: ${e.message}`);
    } finally {
      btn.disabled = false;
    }
  }

  // ---- topics -------------------------------------------------------------------------------------
  async function fetchTopics() {
    const r = await fetch("topics", { cache: "no-store", headers: authHeaders() });
    if (!r.ok) throw new Error(`GET /topics: HTTP ${r.status}`);
    const body = await r.json();
    page.serverTopics = Array.isArray(body.topics) ? body.topics : [];
    return page.serverTopics;
  }

  function fillPicker(topics) {
    const select = $("#topic");
    const names = topics.map((t) => String(t.name));
    const current = [...select.options].map((o) => o.value);
    if (names.length && names.join("\n") === current.join("\n")) return;
    select.replaceChildren();
    if (!names.length) {
      const o = document.createElement("option");
      o.value = "";
      o.textContent = "(no topics yet: POST to /topics/NAME)";
      select.append(o);
      return;
    }
    for (const n of names) {
      const o = document.createElement("option");
      o.value = n;
      o.textContent = n;
      select.append(o);
    }
    if (page.topic && names.includes(page.topic)) select.value = page.topic;
  }

  // What the gateway says about the topic (GET /topics), refreshed every few seconds.
  function showServerView() {
    const t = page.serverTopics.find((x) => x.name === page.topic);
    const el = $("#server");
    if (!t) {
      el.textContent = "";
      return;
    }
    const s = t.subscribers || {};
    el.textContent =
      `gateway: ${page.topic} retains ${t.length ?? "?"} messages ` +
      `(${t.first_id ?? "–"} … ${t.last_id ?? "–"}); subscribers ` +
      `chunked ${s.chunked ?? "?"} · ws ${s.ws ?? "?"} · sse ${s.sse ?? "?"}`;
  }

  async function selectTopic(name) {
    for (const col of Object.values(page.transports)) col.reset(null);
    page.topic = name || null;
    lastPublished = null;
    if (!page.topic) {
      scheduleRender();
      return;
    }
    const params = new URLSearchParams(location.search);
    if (params.get("topic") !== page.topic) {
      params.set("topic", page.topic);
      history.replaceState(null, "", `?${params}`);
    }
    // One common starting point: the topic's last id now. Every column asks since=<it>, so
    // all three receive exactly the same messages from the same place.
    let start = "0-0";
    try {
      const topics = await fetchTopics();
      const t = topics.find((x) => x.name === page.topic);
      if (t && t.last_id) start = t.last_id;
    } catch (e) {
      pageError(`could not read topics: ${e.message}`);
    }
    if (page.topic !== name) return; // the user picked another one meanwhile
    page.startId = start;
    setStatus(`${page.topic}: every column starts after ${start}`);
    showServerView();
    for (const col of Object.values(page.transports)) {
      col.reset(start);
      col.connect();
    }
    setTimeout(refreshTopics, 1000); // the gateway's view, once the columns are in
  }

  async function refreshTopics() {
    try {
      fillPicker(await fetchTopics());
      showServerView();
    } catch (e) {
      // The gateway may be restarting; the columns say so themselves. Keep quiet here.
    }
  }

  async function main() {
    takeTokenFromUrl();
    await refreshToken(null); // the token to start with (none: a gateway without access control)
    for (const name of TRANSPORTS) {
      page.transports[name] = new Column(name, $(`[data-transport="${name}"]`));
    }
    $("#publish").addEventListener("submit", publish);
    $("#topic").addEventListener("change", (ev) => selectTopic(ev.target.value));
    let topics = [];
    try {
      topics = await fetchTopics();
    } catch (e) {
      pageError(`could not read topics: ${e.message}`);
    }
    // ?topic=NAME opens that topic even before its first message: the streams wait for it.
    const wanted = new URLSearchParams(location.search).get("topic");
    if (wanted !== null && TOPIC_RE.test(wanted) && !topics.some((t) => t.name === wanted)) {
      topics = [...topics, { name: wanted }];
    }
    fillPicker(topics);
    const names = topics.map((t) => String(t.name));
    const first = names.includes(wanted) ? wanted : names.includes("ticks") ? "ticks" : names[0];
    if (first) {
      $("#topic").value = first;
      await selectTopic(first);
    } else {
      setStatus("no topics yet: publish to one with POST /topics/NAME, then reload");
    }
    setInterval(refreshTopics, TOPICS_REFRESH_MS);
    setInterval(scheduleRender, 1000); // keeps the rate figure moving when nothing arrives
    page.ready = true;
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", main);
  else main();
})();
