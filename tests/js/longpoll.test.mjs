// phoenix.js (1.8.x) over the long-poll transport against fluxwire's test EchoChannel
// ("echo:*"), next to WebSocket clients of the same server.
//
//   FLUXWIRE_URL=ws://127.0.0.1:4123/socket FLUXWIRE_NOWS_URL=ws://127.0.0.1:4124/socket \
//     node --test longpoll.test.mjs
//
// FLUXWIRE_URL: a server with both transports, a 1 s long-poll window and a 2 s session
// timeout (tests/longpoll_js.rs). FLUXWIRE_NOWS_URL: the same with the WebSocket transport
// switched off (`--transports longpoll`), for the fallback test.
//
// phoenix.js's LongPoll uses XMLHttpRequest when there is one, else fetch: Node 20 has
// fetch and AbortController, so no polyfill is needed.

import { test } from "node:test";
import assert from "node:assert/strict";
import { LongPoll } from "phoenix";

import {
  bytes,
  closeAll,
  connect,
  createSocket,
  join,
  leave,
  push,
  show,
  uniqueTopic,
  waitFor,
  waitForRejoin,
  waitForSocket,
  waitUntil,
} from "./lib.mjs";

const T = { timeout: 30_000 };
/** The servers' long-poll window and session timeout (tests/longpoll_js.rs). */
const WINDOW_MS = 1000;
const SESSION_TIMEOUT_MS = 2000;

/** A phoenix.js socket on the long-poll transport, open. */
function connectLongPoll(params, opts = {}) {
  return connect(params, { transport: LongPoll, ...opts });
}

/** The long-poll URL of the server, as phoenix.js derives it. */
function longPollUrl(base = process.env.FLUXWIRE_URL) {
  return base.replace(/^ws/, "http").replace(/\/+$/, "") + "/longpoll";
}

/** Close codes the socket's transport reports, in order. */
function recordCloses(socket) {
  const codes = [];
  socket.onClose((event) => codes.push(event && event.code));
  return codes;
}

test("lp 01 join, push with reply, server push, unknown event, leave", T, async (t) => {
  t.after(closeAll);
  const socket = await connectLongPoll({ user: "lp-alice" });
  assert.ok(socket.conn instanceof LongPoll, "the socket should run on LongPoll");
  const topic = uniqueTopic("echo", "lp-join");
  const channel = socket.channel(topic);
  const reply = await join(channel);
  assert.deepEqual(reply, { topic, user: "lp-alice" });

  const payload = { nested: { list: [1, "two", null], ok: true }, text: "héllo ✓" };
  assert.deepEqual(await push(channel, "echo", payload), { status: "ok", response: payload });

  const pushed = waitFor(channel, "pushed");
  assert.deepEqual(await push(channel, "push_me"), { status: "ok", response: {} });
  assert.deepEqual(await pushed, { n: 1 });

  assert.deepEqual(await push(channel, "nope"), {
    status: "error",
    response: { reason: "unknown event" },
  });

  const left = await leave(channel);
  assert.equal(left.status, "ok", `leave reply ${show(left)}`);
});

test("lp 02 broadcasts both ways between a long-poll and a WebSocket client", T, async (t) => {
  t.after(closeAll);
  const topic = uniqueTopic("echo", "lp-mixed");
  const lpSocket = await connectLongPoll({ user: "lp-bob" });
  const wsSocket = await connect({ user: "ws-carol" });
  const lp = lpSocket.channel(topic);
  const ws = wsSocket.channel(topic);
  await join(lp);
  await join(ws);

  const atLp = waitFor(lp, "shout", (p) => p.from === "ws");
  await push(ws, "shout", { from: "ws" });
  assert.deepEqual(await atLp, { from: "ws" });

  const atWs = waitFor(ws, "shout", (p) => p.from === "lp");
  const atLpToo = waitFor(lp, "shout", (p) => p.from === "lp");
  await push(lp, "shout", { from: "lp" });
  assert.deepEqual(await atWs, { from: "lp" });
  assert.deepEqual(await atLpToo, { from: "lp" });

  // A binary push travels base64-encoded in the POST; the WebSocket member gets it as
  // binary. (Binary never goes out over long-poll: the long-poll member does not get it.)
  const binAtWs = waitFor(ws, "bin_shout");
  const body = new Uint8Array([1, 2, 250, 0]).buffer;
  assert.deepEqual(await push(lp, "bin_shout", body), { status: "ok", response: {} });
  assert.deepEqual(bytes(await binAtWs), [1, 2, 250, 0]);
});

test("lp 03 pushes of one tick are batched and answered in order", T, async (t) => {
  t.after(closeAll);
  const socket = await connectLongPoll({ user: "lp-dave" });
  const channel = socket.channel(uniqueTopic("echo", "lp-batch"));
  await join(channel);
  const replies = [];
  const all = [];
  for (let i = 0; i < 150; i++) {
    all.push(push(channel, "echo", { i }).then((r) => replies.push(r.response.i)));
  }
  await Promise.all(all);
  assert.deepEqual(replies, [...Array(150).keys()]);
});

test("lp 04 a forged token is refused as Phoenix does: session gone, reconnect, rejoin", T, async (t) => {
  t.after(closeAll);
  // Raw requests first: a GET with a forged token is a new handshake, a POST is 410.
  const forged = "AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
  const url = `${longPollUrl()}?user=lp-eve&vsn=2.0.0&token=${forged}`;
  const get = await fetch(url);
  assert.equal(get.status, 200);
  assert.equal(get.headers.get("content-type"), "application/json; charset=utf-8");
  const handshake = await get.json();
  assert.equal(handshake.status, 410, show(handshake));
  assert.ok(handshake.token && handshake.token !== forged, show(handshake));
  const posted = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/x-ndjson" },
    body: "[null,\"1\",\"phoenix\",\"heartbeat\",{}]",
  });
  assert.deepEqual(await posted.json(), { status: 410 });

  // Then phoenix.js holding a tampered token.
  const socket = await connectLongPoll({ user: "lp-eve" });
  const channel = socket.channel(uniqueTopic("echo", "lp-forged"));
  await join(channel);
  const closes = recordCloses(socket);
  const conn = socket.conn;
  const real = conn.token;
  const tampered = real.slice(0, -2) + (real.endsWith("AA") ? "BB" : "AA");
  // Every later request of this transport carries the tampered token.
  Object.defineProperty(conn, "token", { get: () => tampered, set: () => {} });
  await waitForRejoin(channel, 10_000);
  assert.ok(closes.includes(3410), `expected a "session gone" close (3410), got ${show(closes)}`);
  assert.notEqual(socket.conn, conn, "phoenix.js should have opened a new transport");
  assert.notEqual(socket.conn.token, real, "the new transport should hold a new token");
  assert.deepEqual(await push(channel, "echo", { after: "rejoin" }), {
    status: "ok",
    response: { after: "rejoin" },
  });
});

test("lp 05 a session whose client stops polling expires; the client then rejoins", T, async (t) => {
  // (tests/longpoll.rs checks from Rust that the channel's subscriber goes with it.)
  t.after(closeAll);
  const socket = await connectLongPoll({ user: "lp-frank" });
  const topic = uniqueTopic("echo", "lp-expire");
  const channel = socket.channel(topic);
  await join(channel);

  // Freeze the transport: the poll in flight completes, no new one starts.
  const conn = socket.conn;
  const oldToken = conn.token;
  conn.poll = () => {};

  // Wait for the session to end: an (empty) POST does not count as a poll, so it can
  // watch the session without keeping it alive; it is answered 410 once it is gone.
  // At most the window (the poll in flight) plus the timeout, with generous slack.
  const tokenUrl = `${longPollUrl()}?user=lp-frank&vsn=2.0.0&token=${oldToken}`;
  await waitUntil(
    `the session to expire (POSTs with its token answered 410)`,
    async () => {
      const res = await fetch(tokenUrl, {
        method: "POST",
        headers: { "Content-Type": "application/x-ndjson" },
        body: "",
      });
      const status = (await res.json()).status;
      assert.ok(status === 200 || status === 410, `POST to a live or gone session answered ${status}`);
      return status === 410;
    },
    5 * (WINDOW_MS + SESSION_TIMEOUT_MS),
    100,
  );

  // The session is gone: its token opens a new session now.
  const res = await fetch(tokenUrl);
  const body = await res.json();
  assert.equal(body.status, 410, show(body));
  assert.notEqual(body.token, oldToken);

  // Thawed, phoenix.js sees "session gone" (3410), reconnects and rejoins.
  const closes = recordCloses(socket);
  delete conn.poll;
  conn.poll();
  await waitForRejoin(channel, 10_000);
  assert.ok(closes.includes(3410), `expected a "session gone" close (3410), got ${show(closes)}`);
  assert.deepEqual(await push(channel, "echo", { after: "expiry" }), {
    status: "ok",
    response: { after: "expiry" },
  });
});

test("lp 06 refused connect (no user): error 403, never opens", T, async (t) => {
  t.after(closeAll);
  const socket = createSocket({}, { transport: LongPoll });
  const error = await waitForSocket(socket, "error");
  assert.equal(error, 403, `expected phoenix.js's LongPoll error 403, got ${show(error)}`);
  assert.equal(socket.isConnected(), false);
});

test("lp 07 longPollFallbackMs: WebSocket refused, phoenix.js falls back to long-poll", T, async (t) => {
  t.after(closeAll);
  const url = process.env.FLUXWIRE_NOWS_URL;
  assert.ok(url, "FLUXWIRE_NOWS_URL is not set");
  const stored = new Map();
  const sessionStorage = {
    getItem: (key) => (stored.has(key) ? stored.get(key) : null),
    setItem: (key, value) => stored.set(key, String(value)),
    removeItem: (key) => stored.delete(key),
  };
  // lib's createSocket gives phoenix.js ws's WebSocket as the primary transport.
  const socket = createSocket({ user: "lp-henry" }, { url, longPollFallbackMs: 1000, sessionStorage });
  await waitForSocket(socket, "open", 10_000);
  assert.equal(socket.transport, LongPoll, "the socket should have fallen back to LongPoll");
  assert.ok(socket.conn instanceof LongPoll);
  assert.equal(stored.get("phx:fallback:LongPoll"), "true", `sessionStorage ${show([...stored])}`);

  const topic = uniqueTopic("echo", "lp-fallback");
  const channel = socket.channel(topic);
  assert.deepEqual(await join(channel), { topic, user: "lp-henry" });
  assert.deepEqual(await push(channel, "echo", { via: "fallback" }), {
    status: "ok",
    response: { via: "fallback" },
  });
});
