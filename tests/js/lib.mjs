// Shared helpers for the phoenix.js integration tests of fluxwire.
//
// The server URL comes from FLUXWIRE_URL (e.g. ws://127.0.0.1:4123/socket; phoenix.js
// appends "/websocket" itself). Set FLUXWIRE_DEBUG=1 to get phoenix.js's own logging on
// stderr.
//
// Every helper that waits has a timeout (DEFAULT_TIMEOUT_MS unless given) and rejects with
// an error naming what it waited for, so a test never hangs. Everything a helper starts
// (sockets, timers, listeners) is tracked and released by closeAll(); call it from
// t.after() in every test. The tracking is module-global, so run the tests of one file
// sequentially (node:test's default).

import { Socket } from "phoenix";
import { WebSocket } from "ws";
import { randomBytes } from "node:crypto";

export const DEFAULT_TIMEOUT_MS = 5000;

/** Sockets created through this module that closeAll() has not closed yet. */
const sockets = new Set();
/** Silent cancel functions of the waits still pending (timers + listeners). */
const pending = new Set();
/** Per channel: how many ok join replies it got, and who waits for the next one. */
const joinStates = new WeakMap();

export class TimeoutError extends Error {
  constructor(message) {
    super(message);
    this.name = "TimeoutError";
  }
}

/** An error reply (or timeout) to a join. `status` and `response` are the reply's. */
export class JoinError extends Error {
  constructor(message, status, response) {
    super(message);
    this.name = "JoinError";
    this.status = status;
    this.response = response;
  }
}

export function serverUrl() {
  const url = process.env.FLUXWIRE_URL;
  if (!url) {
    throw new Error("FLUXWIRE_URL is not set (expected e.g. ws://127.0.0.1:4123/socket)");
  }
  return url.replace(/\/+$/, "");
}

/** A topic no other test uses, e.g. "echo:join-3f9a1c0d". */
export function uniqueTopic(prefix = "echo", hint = "") {
  const id = randomBytes(4).toString("hex");
  return `${prefix}:${hint ? `${hint}-` : ""}${id}`;
}

/** A name no other test of this run uses, e.g. "alice-3f9a1c-7": users, todo texts. */
export function uniqueName(base) {
  uniqueName.count = (uniqueName.count ?? 0) + 1;
  return `${base}-${RUN_ID}-${uniqueName.count}`;
}
const RUN_ID = randomBytes(3).toString("hex");

/** The server's HTTP base, from FLUXWIRE_HTTP (e.g. http://127.0.0.1:4123). */
export function httpBase() {
  const base = process.env.FLUXWIRE_HTTP;
  if (!base) throw new Error("FLUXWIRE_HTTP is not set (expected e.g. http://127.0.0.1:4000)");
  return base.replace(/\/+$/, "");
}

/** `GET /stores/NAME` as a reader: its JSON body; fails on any status but 200. */
export async function getStore(name) {
  const res = await fetch(`${httpBase()}/stores/${name}?user=reader`);
  if (res.status !== 200) throw new Error(`GET /stores/${name}: ${res.status}`);
  return res.json();
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Shows a value in error messages; ArrayBuffers as their bytes. */
export function show(value) {
  if (value instanceof ArrayBuffer) {
    return `ArrayBuffer<${[...new Uint8Array(value)].join(",")}>`;
  }
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

/** The bytes of an ArrayBuffer (or a typed array) as a plain array of numbers. */
export function bytes(buffer) {
  return [...new Uint8Array(buffer)];
}

/**
 * Core of every waiting helper. `setup(resolve, reject)` starts the wait and may return a
 * cleanup function (remove listeners, cancel phoenix.js timers), which runs exactly once:
 * on settle, on timeout, or when closeAll() cancels the wait (then the promise just stays
 * pending; nobody awaits it any more). `what` (string or function, evaluated at timeout)
 * names what was waited for.
 */
function track(what, timeoutMs, setup) {
  return new Promise((resolve, reject) => {
    let done = false;
    let cleanup = null;
    let timer = null;
    const runCleanup = () => {
      const c = cleanup;
      cleanup = null;
      if (c) {
        try { c(); } catch { /* cleanup must never throw into a test */ }
      }
    };
    const cancel = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      pending.delete(cancel);
      runCleanup();
    };
    const finish = (fn, value) => {
      if (done) return;
      cancel();
      fn(value);
    };
    pending.add(cancel);
    timer = setTimeout(() => {
      const desc = typeof what === "function" ? what() : what;
      finish(reject, new TimeoutError(`timed out after ${timeoutMs} ms waiting for ${desc}`));
    }, timeoutMs);
    try {
      cleanup = setup((v) => finish(resolve, v), (e) => finish(reject, e)) || null;
    } catch (e) {
      finish(reject, e);
    }
    if (done) runCleanup(); // settled synchronously inside setup
  });
}

// ---------------------------------------------------------------------------------------
// Sockets

/**
 * A phoenix.js Socket on ws's WebSocket, connecting now, without waiting for it to open.
 * opts: `url` (default FLUXWIRE_URL), `debug`, and any phoenix.js Socket option.
 */
export function createSocket(params = {}, opts = {}) {
  const { url = serverUrl(), debug = !!process.env.FLUXWIRE_DEBUG, ...socketOpts } = opts;
  const socket = new Socket(url, {
    // Node 20 has no global WebSocket; without this phoenix.js would fall back to LongPoll.
    transport: WebSocket,
    params,
    ...(debug
      ? { logger: (kind, msg, data) => console.error(`[phoenix ${kind}] ${msg}`, data === undefined ? "" : show(data)) }
      : {}),
    ...socketOpts,
  });
  sockets.add(socket);
  socket.connect();
  return socket;
}

/**
 * Waits for a socket event: "open" (resolves at once if already open), "error" (resolves
 * with the transport's error event) or "close" (with the close event).
 */
export function waitForSocket(socket, kind, timeoutMs = DEFAULT_TIMEOUT_MS) {
  if (!["open", "error", "close"].includes(kind)) throw new Error(`unknown socket event ${kind}`);
  return track(`socket "${kind}" (${socket.endPointURL()})`, timeoutMs, (resolve) => {
    if (kind === "open" && socket.isConnected()) {
      resolve(socket);
      return null;
    }
    const register = { open: "onOpen", error: "onError", close: "onClose" }[kind];
    const ref = socket[register]((event) => resolve(kind === "open" ? socket : event));
    return () => socket.off([ref]);
  });
}

/**
 * A connected phoenix.js Socket (resolves once the WebSocket is open). Rejects on the first
 * transport error (e.g. a refused handshake) or after `opts.timeoutMs`; the socket is then
 * disconnected. Other opts as createSocket.
 */
export async function connect(params = {}, opts = {}) {
  const { timeoutMs = DEFAULT_TIMEOUT_MS, ...rest } = opts;
  const socket = createSocket(params, rest);
  const what = `connection to ${socket.endPointURL()} to open`;
  try {
    await track(what, timeoutMs, (resolve, reject) => {
      if (socket.isConnected()) {
        resolve(socket);
        return null;
      }
      const refs = [
        socket.onOpen(() => resolve(socket)),
        socket.onError((event) => {
          const detail = (event && (event.message || (event.error && event.error.message))) || show(event);
          reject(new Error(`connection to ${socket.endPointURL()} failed: ${detail}`));
        }),
      ];
      return () => socket.off(refs);
    });
  } catch (e) {
    await disconnect(socket);
    throw e;
  }
  return socket;
}

/** Disconnects one socket and releases its timers; resolves when the WebSocket is closed. */
export async function disconnect(socket) {
  sockets.delete(socket);
  // Stop what phoenix.js would otherwise keep scheduling (these fields are internal to
  // phoenix.js 1.8; guarded so a future version degrades to slower exit, not a crash).
  for (const ch of socket.channels || []) {
    ch.rejoinTimer?.reset();
    ch.joinPush?.cancelTimeout?.();
    for (const p of ch.pushBuffer || []) p.cancelTimeout?.();
  }
  const ws = socket.conn;
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, 3000);
    socket.disconnect(() => {
      clearTimeout(timer);
      resolve();
    });
  });
  socket.reconnectTimer?.reset();
  // A server that never answers our close frame would keep ws's 30 s close timer alive.
  if (ws && ws.readyState !== WebSocket.CLOSED && typeof ws.terminate === "function") {
    ws.terminate();
  }
}

/** Cancels every pending wait and disconnects every socket created through this module. */
export async function closeAll() {
  for (const cancel of [...pending]) cancel();
  const list = [...sockets];
  await Promise.all(list.map((s) => disconnect(s)));
}

/**
 * Resolves once `check()` (sync or async) returns true, trying every `intervalMs`;
 * rejects after `timeoutMs` naming `what` (a string, or a function evaluated then), or as
 * soon as `check` throws.
 */
export function waitUntil(what, check, timeoutMs = DEFAULT_TIMEOUT_MS, intervalMs = 20) {
  return track(what, timeoutMs, (resolve, reject) => {
    let timer = null;
    let stopped = false;
    const attempt = async () => {
      try {
        if (await check()) return resolve(true);
      } catch (e) {
        return reject(e);
      }
      if (!stopped) timer = setTimeout(attempt, intervalMs);
    };
    attempt();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  });
}

/** Round-trip time (ms) of one heartbeat (`socket.ping`). */
export function ping(socket, timeoutMs = DEFAULT_TIMEOUT_MS) {
  return track("heartbeat reply (socket.ping)", timeoutMs, (resolve, reject) => {
    const sent = socket.ping((rtt) => resolve(rtt));
    if (!sent) reject(new Error("socket.ping: socket is not connected"));
    return null;
  });
}

// ---------------------------------------------------------------------------------------
// Channels

function joinState(channel) {
  let st = joinStates.get(channel);
  if (!st) {
    st = { oks: 0, waiters: new Set() };
    joinStates.set(channel, st);
  }
  return st;
}

/**
 * Joins `channel` (a socket.channel(...) not joined yet). Resolves with the ok response;
 * rejects with a JoinError (status "error" + response, or status "timeout").
 * Note that after a refused join phoenix.js keeps retrying (1 s, 2 s, 5 s, 10 s...) until
 * leave() or closeAll().
 */
export function join(channel, timeoutMs = DEFAULT_TIMEOUT_MS) {
  const topic = channel.topic;
  return track(`join reply for "${topic}"`, timeoutMs, (resolve, reject) => {
    const st = joinState(channel);
    const push = channel.join(timeoutMs);
    push
      .receive("ok", (response) => {
        // This hook stays registered: it also fires for every automatic rejoin.
        st.oks += 1;
        for (const w of [...st.waiters]) w();
        resolve(response);
      })
      .receive("error", (response) =>
        reject(new JoinError(`join "${topic}" refused: ${show(response)}`, "error", response)))
      .receive("timeout", () =>
        reject(new JoinError(`join "${topic}": no reply within ${timeoutMs} ms`, "timeout", undefined)));
    return null;
  });
}

/** Number of ok join replies `channel` received through join() (first join + rejoins). */
export function joinCount(channel) {
  return joinState(channel).oks;
}

/**
 * Resolves when `channel` has received at least `count` ok join replies (count defaults
 * to one more than now, i.e. "the next rejoin"). Returns the new count.
 */
export function waitForRejoin(channel, timeoutMs = DEFAULT_TIMEOUT_MS, count = joinCount(channel) + 1) {
  const st = joinState(channel);
  return track(`rejoin #${count - 1} of "${channel.topic}" (ok join replies so far: ${st.oks})`, timeoutMs,
    (resolve) => {
      const check = () => { if (st.oks >= count) resolve(st.oks); };
      st.waiters.add(check);
      check();
      return () => st.waiters.delete(check);
    });
}

/**
 * Pushes `event` and resolves with the reply as {status, response} (ok and error both
 * resolve); rejects on timeout. An ArrayBuffer payload is sent as a binary frame.
 */
export function push(channel, event, payload = {}, timeoutMs = DEFAULT_TIMEOUT_MS) {
  return track(`reply to "${event}" on "${channel.topic}"`, timeoutMs, (resolve, reject) => {
    const p = channel.push(event, payload, timeoutMs);
    p.receive("ok", (response) => resolve({ status: "ok", response }))
      .receive("error", (response) => resolve({ status: "error", response }))
      .receive("timeout", () =>
        reject(new TimeoutError(`no reply to "${event}" on "${channel.topic}" within ${timeoutMs} ms (phoenix.js push timeout)`)));
    return () => p.cancelTimeout();
  });
}

/**
 * channel.leave(), resolving with the SERVER's reply to the phx_leave as
 * {status, response, joinRef} (joinRef = the reply's join_ref). Rejects on timeout.
 *
 * Why not leavePush.receive("ok"): phoenix.js 1.8 marks the channel "leaving" before it
 * checks canPush(), so leave() always fires its "ok" hooks (and onClose) locally and at
 * once, and drops the channel; the server's reply never reaches those hooks. So we match
 * the reply by ref on the raw socket instead.
 */
export function leave(channel, timeoutMs = DEFAULT_TIMEOUT_MS) {
  const socket = channel.socket;
  const topic = channel.topic;
  let leaveRef = null;
  return track(() => `server reply to phx_leave (ref ${show(leaveRef)}) on "${topic}"`, timeoutMs, (resolve) => {
    const ref = socket.onMessage((m) => {
      if (leaveRef !== null && m.topic === topic && m.event === "phx_reply" && m.ref === leaveRef) {
        const payload = m.payload || {};
        resolve({ status: payload.status, response: payload.response, joinRef: m.join_ref });
      }
    });
    const p = channel.leave(timeoutMs);
    leaveRef = p.ref;
    return () => {
      socket.off([ref]);
      p.cancelTimeout();
    };
  });
}

/**
 * Resolves with the payload of the first `event` on `channel` for which
 * `predicate(payload)` is true. Register it BEFORE causing the event.
 */
export function waitFor(channel, event, predicate = () => true, timeoutMs = DEFAULT_TIMEOUT_MS) {
  const others = [];
  const what = () => {
    const seen = others.length
      ? `; ${others.length} non-matching "${event}" seen: ${others.slice(0, 5).map(show).join(", ")}`
      : "";
    return `event "${event}" on "${channel.topic}"${seen}`;
  };
  return track(what, timeoutMs, (resolve, reject) => {
    const ref = channel.on(event, (payload) => {
      let ok;
      try {
        ok = predicate(payload);
      } catch (e) {
        reject(e);
        return;
      }
      if (ok) resolve(payload);
      else others.push(payload);
    });
    return () => channel.off(event, ref);
  });
}

/** Resolves with the channel's next phx_error payload (channel.onError). */
export function waitForChannelError(channel, timeoutMs = DEFAULT_TIMEOUT_MS) {
  return waitFor(channel, "phx_error", () => true, timeoutMs);
}

/** Resolves when the channel's onClose hooks run (leave acknowledged, or phx_close). */
export function waitForChannelClose(channel, timeoutMs = DEFAULT_TIMEOUT_MS) {
  return waitFor(channel, "phx_close", () => true, timeoutMs);
}

/**
 * Records every decoded message the socket receives for which `filter(msg)` is true
 * (msg = {join_ref, ref, topic, event, payload}, straight from the decoder, so null refs
 * stay null). Returns {messages, stop}. Released by closeAll() if not stopped.
 */
export function recordMessages(socket, filter = () => true) {
  const messages = [];
  const ref = socket.onMessage((msg) => {
    if (filter(msg)) messages.push(msg);
  });
  let stopped = false;
  const stop = () => {
    if (stopped) return;
    stopped = true;
    pending.delete(stop);
    socket.off([ref]);
  };
  pending.add(stop);
  return { messages, stop };
}

/** Resolves with the first decoded message on `socket` for which `predicate(msg)` is true. */
export function waitForMessage(socket, predicate, what = "a matching message", timeoutMs = DEFAULT_TIMEOUT_MS) {
  return track(what, timeoutMs, (resolve) => {
    const ref = socket.onMessage((msg) => {
      if (predicate(msg)) resolve(msg);
    });
    return () => socket.off([ref]);
  });
}
