// fluxwire's default application (docs/contract.md) through phoenix.js 1.8.x, and a
// raw `ws` client where phoenix.js cannot send what a test needs:
// connect refusals, the "all" status channel, "room:NAME" chat rooms, presence.
//
//   cd tests/js && FLUXWIRE_URL=ws://127.0.0.1:4000/socket node --test app.test.mjs
//
// The server is the real app (cargo test --test app_js starts one on an ephemeral port).
// Its "all" store is global and shared by every test of this file, so every test uses
// user and room names of its own and waits for EXACT states (users, connections,
// presence) with predicates: leftovers of the previous test may still be leaving when a
// test starts, and status broadcasts are coalesced (~20 ms), so a test never relies on
// a fixed sleep or on the first status it sees, only on "the last status is current".

import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";

import { LongPoll, Presence } from "phoenix";
import { WebSocket } from "ws";

import {
  closeAll,
  connect,
  disconnect,
  join,
  JoinError,
  leave,
  push,
  recordMessages,
  serverUrl,
  show,
  TimeoutError,
  waitFor,
  waitForMessage,
  waitForSocket,
} from "./lib.mjs";

const T = { timeout: 30_000 };
const WAIT_MS = 5000;

// ---------------------------------------------------------------------------------------
// Names

const RUN = randomBytes(3).toString("hex");
let counter = 0;
/** A user name no other test (or earlier run against the same server) uses. ASCII. */
const uname = (base) => `${base}-${RUN}-${++counter}`;
/** A fresh room topic. */
const uroom = (base) => `room:${base}-${RUN}-${++counter}`;

/** show() cut to a readable length, for error messages. */
function brief(value, max = 1200) {
  const text = show(value);
  return text.length > max ? `${text.slice(0, max)}... (${text.length} chars)` : text;
}

/** A status_users payload with its msgs summarised, for error messages. */
function briefStatus(p) {
  if (!p || !Array.isArray(p.msgs)) return brief(p);
  const ids = p.msgs.map((m) => m.id);
  return brief({ ...p, msgs: `<${ids.length} msgs${ids.length ? `, ids ${ids[0]}..${ids.at(-1)}` : ""}>` });
}

const sorted = (list) => [...list].sort();
const sameList = (a, b) => Array.isArray(a) && a.length === b.length && a.every((x, i) => x === b[i]);

// ---------------------------------------------------------------------------------------
// Local waits (same discipline as lib.mjs: every wait has a timeout naming what it
// waited for; everything pending is cancelled by cleanup()).

const localPending = new Set();
const rawClients = new Set();

function until(what, timeoutMs, setup) {
  return new Promise((resolve, reject) => {
    let done = false;
    let cleanupFn = null;
    const cancel = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      localPending.delete(cancel);
      const c = cleanupFn;
      cleanupFn = null;
      if (c) {
        try { c(); } catch { /* never throw from cleanup */ }
      }
    };
    const finish = (fn, value) => {
      if (done) return;
      cancel();
      fn(value);
    };
    localPending.add(cancel);
    const timer = setTimeout(() => {
      const desc = typeof what === "function" ? what() : what;
      finish(reject, new TimeoutError(`timed out after ${timeoutMs} ms waiting for ${desc}`));
    }, timeoutMs);
    try {
      cleanupFn = setup((v) => finish(resolve, v), (e) => finish(reject, e)) || null;
    } catch (e) {
      finish(reject, e);
    }
    if (done && cleanupFn) {
      const c = cleanupFn;
      cleanupFn = null;
      c();
    }
  });
}

/** Runs a predicate; a throw rejects the wait instead of escaping into phoenix.js. */
function checker(pred, resolve, reject, value) {
  let ok;
  try {
    ok = pred(value);
  } catch (e) {
    reject(e);
    return;
  }
  if (ok) resolve(value);
}

/**
 * Resolves once `list` (an array a handler for `event` on `channel` fills) holds an item
 * matching pred: items already received count too.
 */
function untilIn(list, channel, event, pred, what, timeoutMs = WAIT_MS) {
  return until(() => `${what} (event "${event}" on "${channel.topic}"); seen: ${brief(list.slice(-5))}`, timeoutMs,
    (resolve, reject) => {
      const check = () => {
        for (const item of list) checker(pred, resolve, reject, item);
      };
      const ref = channel.on(event, () => check());
      check();
      return () => channel.off(event, ref);
    });
}

async function cleanup() {
  for (const cancel of [...localPending]) cancel();
  for (const raw of [...rawClients]) raw.terminate();
  await closeAll();
}

// ---------------------------------------------------------------------------------------
// Connect helpers

/** The ws URL of the WebSocket transport for `query` (a string or params object). */
function wsUrl(query, mount = "/socket") {
  const base = serverUrl().replace(/\/socket$/, mount);
  const qs = typeof query === "string" ? query : new URLSearchParams(query).toString();
  return `${base}/websocket?${qs}`;
}

/** HTTP status of a WebSocket handshake for `query`: 101 when upgraded. */
function handshakeStatus(query) {
  const url = wsUrl(query);
  return until(`WebSocket handshake answer for ${url}`, WAIT_MS, (resolve, reject) => {
    const ws = new WebSocket(url);
    ws.on("unexpected-response", (_req, res) => {
      res.resume();
      resolve(res.statusCode);
      ws.terminate();
    });
    ws.on("upgrade", (res) => resolve(res.statusCode));
    ws.on("open", () => ws.terminate());
    ws.on("error", (e) => {
      if (!/Unexpected server response/.test(e.message)) reject(e);
    });
    return () => { if (ws.readyState !== WebSocket.CLOSED) ws.terminate(); };
  });
}

/**
 * A raw Phoenix V2 JSON client on `ws`: what phoenix.js never sends (a second phx_join
 * with a new ref on the same socket, a leave and a join written back to back).
 */
class Raw {
  static async connect(user, mount = "/socket") {
    const url = wsUrl({ user, vsn: "2.0.0" }, mount);
    const ws = new WebSocket(url);
    const raw = new Raw(ws, user);
    rawClients.add(raw);
    await until(`raw WebSocket ${url} to open`, WAIT_MS, (resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", (e) => reject(new Error(`raw connect ${url}: ${e.message}`)));
      return null;
    });
    return raw;
  }

  constructor(ws, user) {
    this.ws = ws;
    this.user = user;
    this.messages = [];
    this.waiters = new Set();
    ws.on("message", (data, isBinary) => {
      assert.ok(!isBinary, "a V2 JSON client must only get text frames");
      const msg = JSON.parse(data.toString("utf8"));
      this.messages.push(msg);
      for (const w of [...this.waiters]) w(msg);
    });
  }

  send(joinRef, ref, topic, event, payload = {}) {
    this.ws.send(JSON.stringify([joinRef, ref, topic, event, payload]));
  }

  /** The first message (already received or future) for which pred([jr,ref,topic,event,payload]) holds. */
  wait(pred, what, timeoutMs = WAIT_MS) {
    return until(() => `${what} on raw client ${this.user}; got: ${brief(this.messages.slice(-8))}`, timeoutMs,
      (resolve, reject) => {
        for (const m of this.messages) {
          checker(pred, resolve, reject, m);
        }
        const w = (m) => checker(pred, resolve, reject, m);
        this.waiters.add(w);
        return () => this.waiters.delete(w);
      });
  }

  reply(ref, topic) {
    return this.wait((m) => m[1] === ref && m[2] === topic && m[3] === "phx_reply", `phx_reply to ref ${ref} on "${topic}"`);
  }

  /** Drops the TCP connection without a WebSocket close handshake. */
  terminate() {
    rawClients.delete(this);
    if (this.ws.readyState !== WebSocket.CLOSED) this.ws.terminate();
  }
}

/**
 * Kills a phoenix.js socket's connection the way a network loss or a killed tab does:
 * the TCP connection ends without a WebSocket close frame. phoenix.js is told not to
 * reconnect (its closeWasClean flag), so the server sees this connection end for good.
 */
async function kill(socket) {
  socket.closeWasClean = true;
  const ws = socket.conn;
  assert.ok(ws && typeof ws.terminate === "function", "phoenix.js socket.conn should be the ws WebSocket");
  const closed = waitForSocket(socket, "close");
  ws.terminate(); // ws: this._socket.destroy(), no close frame
  await closed;
}

// ---------------------------------------------------------------------------------------
// Status (the "all" channel's status_users)

/** Tracks the status_users a channel receives; create it BEFORE joining. */
function trackStatus(channel) {
  const st = { channel, latest: null, all: [], waiters: new Set() };
  channel.on("status_users", (p) => {
    st.latest = p;
    st.all.push(p);
    for (const w of [...st.waiters]) w();
  });
  return st;
}

/** Resolves with the latest status_users (already received or future) matching pred. */
function untilStatus(st, pred, what, timeoutMs = WAIT_MS) {
  return until(() => `status_users with ${what} (on "${st.channel.topic}"); last one seen: ${briefStatus(st.latest)}`,
    timeoutMs, (resolve, reject) => {
      const check = () => { if (st.latest) checker(pred, resolve, reject, st.latest); };
      st.waiters.add(check);
      check();
      return () => st.waiters.delete(check);
    });
}

/** Waits for the status with exactly these users (any order) and connections. */
async function expectStatus(st, users, connections) {
  const want = sorted(users);
  const p = await untilStatus(st, (s) => sameList(s.users, want) && s.connections === connections,
    `users=${show(want)} connections=${connections}`);
  assertStatusShape(p);
  return p;
}

/**
 * No ghost: after the expected state was seen, a hit makes the store broadcast its
 * current state again; that state must still be the expected one.
 */
async function settleStatus(channel, st, users, connections) {
  const r = await push(channel, "hit", {});
  assert.equal(r.status, "ok", `hit reply ${show(r)}`);
  const p = await untilStatus(st, (s) => s.hits >= r.response.hits, `hits >= ${r.response.hits}`);
  assert.deepEqual(p.users, sorted(users), `users in a status_users sent after a later hit (ghost?) ${briefStatus(p)}`);
  assert.equal(p.connections, connections, `connections in a status_users sent after a later hit (ghost?) ${briefStatus(p)}`);
  assert.equal(p.user_count, users.length, `user_count ${briefStatus(p)}`);
  return p;
}

function assertMessageShape(m, where = "message") {
  assert.deepEqual(Object.keys(m).sort(), ["at", "body", "id", "user"], `${where}: keys of ${show(m)}`);
  assert.ok(Number.isInteger(m.id) && m.id > 0, `${where}: id should be a positive integer: ${show(m)}`);
  assert.equal(typeof m.user, "string", `${where}: user ${show(m)}`);
  assert.equal(typeof m.body, "string", `${where}: body ${show(m)}`);
  assert.ok(Number.isInteger(m.at), `${where}: at should be an integer (unix ms): ${show(m)}`);
  const now = Date.now();
  assert.ok(m.at > now - 10 * 60_000 && m.at <= now + 60_000, `${where}: at should be unix ms near now (${now}): ${show(m)}`);
}

function assertIncreasingIds(list, where) {
  for (let i = 1; i < list.length; i++) {
    assert.ok(list[i].id > list[i - 1].id, `${where}: ids must increase (oldest first): ${show(list.map((m) => m.id))}`);
  }
}

function assertStatusShape(p) {
  assert.deepEqual(Object.keys(p).sort(), ["connections", "hits", "msgs", "user_count", "users"],
    `status_users keys: ${briefStatus(p)}`);
  assert.ok(Array.isArray(p.users) && p.users.every((u) => typeof u === "string"), `users: ${show(p.users)}`);
  assert.deepEqual(p.users, sorted(p.users), `users must be sorted: ${show(p.users)}`);
  assert.equal(new Set(p.users).size, p.users.length, `users must be distinct: ${show(p.users)}`);
  assert.equal(p.user_count, p.users.length, `user_count must be len(users): ${briefStatus(p)}`);
  assert.ok(Number.isInteger(p.connections) && p.connections >= p.users.length,
    `connections must be an integer >= user_count: ${briefStatus(p)}`);
  assert.ok(Number.isInteger(p.hits) && p.hits >= 0, `hits: ${show(p.hits)}`);
  assert.ok(Array.isArray(p.msgs) && p.msgs.length <= 100, `msgs: at most 100, got ${p.msgs && p.msgs.length}`);
  p.msgs.forEach((m) => assertMessageShape(m, "status_users msgs[]"));
  assertIncreasingIds(p.msgs, "status_users msgs");
}

// ---------------------------------------------------------------------------------------
// Presence (phoenix.js Presence class)

function clone(v) {
  return v === undefined ? undefined : JSON.parse(JSON.stringify(v));
}

/** A phoenix.js Presence on `channel` with its callbacks recorded; create BEFORE joining. */
function trackPresence(channel) {
  const presence = new Presence(channel);
  const w = { channel, presence, joins: [], leaves: [], syncs: 0, waiters: new Set() };
  presence.onJoin((key, current, newPres) => w.joins.push({ key, current: clone(current), metas: clone(newPres.metas) }));
  presence.onLeave((key, current, leftPres) => w.leaves.push({ key, current: clone(current), metas: clone(leftPres.metas) }));
  presence.onSync(() => {
    w.syncs += 1;
    for (const f of [...w.waiters]) f();
  });
  return w;
}

/** The Presence's current state as {key: [meta, ...]}. */
function presenceState(w) {
  const out = {};
  w.presence.list((key, { metas }) => { out[key] = clone(metas); });
  return out;
}

function untilPresence(w, pred, what, timeoutMs = WAIT_MS) {
  return until(() => `presence on "${w.channel.topic}" with ${what}; current: ${brief(presenceState(w))}`,
    timeoutMs, (resolve, reject) => {
      const check = () => { if (w.syncs > 0) checker(pred, resolve, reject, presenceState(w)); };
      w.waiters.add(check);
      check();
      return () => w.waiters.delete(check);
    });
}

/** Waits until the keys are exactly those of `counts` with that many metas each. */
function expectPresence(w, counts) {
  const want = Object.keys(counts).sort();
  return untilPresence(w, (s) => sameList(Object.keys(s).sort(), want) && want.every((k) => s[k].length === counts[k]),
    `exactly ${show(counts)} (key: number of metas)`);
}

function assertMeta(meta, where = "meta") {
  assert.equal(typeof meta.phx_ref, "string", `${where}: phx_ref should be a string: ${show(meta)}`);
  assert.ok(meta.phx_ref.length > 0, `${where}: phx_ref empty: ${show(meta)}`);
  assert.ok(Number.isInteger(meta.online_at), `${where}: online_at should be an integer (unix ms): ${show(meta)}`);
  const now = Date.now();
  assert.ok(meta.online_at > now - 10 * 60_000 && meta.online_at <= now + 60_000,
    `${where}: online_at should be unix ms near now (${now}): ${show(meta)}`);
}

/**
 * A fresh snapshot of the server's view of `topic`: a new probe connection joins it and
 * returns the presence_state it is pushed (and, for "all", its status_users), without the
 * probe itself. The probe disconnects before this returns.
 */
async function probe(topic) {
  const name = uname("probe");
  const socket = await connect({ user: name });
  const ch = socket.channel(topic, {});
  const stateP = waitFor(ch, "presence_state");
  const statusP = topic === "all" ? waitFor(ch, "status_users") : null;
  await join(ch);
  const presence = await stateP;
  const status = statusP ? await statusP : null;
  await disconnect(socket);
  for (const [key, value] of Object.entries(presence)) {
    assert.ok(value && Array.isArray(value.metas), `presence_state[${show(key)}] must have a metas array: ${show(presence)}`);
  }
  const others = { ...presence };
  assert.ok(others[name], `the probe should see itself in presence_state: ${show(presence)}`);
  delete others[name];
  return { name, presence: others, status };
}

/** Asserts the probe's presence_state has exactly `counts` (key: number of metas). */
function assertSnapshot(snapshot, counts, where) {
  const got = Object.fromEntries(Object.entries(snapshot.presence).map(([k, v]) => [k, v.metas.length]));
  assert.deepEqual(got, counts, `${where}: presence_state of a fresh joiner (ghost?) ${show(snapshot.presence)}`);
}

/** Waits until the Presence has exactly the keys and phx_refs of a probe's snapshot. */
function expectPresenceLike(w, snapshot) {
  const refsOf = (state) => Object.fromEntries(Object.entries(state)
    .map(([k, metas]) => [k, metas.map((m) => m.phx_ref).sort()]).sort(([a], [b]) => (a < b ? -1 : 1)));
  const want = refsOf(Object.fromEntries(Object.entries(snapshot.presence).map(([k, v]) => [k, v.metas])));
  return untilPresence(w, (s) => JSON.stringify(refsOf(s)) === JSON.stringify(want),
    `the keys and phx_refs of a fresh presence_state ${show(want)}`);
}

// ---------------------------------------------------------------------------------------
// Common setups

/** Connects `user` and joins "all" with status and presence tracked. */
async function joinAll(user, opts = {}) {
  const socket = await connect({ user }, opts);
  const channel = socket.channel("all", {});
  const status = trackStatus(channel);
  const presence = trackPresence(channel);
  const reply = await join(channel);
  return { socket, channel, status, presence, reply, user };
}

/** Connects `user` and joins `topic` (a room) with presence tracked. */
async function joinRoom(user, topic, socket = null) {
  socket = socket || (await connect({ user }));
  const channel = socket.channel(topic, {});
  const presence = trackPresence(channel);
  const msgs = [];
  channel.on("new_msg", (m) => msgs.push(m));
  const reply = await join(channel);
  return { socket, channel, presence, msgs, reply, user };
}

function assertJoinRefused(reason) {
  return (err) => {
    assert.ok(err instanceof JoinError, `expected a JoinError, got ${err && err.stack}`);
    assert.equal(err.status, "error", `join should be answered with status "error": ${err.message}`);
    assert.deepEqual(err.response, { reason }, `join error response`);
    return true;
  };
}

async function post(channel, body) {
  const r = await push(channel, "new_msg", { body });
  assert.equal(r.status, "ok", `new_msg ${show(body).slice(0, 60)} on "${channel.topic}": ${show(r)}`);
  assert.deepEqual(Object.keys(r.response), ["id"], `new_msg reply must be {"id"}: ${show(r)}`);
  assert.ok(Number.isInteger(r.response.id), `id must be an integer: ${show(r)}`);
  return r.response.id;
}

// =======================================================================================
// Connect

test("connect: missing or invalid user is refused with 403 and phoenix.js never opens", T, async (t) => {
  t.after(cleanup);
  const bad = [
    ["missing user", {}],
    ["empty user", { user: "" }],
    ["whitespace-only user", { user: "  \t " }],
    ["65 code points", { user: "é".repeat(65) }],
    ["65 code points (astral)", { user: "😀".repeat(65) }],
    ["65 code points after trimming", { user: ` ${"a".repeat(65)} ` }],
    ["a control char (BEL)", { user: "ali\u0007ce" }],
    ["a control char (newline inside)", { user: "ali\nce" }],
    ["a control char (DEL)", { user: "alice\u007f" }],
    ["a C1 control char (NEL)", { user: "ali\u0085ce" }],
  ];
  for (const [what, params] of bad) {
    const status = await handshakeStatus({ ...params, vsn: "2.0.0" });
    assert.equal(status, 403, `${what}: ${show(params)} must be refused with HTTP 403 before the upgrade`);
    let opened = false;
    await assert.rejects(
      connect(params).then((s) => { opened = true; return s; }),
      (err) => {
        assert.match(err.message, /403/, `${what}: phoenix.js should report the 403: ${err.message}`);
        return true;
      },
      `${what}: phoenix.js must not connect with ${show(params)}`,
    );
    assert.equal(opened, false, `${what}: socket opened`);
  }
  // The other mount and the V1 serializer apply the same rule.
  const statusMount = await until("handshake on /status with an empty user", WAIT_MS, (resolve) => {
    const ws = new WebSocket(wsUrl({ user: " " }, "/status"));
    ws.on("unexpected-response", (_req, res) => { res.resume(); resolve(res.statusCode); ws.terminate(); });
    ws.on("open", () => { resolve(101); ws.terminate(); });
    ws.on("error", () => {});
    return null;
  });
  assert.equal(statusMount, 403, "/status mount: empty user");
  assert.equal(await handshakeStatus("vsn=1.0.0"), 403, "V1 without user");
});

test("connect: names are trimmed; 64 code points and non-ASCII are accepted", T, async (t) => {
  t.after(cleanup);
  const base = uname("alice");
  for (const [raw, name] of [
    [`  ${base}  `, base],
    [` ${base}-b `, `${base}-b`],
    ["é".repeat(64), "é".repeat(64)],
    ["😀".repeat(64), "😀".repeat(64)], // 64 code points, 128 UTF-16 units
    [`Jürgen K. ${base}`, `Jürgen K. ${base}`],
  ]) {
    assert.equal(await handshakeStatus({ user: raw, vsn: "2.0.0" }), 101, `user ${show(raw)} should be accepted`);
    const socket = await connect({ user: raw });
    const reply = await join(socket.channel("all", {}));
    assert.deepEqual(reply, { user: name }, `join reply of "all" for user ${show(raw)}`);
    await disconnect(socket);
  }
});

test("connect: the /status mount serves the same app", T, async (t) => {
  t.after(cleanup);
  const a = await joinAll(uname("wsuser"));
  const statusUser = uname("statusmount");
  const s = await connect({ user: statusUser }, { url: serverUrl().replace(/\/socket$/, "/status") });
  const sch = s.channel("all", {});
  const sstatus = trackStatus(sch);
  assert.deepEqual(await join(sch), { user: statusUser }, "join reply over /status");
  await expectStatus(a.status, [a.user, statusUser], 2);
  const at = waitFor(a.channel, "new_msg", (m) => m.body === "via /status");
  const id = await post(sch, "via /status");
  assert.equal((await at).id, id, "a /status client's message reaches a /socket client");
  const hit = await push(a.channel, "hit", {});
  await untilStatus(sstatus, (p) => p.hits === hit.response.hits, `hits=${hit.response.hits} at the /status client`);
});

test("connect: phoenix.js's long-poll transport serves the same app", T, async (t) => {
  t.after(cleanup);
  const a = await joinAll(uname("wsuser"));
  const lpUser = uname("lpuser");
  const lp = await connect({ user: lpUser }, { transport: LongPoll, timeoutMs: 10_000 });
  const lch = lp.channel("all", {});
  const lstatus = trackStatus(lch);
  const lpresence = trackPresence(lch);
  assert.deepEqual(await join(lch), { user: lpUser }, "join reply over long-poll");
  await expectStatus(a.status, [a.user, lpUser], 2);
  await expectPresence(a.presence, { [a.user]: 1, [lpUser]: 1 });
  await expectPresence(lpresence, { [a.user]: 1, [lpUser]: 1 });

  const atLp = waitFor(lch, "new_msg", (m) => m.body === "from ws");
  const id = await post(a.channel, "from ws");
  const m = await atLp;
  assert.deepEqual(m, { id, user: a.user, body: "from ws", at: m.at }, "the long-poll client gets the broadcast");
  const atWs = waitFor(a.channel, "new_msg", (m2) => m2.body === "from lp");
  const id2 = await post(lch, "from lp");
  assert.equal((await atWs).id, id2, "the WebSocket client gets the long-poll client's message");
  const hit = await push(lch, "hit", {});
  assert.equal(hit.status, "ok");
  await untilStatus(a.status, (p) => p.hits === hit.response.hits, `hits=${hit.response.hits} after a long-poll hit`);
  await untilStatus(lstatus, (p) => p.hits === hit.response.hits, "the long-poll client's status_users");
  // A long-poll client never announces a disconnect (its session expires 15-30 s after
  // the last poll, docs/protocol.md 8.6), so leave the topic before disconnecting.
  const r = await leave(lch);
  assert.deepEqual({ status: r.status, response: r.response }, { status: "ok", response: {} }, "leave over long-poll");
  await expectStatus(a.status, [a.user], 1);
  await expectPresence(a.presence, { [a.user]: 1 });
  await settleStatus(a.channel, a.status, [a.user], 1);
  await disconnect(lp);
});

test("connect: the app over the V1 JSON serializer (no vsn)", T, async (t) => {
  t.after(cleanup);
  const user = uname("v1user");
  const url = wsUrl({ user });
  const ws = new WebSocket(url);
  const got = [];
  const waiters = new Set();
  ws.on("message", (data) => {
    got.push(JSON.parse(data.toString("utf8")));
    for (const w of [...waiters]) w();
  });
  t.after(() => ws.terminate());
  await until(`V1 WebSocket ${url} to open`, WAIT_MS, (resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
    return null;
  });
  const waitV1 = (pred, what) => until(() => `${what}; got ${brief(got)}`, WAIT_MS, (resolve, reject) => {
    const check = () => { for (const m of got) checker(pred, resolve, reject, m); };
    waiters.add(check);
    check();
    return () => waiters.delete(check);
  });
  ws.send(JSON.stringify({ topic: "all", event: "phx_join", payload: {}, ref: "1", join_ref: "1" }));
  const reply = await waitV1((m) => m.event === "phx_reply" && m.ref === "1", "V1 join reply");
  assert.equal(reply.topic, "all");
  assert.deepEqual(reply.payload, { status: "ok", response: { user } }, "V1 join reply payload");
  const st = await waitV1((m) => m.event === "status_users", "V1 status_users push");
  assertStatusShape(st.payload);
  assert.ok(st.payload.users.includes(user));
  ws.send(JSON.stringify({ topic: "all", event: "new_msg", payload: { body: " v1 " }, ref: "2" }));
  const msg = await waitV1((m) => m.event === "new_msg", "V1 new_msg broadcast");
  assert.deepEqual(msg.payload, { id: msg.payload.id, user, body: " v1 ", at: msg.payload.at });
  const r2 = await waitV1((m) => m.event === "phx_reply" && m.ref === "2", "V1 new_msg reply");
  assert.deepEqual(r2.payload, { status: "ok", response: { id: msg.payload.id } });
});

// =======================================================================================
// "all"

test("all: join reply {user}, then a status_users push right after it, with the exact shape", T, async (t) => {
  t.after(cleanup);
  const user = uname("joiner");
  const socket = await connect({ user });
  const rec = recordMessages(socket, (m) => m.topic === "all");
  const channel = socket.channel("all", { any: ["object", 1] });
  // The joiner's own status_users is a push: it carries the join ref (a coalesced
  // broadcast, join_ref null, may come around it too).
  const statusPush = waitForMessage(socket, (m) => m.topic === "all" && m.event === "status_users" && m.join_ref !== null,
    "the status_users push (with the join ref) after the join");
  const reply = await join(channel);
  assert.deepEqual(reply, { user }, "join reply of all");
  const first = await statusPush;
  rec.stop();

  const joinRef = channel.joinRef();
  const msgs = rec.messages;
  assert.equal(msgs[0].event, "phx_reply", `the join reply must be the first message of the join: ${show(msgs.map((m) => m.event))}`);
  assert.equal(msgs[0].ref, joinRef);
  const iStatus = msgs.findIndex((m) => m.event === "status_users" && m.join_ref === joinRef);
  assert.ok(iStatus > 0, `the status_users push comes after the reply: ${show(msgs.map((m) => m.event))}`);
  assert.equal(first.join_ref, joinRef, `the joiner's status_users is a push (carries the join ref): ${show(first)}`);
  assert.equal(first.ref, null, `a push has a null ref: ${show(first)}`);
  assertStatusShape(first.payload);
  assert.ok(first.payload.users.includes(user), `the joiner is in its own first status: ${show(first.payload)}`);
  assert.ok(first.payload.connections >= 1);

  // A second client: exact users and connections (both sorted, distinct).
  const other = uname("Zed"); // capital: sorts before lowercase names
  const b = await joinAll(other);
  const p = await expectStatus(b.status, [user, other], 2);
  assert.deepEqual(p.users, sorted([user, other]));
  assert.equal(p.user_count, 2);
});

test("all: hit replies {hits: n} and the other client sees hits in status_users", T, async (t) => {
  t.after(cleanup);
  const a = await joinAll(uname("hitter"));
  const b = await joinAll(uname("seer"));
  const r1 = await push(a.channel, "hit", {});
  assert.equal(r1.status, "ok", `hit reply ${show(r1)}`);
  assert.deepEqual(Object.keys(r1.response), ["hits"], `hit reply ${show(r1)}`);
  const n = r1.response.hits;
  assert.ok(Number.isInteger(n) && n >= 1, `hits: ${show(r1)}`);
  const seen = await untilStatus(b.status, (p) => p.hits === n, `hits=${n}`);
  assertStatusShape(seen);

  const r2 = await push(a.channel, "hit", { anything: [1, 2], goes: true });
  assert.deepEqual(r2, { status: "ok", response: { hits: n + 1 } }, "second hit (any payload)");
  const r3 = await push(b.channel, "hit", {});
  assert.deepEqual(r3, { status: "ok", response: { hits: n + 2 } }, "hit from the other client");
  await untilStatus(a.status, (p) => p.hits === n + 2, `hits=${n + 2} at the first client`);
  await untilStatus(b.status, (p) => p.hits === n + 2, `hits=${n + 2} at the second client`);

  // Concurrent hits from both: every hit counted once, replies distinct.
  const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => push(i % 2 ? a.channel : b.channel, "hit", {})));
  const counts = replies.map((r) => r.response.hits).sort((x, y) => x - y);
  assert.deepEqual(counts, Array.from({ length: 20 }, (_, i) => n + 3 + i), "20 concurrent hits: each count once");
  await untilStatus(a.status, (p) => p.hits === n + 22, `hits=${n + 22}`);
});

test("all: ping replies ok with the same payload", T, async (t) => {
  t.after(cleanup);
  const a = await joinAll(uname("pinger"));
  for (const payload of [
    {},
    { a: 1 },
    { nested: { list: [1, "two", null, true, { x: -1.5 }], s: "héllo ✓ \"q\" \\ \n 😀" } },
    { body: "   " },
  ]) {
    assert.deepEqual(await push(a.channel, "ping", payload), { status: "ok", response: payload }, `ping ${show(payload)}`);
  }
  // "any" payload: phoenix.js always sends objects, a raw client can send anything.
  const raw = await Raw.connect(uname("rawpinger"));
  raw.send("1", "1", "all", "phx_join", {});
  await raw.reply("1", "all");
  let ref = 1;
  for (const payload of [[1, "two"], "text", 7, null, true]) {
    const r = String(++ref);
    raw.send("1", r, "all", "ping", payload);
    assert.deepEqual(await raw.reply(r, "all"), ["1", r, "all", "phx_reply", { status: "ok", response: payload }],
      `raw ping ${show(payload)}`);
  }
  raw.send("1", "99", "all", "hit", null);
  const hit = await raw.reply("99", "all");
  assert.equal(hit[4].status, "ok", `hit with a null payload: ${show(hit)}`);
  assert.ok(Number.isInteger(hit[4].response.hits));
});

test("all: new_msg valid: ok {id}, everyone gets new_msg exactly as sent, msgs in status_users", T, async (t) => {
  t.after(cleanup);
  const a = await joinAll(uname("poster"));
  const b = await joinAll(uname("reader"));
  const body1 = "  Hello, *world*  é 😀 <b>not html</b>\n";
  const atA = waitFor(a.channel, "new_msg", (m) => m.body === body1);
  const atB = waitFor(b.channel, "new_msg", (m) => m.body === body1);
  const before = Date.now();
  const id1 = await post(a.channel, body1);
  const mA = await atA;
  const mB = await atB;
  assertMessageShape(mA, "new_msg");
  assert.deepEqual(mA, { id: id1, user: a.user, body: body1, at: mA.at }, "new_msg at the sender (body not trimmed)");
  assert.deepEqual(mB, mA, "new_msg at the other client");
  assert.ok(mA.at >= before - 1000 && mA.at <= Date.now() + 1000, `at ${mA.at} should be now (${before})`);

  const body2 = "second";
  const id2 = await post(b.channel, body2);
  assert.ok(id2 > id1, `ids increase: ${id1} then ${id2}`);
  const st = await untilStatus(a.status, (p) => p.msgs.length > 0 && p.msgs.at(-1).id === id2, `msgs ending with id ${id2}`);
  assertStatusShape(st);
  const last2 = st.msgs.slice(-2);
  assert.deepEqual(last2[0], mA, "status_users msgs hold the message exactly as broadcast");
  assert.deepEqual(last2[1], { id: id2, user: b.user, body: body2, at: last2[1].at }, "msgs oldest first");
  await untilStatus(b.status, (p) => p.msgs.at(-1)?.id === id2, `msgs ending with id ${id2} at the other client`);
});

test("all: msgs keeps the last 100, oldest first (105 posted)", T, async (t) => {
  t.after(cleanup);
  const a = await joinAll(uname("flood"));
  const b = await joinAll(uname("floodseer"));
  const replies = await Promise.all(Array.from({ length: 105 }, (_, i) => push(a.channel, "new_msg", { body: `cap ${i}` })));
  const ids = replies.map((r, i) => {
    assert.equal(r.status, "ok", `post ${i}: ${show(r)}`);
    return r.response.id;
  });
  for (let i = 1; i < ids.length; i++) {
    assert.ok(ids[i] > ids[i - 1], `ids must increase in posting order (one client, one topic): ${show(ids)}`);
  }
  const last = ids.at(-1);
  for (const st of [b.status, a.status]) {
    const p = await untilStatus(st, (s) => s.msgs.at(-1)?.id === last, `msgs ending with id ${last}`);
    assertStatusShape(p);
    assert.equal(p.msgs.length, 100, "at most 100 messages kept");
    assert.deepEqual(p.msgs.map((m) => m.id), ids.slice(5), "the last 100, oldest first");
    assert.deepEqual(p.msgs.map((m) => m.body), ids.slice(5).map((_, i) => `cap ${i + 5}`), "bodies in order");
    assert.ok(p.msgs.every((m) => m.user === a.user));
  }
  // A fresh joiner gets the same 100 in its first status.
  const c = await joinAll(uname("late"));
  const p = await untilStatus(c.status, () => true, "the joiner's first status_users");
  assert.deepEqual(p.msgs.map((m) => m.id), ids.slice(5), "a joiner's first status has the last 100");
});

test("all: invalid bodies -> error {reason: invalid body}, nothing stored or broadcast", T, async (t) => {
  t.after(cleanup);
  const a = await joinAll(uname("bad"));
  const b = await joinAll(uname("badseer"));
  const seenByB = [];
  b.channel.on("new_msg", (m) => seenByB.push(m));
  const idBefore = await post(a.channel, "before the bad ones");
  await untilIn(seenByB, b.channel, "new_msg", (m) => m.id === idBefore, `new_msg id ${idBefore} at B`);
  const invalid = [
    ["missing body", {}],
    ["other key", { text: "hi" }],
    ["number", { body: 5 }],
    ["null", { body: null }],
    ["boolean", { body: true }],
    ["array", { body: ["hi"] }],
    ["object", { body: { text: "hi" } }],
    ["empty", { body: "" }],
    ["spaces", { body: "     " }],
    ["whitespace mix", { body: " \t\n\r " }],
    ["unicode whitespace", { body: "\u2003\u00a0\u3000" }],
    ["2001 ASCII", { body: "x".repeat(2001) }],
    ["2001 two-byte code points", { body: "é".repeat(2001) }],
    ["2001 astral code points", { body: "😀".repeat(2001) }],
  ];
  for (const [what, payload] of invalid) {
    assert.deepEqual(await push(a.channel, "new_msg", payload), { status: "error", response: { reason: "invalid body" } },
      `new_msg with ${what}`);
  }
  // Valid edge cases: length is counted in code points after trimming.
  const valid = [
    ["2000 two-byte code points", "é".repeat(2000)],
    ["2000 astral code points (4000 UTF-16 units)", "😀".repeat(2000)],
    ["2000 after trimming", ` ${"y".repeat(2000)}\n`],
    ["1 code point", "z"],
  ];
  const validIds = [];
  for (const [what, body] of valid) {
    const r = await push(a.channel, "new_msg", { body });
    assert.equal(r.status, "ok", `new_msg with ${what} must be valid: ${show(r).slice(0, 200)}`);
    validIds.push(r.response.id);
  }
  const lastId = validIds.at(-1);
  await untilIn(seenByB, b.channel, "new_msg", (m) => m.id === lastId, `new_msg id ${lastId} at B`);
  const afterBefore = seenByB.filter((m) => m.id > idBefore);
  assert.deepEqual(afterBefore.map((m) => m.body), valid.map(([, body]) => body),
    "only the valid messages were broadcast, bodies intact");
  const st = await untilStatus(b.status, (p) => p.msgs.at(-1)?.id === lastId, `msgs ending with id ${lastId}`);
  const stored = st.msgs.filter((m) => m.id >= idBefore);
  assert.deepEqual(stored.map((m) => m.body), ["before the bad ones", ...valid.map(([, body]) => body)],
    "nothing invalid stored in msgs");
});

// CONTRACT.md: no control characters in a body but newline and tab, i.e. none of
// U+0000–U+0008, U+000B–U+001F, U+007F–U+009F.
const REFUSED_CONTROLS = [
  ["U+0000", "\u0000"], ["U+0001", "\u0001"], ["U+0008 (below tab)", "\u0008"],
  ["U+000B (between newline and the next)", "\u000b"], ["U+000C", "\u000c"], ["U+000D (carriage return)", "\r"],
  ["U+001B (escape)", "\u001b"], ["U+001F", "\u001f"],
  ["U+007F (delete)", "\u007f"], ["U+0080", "\u0080"], ["U+0085 (next line)", "\u0085"], ["U+009F", "\u009f"],
];

test("all: control characters other than newline and tab -> invalid body, at any place; newline and tab pass", T, async (t) => {
  t.after(cleanup);
  const a = await joinAll(uname("ctrl"));
  const b = await joinAll(uname("ctrlseer"));
  const seenByB = [];
  b.channel.on("new_msg", (m) => seenByB.push(m));
  const idBefore = await post(a.channel, "before the control characters");
  for (const [what, c] of REFUSED_CONTROLS) {
    for (const [where, body] of [["inside", `a${c}b`], ["alone around text", `${c}text`], ["many", c.repeat(2000)]]) {
      assert.deepEqual(await push(a.channel, "new_msg", { body }), { status: "error", response: { reason: "invalid body" } },
        `new_msg with ${what} ${where}`);
    }
  }
  // The same rule in rooms.
  const room = await joinRoom(a.user, uroom("ctrl"), a.socket);
  for (const [what, c] of REFUSED_CONTROLS) {
    assert.deepEqual(await push(room.channel, "new_msg", { body: `x${c}` }), { status: "error", response: { reason: "invalid body" } },
      `room new_msg with ${what}`);
  }
  // Newline, tab and non-control characters next to the refused ranges are kept as sent.
  const valid = ["line one\nline two", "col\tcol\t", "\ttabbed\n", "nbsp\u00a0 and \u00a1 and \u2028 and \u{1F600}"];
  const ids = [];
  for (const body of valid) ids.push(await post(a.channel, body));
  await untilIn(seenByB, b.channel, "new_msg", (m) => m.id === ids.at(-1), `new_msg id ${ids.at(-1)} at B`);
  assert.deepEqual(seenByB.filter((m) => m.id > idBefore).map((m) => m.body), valid, "only the valid bodies broadcast, intact");
  assert.equal(await post(room.channel, "room ok\n"), 1, "refused room bodies consumed no id");
});

test("all: whitespace around the text counts: at most 4000 code points as received -> else invalid body", T, async (t) => {
  t.after(cleanup);
  const a = await joinAll(uname("padder"));
  const text = "😀".repeat(2000);
  const fits = `${"\u3000".repeat(1000)}${text}${"\n".repeat(1000)}`; // 4000 code points
  for (const [what, body] of [
    ["one past 4000 code points", `${fits} `],
    ["a short text in 500 KB of spaces", `x${" ".repeat(500_000)}`],
    ["a short text in 100,000 newlines", `${"\n".repeat(50_000)}x${"\n".repeat(50_000)}`],
  ]) {
    assert.deepEqual(await push(a.channel, "new_msg", { body }), { status: "error", response: { reason: "invalid body" } },
      `new_msg with ${what}`);
  }
  const atA = waitFor(a.channel, "new_msg", (m) => m.body === fits);
  const id = await post(a.channel, fits);
  assert.equal((await atA).id, id, "4000 code points with 2000 after trimming are valid and sent as received");
});

test("all: worst-case bodies: status_users keeps the newest that fit in 64 KiB, each frame far under the 1 MiB bound", T, async (t) => {
  t.after(cleanup);
  const BOUND = 1024 * 1024; // the default --max-outbound-bytes
  const BUDGET = 64 * 1024; // msgs in a status_users, as a JSON array (README.md)
  const a = await joinAll(uname("worst"));
  const b = await joinAll(uname("worstseer"));
  // The raw frames b's socket receives: phoenix.js hands over decoded messages only.
  const frames = [];
  b.socket.conn.on("message", (data) => {
    const text = data.toString("utf8");
    if (text.includes('"status_users"')) frames.push(Buffer.byteLength(text));
  });
  // The largest body the contract allows, in bytes: 2000 astral code points (4 bytes each)
  // and 2000 ideographic spaces around them (3 bytes each). 14,000 bytes of JSON.
  const worst = (i) => `${"\u3000".repeat(1000)}${String.fromCodePoint(0x1F600 + (i % 10)).repeat(2000)}${"\u3000".repeat(1000)}`;
  assert.equal(Buffer.byteLength(JSON.stringify(worst(0))), 14_002);
  const ids = [];
  for (let i = 0; i < 100; i++) ids.push(await post(a.channel, worst(i)));
  const last = ids.at(-1);
  const p = await untilStatus(b.status, (s) => s.msgs.at(-1)?.id === last, `msgs ending with id ${last}`);
  assertStatusShape(p);
  const kept = p.msgs.map((m) => m.id);
  assert.deepEqual(kept, ids.slice(-kept.length), "the newest messages, oldest first, none skipped");
  assert.ok(kept.length >= 4 && kept.length < 100, `as many as fit in the budget: ${kept.length}`);
  p.msgs.forEach((m) => assert.equal(m.body, worst(ids.indexOf(m.id)), `msg ${m.id} intact`));
  assert.ok(Buffer.byteLength(JSON.stringify(p.msgs)) <= BUDGET, `msgs take ${Buffer.byteLength(JSON.stringify(p.msgs))} bytes`);
  // A joiner's first status and a hit's broadcast are as small.
  const c = await joinAll(uname("worstjoiner"));
  const first = await untilStatus(c.status, () => true, "the joiner's first status_users");
  assert.deepEqual(first.msgs.map((m) => m.id), kept, "the joiner gets the same kept messages");
  const hit = await push(a.channel, "hit", {});
  await untilStatus(b.status, (s) => s.hits >= hit.response.hits, `hits >= ${hit.response.hits}`);
  assert.ok(frames.length > 0, "status_users frames were seen on the wire");
  const largest = Math.max(...frames);
  assert.ok(largest < BUDGET + 8 * 1024, `largest status_users frame: ${largest} bytes (budget ${BUDGET} + users)`);
  assert.ok(largest < BOUND / 10, `largest status_users frame ${largest} bytes, bound ${BOUND}`);
  assert.ok(b.socket.isConnected(), "the reading member is still connected");
});

test("all: unknown event -> error {reason: unknown event}; the channel stays joined", T, async (t) => {
  t.after(cleanup);
  const a = await joinAll(uname("unknown"));
  for (const event of ["nope", "HIT", "new_message", "status_users", "presence_diff"]) {
    assert.deepEqual(await push(a.channel, event, { x: 1 }), { status: "error", response: { reason: "unknown event" } },
      `event ${show(event)}`);
  }
  assert.deepEqual(await push(a.channel, "ping", { still: "here" }), { status: "ok", response: { still: "here" } },
    "ping after unknown events");
  const hit = await push(a.channel, "hit", {});
  assert.equal(hit.status, "ok", `hit after unknown events ${show(hit)}`);
  const at = waitFor(a.channel, "new_msg", (m) => m.body === "still joined");
  await post(a.channel, "still joined");
  await at;
  await expectStatus(a.status, [a.user], 1);
});

test("all: phx_leave -> ok {}; the user leaves users, status and presence updated", T, async (t) => {
  t.after(cleanup);
  const w = await joinAll(uname("watch"));
  const x = await joinAll(uname("leaver"));
  await expectStatus(w.status, [w.user, x.user], 2);
  await expectPresence(w.presence, { [w.user]: 1, [x.user]: 1 });
  const r = await leave(x.channel);
  assert.deepEqual({ status: r.status, response: r.response }, { status: "ok", response: {} }, "server's reply to phx_leave");
  await expectStatus(w.status, [w.user], 1);
  await expectPresence(w.presence, { [w.user]: 1 });
  await settleStatus(w.channel, w.status, [w.user], 1);
  assertSnapshot(await probe("all"), { [w.user]: 1 }, "after a leave");
});

test("all: a burst of changes is coalesced but never dropped: the last status is the current state", T, async (t) => {
  t.after(cleanup);
  const w = await joinAll(uname("watch"));
  const base = await push(w.channel, "hit", {});
  const names = [uname("b1"), uname("b2"), uname("b3"), uname("b4"), uname("b5")];
  const joined = await Promise.all(names.slice(0, 4).map((n) => joinAll(n)));
  // At once: two members go (a disconnect, a leave), one joins, the two others hit and post.
  const stay = [joined[2], joined[3]];
  const hits = Array.from({ length: 40 }, (_, i) => push(stay[i % 2].channel, "hit", {}));
  const posts = Array.from({ length: 10 }, (_, i) => push(stay[i % 2].channel, "new_msg", { body: `burst ${i}` }));
  const others = [disconnect(joined[0].socket), leave(joined[1].channel), joinAll(names[4])];
  const [hitReplies, postReplies] = await Promise.all([Promise.all(hits), Promise.all(posts), Promise.all(others)]);
  const lastHits = base.response.hits + 40;
  assert.deepEqual(hitReplies.map((r) => r.response.hits).sort((a, b) => a - b),
    Array.from({ length: 40 }, (_, i) => base.response.hits + 1 + i), "every hit counted once");
  const lastMsg = Math.max(...postReplies.map((r) => r.response.id));
  const want = [w.user, names[2], names[3], names[4]];
  const p = await untilStatus(w.status, (s) => s.hits === lastHits && sameList(s.users, sorted(want)) && s.connections === 4
    && s.msgs.at(-1)?.id === lastMsg, `hits=${lastHits}, users=${show(sorted(want))}, connections=4, last msg ${lastMsg}`);
  assertStatusShape(p);
  assert.deepEqual(p.msgs.slice(-10).map((m) => m.body).sort(), Array.from({ length: 10 }, (_, i) => `burst ${i}`).sort());
  await settleStatus(w.channel, w.status, want, 4);
  // The members still joined got the same final state.
  await untilStatus(joined[3].status, (s) => s.hits >= lastHits + 1 && sameList(s.users, sorted(want)),
    "the final state at another member");
});

test("all: two tabs of one user count once in users and twice in connections", T, async (t) => {
  t.after(cleanup);
  const w = await joinAll(uname("watch"));
  const name = uname("twotabs");
  const tab1 = await joinAll(name);
  const tab2 = await joinAll(name);
  let p = await expectStatus(w.status, [w.user, name], 3);
  assert.equal(p.user_count, 2);
  await expectStatus(tab1.status, [w.user, name], 3);
  await expectPresence(w.presence, { [w.user]: 1, [name]: 2 });
  // A third connection of the same user that joins only a room is not a joined
  // connection of "all".
  await joinRoom(name, uroom("side"));
  await settleStatus(w.channel, w.status, [w.user, name], 3);

  await disconnect(tab1.socket);
  p = await expectStatus(w.status, [w.user, name], 2);
  assert.equal(p.user_count, 2, "the user stays while a tab is left");
  await expectPresence(w.presence, { [w.user]: 1, [name]: 1 });
  await disconnect(tab2.socket);
  await expectStatus(w.status, [w.user], 1);
  await expectPresence(w.presence, { [w.user]: 1 });
  await settleStatus(w.channel, w.status, [w.user], 1);
});

test("all: a killed connection (no close handshake) leaves no ghost", T, async (t) => {
  t.after(cleanup);
  const w = await joinAll(uname("watch"));
  const name = uname("killed");
  const tab1 = await joinAll(name);
  await expectPresence(w.presence, { [w.user]: 1, [name]: 1 });
  const ref1 = presenceState(w.presence)[name][0].phx_ref;
  const tab2 = await joinAll(name);
  const two = await expectPresence(w.presence, { [w.user]: 1, [name]: 2 });
  const ref2 = two[name].find((m) => m.phx_ref !== ref1).phx_ref;
  await expectStatus(w.status, [w.user, name], 3);

  await kill(tab1.socket);
  await expectStatus(w.status, [w.user, name], 2);
  const one = await expectPresence(w.presence, { [w.user]: 1, [name]: 1 });
  assert.equal(one[name][0].phx_ref, ref2, "the killed tab's meta left, the other one stays");
  await expectPresence(tab2.presence, { [w.user]: 1, [name]: 1 });

  await kill(tab2.socket);
  await expectStatus(w.status, [w.user], 1);
  await expectPresence(w.presence, { [w.user]: 1 });
  await settleStatus(w.channel, w.status, [w.user], 1);
  assertSnapshot(await probe("all"), { [w.user]: 1 }, "after killed connections");

  // A raw client killed right after its join was sent (the join may still be running).
  for (let i = 0; i < 5; i++) {
    const raw = await Raw.connect(name);
    raw.send("1", "1", "all", "phx_join", {});
    if (i % 2) await raw.reply("1", "all");
    raw.terminate();
  }
  await expectStatus(w.status, [w.user], 1);
  await settleStatus(w.channel, w.status, [w.user], 1);
  await expectPresence(w.presence, { [w.user]: 1 });
  assertSnapshot(await probe("all"), { [w.user]: 1 }, "after raw clients killed during their join");
});

test("all: a plain disconnect() leaves no ghost", T, async (t) => {
  t.after(cleanup);
  const w = await joinAll(uname("watch"));
  const x = await joinAll(uname("disc"));
  await expectStatus(w.status, [w.user, x.user], 2);
  await expectPresence(w.presence, { [w.user]: 1, [x.user]: 1 });
  await disconnect(x.socket);
  await expectStatus(w.status, [w.user], 1);
  await expectPresence(w.presence, { [w.user]: 1 });
  await settleStatus(w.channel, w.status, [w.user], 1);

  // leave() immediately followed by disconnect(): the phx_leave right before the close.
  const y = await joinAll(uname("leavedisc"));
  await expectStatus(w.status, [w.user, y.user], 2);
  y.channel.leave();
  await disconnect(y.socket);
  await expectStatus(w.status, [w.user], 1);
  await expectPresence(w.presence, { [w.user]: 1 });
  await settleStatus(w.channel, w.status, [w.user], 1);
  assertSnapshot(await probe("all"), { [w.user]: 1 }, "after disconnects");
});

test("all: duplicate join through phoenix.js (a second channel object) leaves no ghost", T, async (t) => {
  t.after(cleanup);
  const w = await joinAll(uname("watch"));
  const x = await joinAll(uname("dup"));
  await expectPresence(w.presence, { [w.user]: 1, [x.user]: 1 });
  const oldRef = presenceState(w.presence)[x.user][0].phx_ref;

  const rec = recordMessages(x.socket, (m) => m.topic === "all" && (m.event === "phx_leave" || m.event === "phx_join"));
  const sent = [];
  const origPush = x.socket.push.bind(x.socket);
  x.socket.push = (data) => { if (data.topic === "all") sent.push(data.event); return origPush(data); };
  const ch2 = x.socket.channel("all", {});
  const st2 = trackStatus(ch2);
  const reply = await join(ch2);
  x.socket.push = origPush;
  rec.stop();
  assert.deepEqual(sent, ["phx_leave", "phx_join"], "phoenix.js leaves the old channel object first, then joins");
  assert.deepEqual(reply, { user: x.user }, "join reply of the second channel object");
  await untilStatus(st2, () => true, "status_users pushed to the second join");

  const s = await untilPresence(w.presence, (st) => sameList(Object.keys(st).sort(), sorted([w.user, x.user]))
    && st[x.user].length === 1 && st[x.user][0].phx_ref !== oldRef, `one meta of ${x.user}, not the old one`);
  assertMeta(s[x.user][0], "the new meta");
  await expectStatus(w.status, [w.user, x.user], 2);
  await settleStatus(w.channel, w.status, [w.user, x.user], 2);
  const snap = await probe("all");
  assertSnapshot(snap, { [w.user]: 1, [x.user]: 1 }, "after a phoenix.js duplicate join");
  assert.equal(snap.presence[x.user].metas[0].phx_ref, s[x.user][0].phx_ref, "the server tracks the new meta");
  await expectPresenceLike(w.presence, snap);
  assert.equal((await push(ch2, "hit", {})).status, "ok", "the new channel object works");

  await disconnect(x.socket);
  await expectStatus(w.status, [w.user], 1);
  await expectPresence(w.presence, { [w.user]: 1 });
});

test("all: raw duplicate phx_join (new ref, same socket): old instance closed, new one served, no ghost", T, async (t) => {
  t.after(cleanup);
  const w = await joinAll(uname("watch"));
  const name = uname("rawdup");
  const raw = await Raw.connect(name);
  raw.send("1", "1", "all", "phx_join", {});
  assert.deepEqual((await raw.reply("1", "all"))[4], { status: "ok", response: { user: name } }, "first join");
  await raw.wait((m) => m[0] === "1" && m[3] === "status_users", "status_users push for join 1");
  await expectStatus(w.status, [w.user, name], 2);
  const p1 = await expectPresence(w.presence, { [w.user]: 1, [name]: 1 });
  const oldRef = p1[name][0].phx_ref;

  raw.send("2", "2", "all", "phx_join", { again: true });
  const r2 = await raw.reply("2", "all");
  assert.deepEqual(r2, ["2", "2", "all", "phx_reply", { status: "ok", response: { user: name } }], "second join reply");
  const close = await raw.wait((m) => m[2] === "all" && m[3] === "phx_close", "phx_close of the old join (ref 1)");
  assert.deepEqual(close, ["1", "1", "all", "phx_close", {}], "phx_close carries the OLD join ref");
  const push2 = await raw.wait((m) => m[0] === "2" && m[3] === "status_users", "status_users push for join 2");
  assert.equal(push2[1], null);

  const p2 = await untilPresence(w.presence, (st) => sameList(Object.keys(st).sort(), sorted([w.user, name]))
    && st[name].length === 1 && st[name][0].phx_ref !== oldRef, `one meta of ${name}, not the old one`);
  await expectStatus(w.status, [w.user, name], 2);
  await settleStatus(w.channel, w.status, [w.user, name], 2);
  const snap = await probe("all");
  assertSnapshot(snap, { [w.user]: 1, [name]: 1 }, "after a raw duplicate join");
  assert.equal(snap.presence[name].metas[0].phx_ref, p2[name][0].phx_ref, "the server tracks the new meta");
  await expectPresenceLike(w.presence, snap);

  // The new instance works.
  raw.send("2", "3", "all", "ping", { n: 3 });
  assert.deepEqual((await raw.reply("3", "all"))[4], { status: "ok", response: { n: 3 } });

  // Same on a room.
  const room = uroom("rawdup");
  raw.send("4", "4", room, "phx_join", {});
  assert.deepEqual((await raw.reply("4", room))[4], { status: "ok", response: { messages: [] } });
  raw.send("5", "5", room, "phx_join", {});
  assert.deepEqual((await raw.reply("5", room))[4], { status: "ok", response: { messages: [] } });
  await raw.wait((m) => m[0] === "4" && m[2] === room && m[3] === "phx_close", "phx_close of the old room join");
  assertSnapshot(await probe(room), { [name]: 1 }, "room after a raw duplicate join");

  raw.terminate();
  await expectStatus(w.status, [w.user], 1);
  await expectPresence(w.presence, { [w.user]: 1 });
  await settleStatus(w.channel, w.status, [w.user], 1);
  assertSnapshot(await probe(room), {}, "room after the raw client is gone");
});

test("all: a leave followed at once by a re-join leaves exactly one membership", T, async (t) => {
  t.after(cleanup);
  const w = await joinAll(uname("watch"));

  // phoenix.js: leave(), then a new channel object joined in the same tick.
  const x = await joinAll(uname("rejoin"));
  await expectStatus(w.status, [w.user, x.user], 2);
  let ch = x.channel;
  for (let i = 0; i < 5; i++) {
    ch.leave();
    ch = x.socket.channel("all", {});
    assert.deepEqual(await join(ch), { user: x.user }, `re-join #${i + 1}`);
  }
  await expectStatus(w.status, [w.user, x.user], 2);
  await expectPresence(w.presence, { [w.user]: 1, [x.user]: 1 });
  await settleStatus(w.channel, w.status, [w.user, x.user], 2);
  const snap1 = await probe("all");
  assertSnapshot(snap1, { [w.user]: 1, [x.user]: 1 }, "after phoenix.js leave + re-join");
  await expectPresenceLike(w.presence, snap1);
  assert.equal((await push(ch, "hit", {})).status, "ok", "the last channel object is joined");

  // Raw: phx_leave and phx_join written back to back, several times.
  const name = uname("rawrejoin");
  const raw = await Raw.connect(name);
  raw.send("1", "1", "all", "phx_join", {});
  await raw.reply("1", "all");
  let jr = 1;
  let ref = 1;
  for (let i = 0; i < 5; i++) {
    const leaveRef = String(++ref);
    const newJr = String(++ref);
    raw.send(String(jr), leaveRef, "all", "phx_leave", {});
    raw.send(newJr, newJr, "all", "phx_join", {});
    assert.deepEqual(await raw.reply(leaveRef, "all"), [String(jr), leaveRef, "all", "phx_reply", { status: "ok", response: {} }],
      `leave reply #${i + 1}`);
    assert.deepEqual((await raw.reply(newJr, "all"))[4], { status: "ok", response: { user: name } }, `re-join reply #${i + 1}`);
    jr = Number(newJr);
  }
  await expectStatus(w.status, [w.user, x.user, name], 3);
  await expectPresence(w.presence, { [w.user]: 1, [x.user]: 1, [name]: 1 });
  await settleStatus(w.channel, w.status, [w.user, x.user, name], 3);
  const snap2 = await probe("all");
  assertSnapshot(snap2, { [w.user]: 1, [x.user]: 1, [name]: 1 }, "after raw leave + re-join");
  await expectPresenceLike(w.presence, snap2);

  raw.terminate();
  await disconnect(x.socket);
  await expectStatus(w.status, [w.user], 1);
  await expectPresence(w.presence, { [w.user]: 1 });
});

// =======================================================================================
// "room:NAME"

test("room: invalid names -> error {reason: invalid topic}; valid edge names join", T, async (t) => {
  t.after(cleanup);
  const socket = await connect({ user: uname("roomer") });
  for (const topic of ["room:nope!", "room:", `room:${"a".repeat(65)}`, "room:é", "room:a b", "room:lobby/x", "room:a.b"]) {
    const ch = socket.channel(topic, {});
    await assert.rejects(join(ch), assertJoinRefused("invalid topic"), `join ${show(topic)}`);
    ch.leave(); // stop phoenix.js's retries
  }
  for (const topic of [`room:${"a".repeat(64)}`, `room:A-z_09-${RUN}`, "room:-", "room:_"]) {
    const reply = await join(socket.channel(topic, {}));
    assert.ok(Array.isArray(reply.messages), `join ${show(topic)}: ${show(reply)}`);
    assert.deepEqual(Object.keys(reply), ["messages"], `join reply of ${topic}`);
  }
});

test("room: join reply {messages} holds the last 50, oldest first (55 posted)", T, async (t) => {
  t.after(cleanup);
  const topic = uroom("hist");
  const a = await joinRoom(uname("author"), topic);
  assert.deepEqual(a.reply, { messages: [] }, "a fresh room's join reply");
  const ids = [];
  for (let i = 1; i <= 55; i++) ids.push(await post(a.channel, `h ${i}`));
  assert.deepEqual(ids, Array.from({ length: 55 }, (_, i) => i + 1), "a room's ids start at 1 and increase");
  const b = await joinRoom(uname("late"), topic);
  const got = b.reply.messages;
  assert.equal(got.length, 50, "the last 50 only");
  got.forEach((m) => assertMessageShape(m, "history"));
  assert.deepEqual(got.map((m) => m.id), Array.from({ length: 50 }, (_, i) => i + 6), "ids 6..55, oldest first");
  assert.deepEqual(got.map((m) => m.body), got.map((m) => `h ${m.id}`), "bodies");
  assert.ok(got.every((m) => m.user === a.user), "user");
  // The history equals what the members were broadcast.
  const live = Object.fromEntries(a.msgs.map((m) => [m.id, m]));
  for (const m of got) assert.deepEqual(m, live[m.id], `history entry ${m.id} equals its new_msg`);
});

test("room: each room has its own history and id sequence", T, async (t) => {
  t.after(cleanup);
  const r1 = uroom("one");
  const r2 = uroom("two");
  const user = uname("multi");
  const a1 = await joinRoom(user, r1);
  const a2 = await joinRoom(user, r2, a1.socket);
  const allIdBefore = await post((await joinAll(uname("allposter"))).channel, "all message");
  assert.deepEqual([await post(a1.channel, "r1 a"), await post(a1.channel, "r1 b"), await post(a1.channel, "r1 c")], [1, 2, 3]);
  assert.deepEqual([await post(a2.channel, "r2 a"), await post(a2.channel, "r2 b")], [1, 2]);
  assert.equal(await post(a1.channel, "r1 d"), 4);
  const b1 = await joinRoom(uname("r1late"), r1);
  const b2 = await joinRoom(uname("r2late"), r2);
  assert.deepEqual(b1.reply.messages.map((m) => [m.id, m.body]), [[1, "r1 a"], [2, "r1 b"], [3, "r1 c"], [4, "r1 d"]]);
  assert.deepEqual(b2.reply.messages.map((m) => [m.id, m.body]), [[1, "r2 a"], [2, "r2 b"]]);
  assert.ok(Number.isInteger(allIdBefore), "all has its own sequence too");
  // No cross-room broadcast.
  assert.ok(a2.msgs.every((m) => m.body.startsWith("r2")), `room 2 got only its messages: ${show(a2.msgs)}`);
  assert.ok(a1.msgs.every((m) => m.body.startsWith("r1")), `room 1 got only its messages: ${show(a1.msgs)}`);
});

test("room: new_msg reaches every member, the sender too, and nobody else", T, async (t) => {
  t.after(cleanup);
  const topic = uroom("bcast");
  const a = await joinRoom(uname("ra"), topic);
  const b = await joinRoom(uname("rb"), topic);
  const c = await joinRoom(uname("rc"), topic);
  const outsider = await joinRoom(uname("out"), uroom("elsewhere"));
  const outsiderAll = await joinAll(outsider.user);
  const leak = recordMessages(outsider.socket, (m) => m.topic === topic);
  const body = "  to the room ✓  ";
  const waits = [a, b, c].map((m) => waitFor(m.channel, "new_msg", (p) => p.body === body));
  const id = await post(b.channel, body);
  const got = await Promise.all(waits);
  for (const m of got) {
    assertMessageShape(m, "room new_msg");
    assert.deepEqual(m, { id, user: b.user, body, at: got[0].at }, "every member incl. the sender gets the same message");
  }
  // The outsider posts in its own room; by the time it gets its own message back, a
  // leaked room message would very likely have arrived too.
  await post(outsider.channel, "mine");
  await untilIn(outsider.msgs, outsider.channel, "new_msg", (m) => m.body === "mine", "the outsider's own message");
  assert.deepEqual(leak.messages, [], "a non-member must not receive the room's messages");
  assert.ok(!outsiderAll.status.all.some((s) => s.msgs.some((m) => m.body === body)), "room messages are not in all's msgs");
});

test("room: invalid body and unknown event replies; nothing broadcast; channel usable", T, async (t) => {
  t.after(cleanup);
  const topic = uroom("errs");
  const a = await joinRoom(uname("ea"), topic);
  const b = await joinRoom(uname("eb"), topic);
  for (const payload of [{}, { body: 1 }, { body: null }, { body: "" }, { body: "  \n " }, { body: "x".repeat(2001) }, { body: "😀".repeat(2001) }]) {
    assert.deepEqual(await push(a.channel, "new_msg", payload), { status: "error", response: { reason: "invalid body" } },
      `room new_msg ${show(payload).slice(0, 60)}`);
  }
  for (const event of ["hit", "ping", "nope", "NEW_MSG"]) {
    assert.deepEqual(await push(a.channel, event, {}), { status: "error", response: { reason: "unknown event" } },
      `room event ${show(event)}`);
  }
  const body = "é".repeat(2000);
  const atB = waitFor(b.channel, "new_msg", (m) => m.body === body);
  const id = await post(a.channel, body);
  assert.equal(id, 1, "invalid bodies consumed no id and stored nothing");
  await atB;
  assert.deepEqual(b.msgs.map((m) => m.id), [1], "only the valid message was broadcast");
  const late = await joinRoom(uname("elate"), topic);
  assert.deepEqual(late.reply.messages.map((m) => m.body), [body], "only the valid message is in the history");
});

test("room: no gap at join: every message is in the history or pushed, exactly once (5 rounds)", T, async (t) => {
  t.after(cleanup);
  const N = 60;
  for (let round = 0; round < 5; round++) {
    const topic = uroom(`gap${round}`);
    const a = await joinRoom(uname("burster"), topic);
    for (let i = 1; i <= 10; i++) await post(a.channel, `pre ${i}`);
    const lastId = 10 + N;

    const bSocket = await connect({ user: uname("joiner") });
    const rec = recordMessages(bSocket, (m) => m.topic === topic);
    const bch = bSocket.channel(topic, {});
    const pushed = [];
    bch.on("new_msg", (m) => pushed.push(m));
    const lastPushed = waitFor(bch, "new_msg", (m) => m.id === lastId, 10_000);

    const joinAt = [0, 7, 20, 33, 55][round];
    const replies = [];
    let joinP = null;
    for (let i = 0; i < N; i++) {
      if (i === joinAt) joinP = join(bch);
      replies.push(push(a.channel, "new_msg", { body: `burst ${i}` }));
      if (i % 4 === 3) await replies.at(-1); // spread the burst over many round trips
    }
    const ids = (await Promise.all(replies)).map((r) => r.response.id);
    assert.deepEqual(ids, Array.from({ length: N }, (_, i) => 11 + i), `round ${round}: ids of the burst`);
    const history = (await joinP).messages;
    if (!history.some((m) => m.id === lastId)) await lastPushed;
    rec.stop();

    const where = `round ${round} (join sent before burst message ${joinAt})`;
    const hIds = history.map((m) => m.id);
    const pIds = pushed.map((m) => m.id);
    assert.ok(hIds.length > 0 && hIds.length <= 50, `${where}: history length ${hIds.length}`);
    for (let i = 1; i < hIds.length; i++) assert.equal(hIds[i], hIds[i - 1] + 1, `${where}: history contiguous, oldest first: ${show(hIds)}`);
    const expectedPushes = Array.from({ length: lastId - hIds.at(-1) }, (_, i) => hIds.at(-1) + 1 + i);
    assert.deepEqual(pIds, expectedPushes,
      `${where}: after history ending at ${hIds.at(-1)}, every later message pushed exactly once, in order (history ${show(hIds)})`);
    assert.equal(hIds.at(-1) - hIds[0] + 1, hIds.length);
    assert.equal(hIds.length, Math.min(50, hIds.at(-1)), `${where}: history holds the last min(50, n)`);
    for (const m of [...history, ...pushed]) {
      assert.equal(m.body, m.id <= 10 ? `pre ${m.id}` : `burst ${m.id - 11}`, `${where}: body of id ${m.id}`);
    }
    // The join reply is the first message of the join: no new_msg before it.
    const iReply = rec.messages.findIndex((m) => m.event === "phx_reply" && m.ref === bch.joinRef());
    const iFirstMsg = rec.messages.findIndex((m) => m.event === "new_msg");
    assert.ok(iReply >= 0, `${where}: join reply recorded`);
    assert.ok(iFirstMsg === -1 || iFirstMsg > iReply, `${where}: a new_msg arrived before the join reply: ${show(rec.messages.map((m) => m.event))}`);
    await disconnect(a.socket);
    await disconnect(bSocket);
  }
});

// =======================================================================================
// Presence (phoenix.js Presence class)

async function presenceScenario(topic, joinFn) {
  const watcher = await joinFn(uname("pwatch"));
  const w = watcher.presence;
  w.user = watcher.user;
  await expectPresence(w, { [w.user]: 1 });
  const own = presenceState(w)[w.user][0];
  assertMeta(own, `${topic}: own meta`);
  assert.ok(w.joins.some((j) => j.key === w.user && j.current === undefined), `${topic}: onJoin for self (new key)`);

  // Another user joins: onJoin with no current presence, metas carry phx_ref + online_at.
  const name = uname("pguest");
  const before = Date.now();
  const tab1 = await joinFn(name);
  await expectPresence(w, { [w.user]: 1, [name]: 1 });
  const j1 = w.joins.find((j) => j.key === name);
  assert.ok(j1, `${topic}: onJoin fired for ${name}`);
  assert.equal(j1.current, undefined, `${topic}: first meta of a key: onJoin current is undefined`);
  assert.equal(j1.metas.length, 1);
  assertMeta(j1.metas[0], `${topic}: joined meta`);
  assert.ok(j1.metas[0].online_at >= before - 2000, `${topic}: online_at is the join time`);
  // The joiner itself sees both (presence_state).
  await expectPresence(tab1.presence, { [w.user]: 1, [name]: 1 });

  // Second tab of the same user: one key, two metas, distinct refs, onJoin with current.
  const tab2 = await joinFn(name);
  const s2 = await expectPresence(w, { [w.user]: 1, [name]: 2 });
  const refs = s2[name].map((m) => m.phx_ref);
  assert.equal(new Set(refs).size, 2, `${topic}: two metas with distinct phx_refs ${show(s2[name])}`);
  s2[name].forEach((m) => assertMeta(m, `${topic}: two-tab meta`));
  assert.equal(refs[0], j1.metas[0].phx_ref, `${topic}: metas in tracking order (oldest first)`);
  const j2 = w.joins.filter((j) => j.key === name).at(-1);
  assert.ok(j2.current && j2.current.metas.length === 1, `${topic}: onJoin of a second meta has the current presence: ${show(j2)}`);
  await expectPresence(tab2.presence, { [w.user]: 1, [name]: 2 });

  // Kill tab1: its meta disappears, the key stays with tab2's meta; onLeave fired.
  await kill(tab1.socket);
  const s3 = await expectPresence(w, { [w.user]: 1, [name]: 1 });
  assert.equal(s3[name][0].phx_ref, refs[1], `${topic}: the killed tab's meta left`);
  const l1 = w.leaves.find((l) => l.key === name);
  assert.ok(l1, `${topic}: onLeave fired for the killed tab`);
  assert.deepEqual(l1.metas.map((m) => m.phx_ref), [refs[0]], `${topic}: onLeave carries the killed meta`);
  assert.equal(l1.current.metas.length, 1, `${topic}: onLeave's current presence keeps the other tab`);

  // tab2 leaves the topic: the key disappears.
  const r = await leave(tab2.channel);
  assert.equal(r.status, "ok");
  await expectPresence(w, { [w.user]: 1 });
  const l2 = w.leaves.filter((l) => l.key === name).at(-1);
  assert.deepEqual(l2.metas.map((m) => m.phx_ref), [refs[1]], `${topic}: onLeave for the last meta`);
  assert.equal(l2.current.metas.length, 0, `${topic}: no metas left for the key`);
  assertSnapshot(await probe(topic), { [w.user]: 1 }, `${topic}: after kill and leave`);
  return w;
}

test("presence on all: joins, two tabs = one key with two metas, kill and leave, no ghost", T, async (t) => {
  t.after(cleanup);
  await presenceScenario("all", (user) => joinAll(user));
});

test("presence on a room: joins, two tabs = one key with two metas, kill and leave, no ghost", T, async (t) => {
  t.after(cleanup);
  const topic = uroom("presence");
  await presenceScenario(topic, (user) => joinRoom(user, topic));
  // Presence is per topic: another room has its own.
  const other = uroom("presence2");
  const solo = await joinRoom(uname("solo"), other);
  await expectPresence(solo.presence, { [solo.user]: 1 });
});

test("unmatched topic: a topic nobody serves -> error {reason: unmatched topic}", T, async (t) => {
  t.after(cleanup);
  const socket = await connect({ user: uname("lost") });
  for (const topic of ["nope:x", "All", "all:x", "rooms:x", "room"]) {
    const ch = socket.channel(topic, {});
    await assert.rejects(join(ch), assertJoinRefused("unmatched topic"), `join ${show(topic)}`);
    ch.leave();
  }
  // Raw: the unmatched reply carries a null join_ref.
  const raw = await Raw.connect(uname("rawlost"));
  raw.send("7", "7", "nope:x", "phx_join", {});
  assert.deepEqual(await raw.reply("7", "nope:x"),
    [null, "7", "nope:x", "phx_reply", { status: "error", response: { reason: "unmatched topic" } }]);

  // A join payload that is not an object is refused (docs/protocol.md 5.1), on both topics,
  // and a refused join of "all" does not count as a joined connection.
  const w = await joinAll(uname("watch"));
  raw.send("8", "8", "all", "phx_join", ["not", "an", "object"]);
  assert.deepEqual((await raw.reply("8", "all"))[4], { status: "error", response: { reason: "invalid payload" } });
  raw.send("9", "9", uroom("payload"), "phx_join", "text");
  assert.deepEqual((await raw.wait((m) => m[1] === "9" && m[3] === "phx_reply", "reply to join 9"))[4],
    { status: "error", response: { reason: "invalid payload" } });
  await expectStatus(w.status, [w.user], 1);
  await settleStatus(w.channel, w.status, [w.user], 1);
  await expectPresence(w.presence, { [w.user]: 1 });
});
