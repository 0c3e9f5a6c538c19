// Stores over the wire (docs/contract.md, "Stores over the wire") through phoenix.js
// 1.8.x: every row of the store table on `store:todos` and `store:status`, the HTTP
// snapshot (`GET /stores/NAME`, ETag, 304, 403, 404, HEAD), several clients converging,
// a rejoin from an old version, and a gap resolved with `sync`.
//
//   cd tests/js && FLUXWIRE_URL=ws://127.0.0.1:4000/socket FLUXWIRE_HTTP=http://127.0.0.1:4000 \
//     node --test stores.test.mjs
//
// The server is the real app (cargo test --test stores_js starts one). Its stores are
// shared by every test of this file, so each test works on todos of its own (texts with
// a fresh tag) and compares whole states only against the server's own GET at the same
// version.

import { test } from "node:test";
import assert from "node:assert/strict";

import { Presence } from "phoenix";

import {
  closeAll,
  connect,
  disconnect,
  join,
  JoinError,
  push,
  show,
  waitFor,
  httpBase,
  uniqueName,
  waitForRejoin,
  waitUntil,
} from "./lib.mjs";

const T = { timeout: 60_000 };
const uname = uniqueName;
const tag = uniqueName;


/** GET (or `method`) /stores/NAME with a query and headers: {status, headers, body}. */
async function getStore(name, { user = "reader", query, headers = {}, method = "GET" } = {}) {
  const qs = query ?? (user === null ? "" : `user=${encodeURIComponent(user)}`);
  const res = await fetch(`${httpBase()}/stores/${name}${qs ? `?${qs}` : ""}`, { method, headers });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, body: text ? JSON.parse(text) : null };
}

// ---------------------------------------------------------------------------------------
// RFC 6902, as little as the tests need: an independent check of what the server sends.

function unescape(token) {
  return token.replace(/~1/g, "/").replace(/~0/g, "~");
}

function applyOps(doc, ops) {
  let out = structuredClone(doc);
  for (const { op, path, value } of ops) {
    if (path === "") {
      assert.notEqual(op, "remove", "the root cannot be removed");
      out = structuredClone(value);
      continue;
    }
    const tokens = path.slice(1).split("/").map(unescape);
    const last = tokens.pop();
    let parent = out;
    for (const t of tokens) parent = parent[Array.isArray(parent) ? Number(t) : t];
    assert.ok(parent !== null && typeof parent === "object", `no container at ${path} in ${show(out)}`);
    if (Array.isArray(parent)) {
      const i = last === "-" ? parent.length : Number(last);
      if (op === "add") parent.splice(i, 0, structuredClone(value));
      else if (op === "remove") parent.splice(i, 1);
      else if (op === "replace") parent[i] = structuredClone(value);
      else assert.fail(`unexpected op ${op}`);
    } else if (op === "remove") {
      assert.ok(last in parent, `remove of a missing member ${path}`);
      delete parent[last];
    } else {
      parent[last] = structuredClone(value);
    }
  }
  return out;
}

/**
 * A client's copy of one store, kept by the contract's rules: a join reply's `state` or
 * `ops`, then each `patch` whose `from` is its version; a patch that does not follow is
 * a gap, resolved with one `sync`. `drop(n)` makes it ignore its next n patches, as a
 * client that missed them would.
 */
class Copy {
  constructor(socket, name) {
    this.name = name;
    this.epoch = null;
    this.version = null;
    this.state = null;
    this.events = [];
    this.gaps = 0;
    this.dropNext = 0;
    this.syncing = false;
    this.stash = [];
    this.channel = socket.channel(`store:${name}`, () =>
      this.epoch === null ? {} : { epoch: this.epoch, version: this.version });
    this.channel.on("patch", (p) => this.onPatch(p));
    this.channel.on("state", (s) => {
      this.events.push({ event: "state", payload: s });
      this.reset(s);
    });
    // Every ok join reply, the first and each automatic rejoin's.
    this.channel.joinPush.receive("ok", (reply) => {
      this.replies.push(reply);
      this.applyReply(reply);
    });
    this.replies = [];
  }

  join() {
    return join(this.channel);
  }

  reset({ epoch, version, state }) {
    this.epoch = epoch;
    this.version = version;
    this.state = state;
  }

  applyReply(reply) {
    assert.equal(typeof reply.epoch, "string", `reply epoch ${show(reply)}`);
    assert.ok(Number.isInteger(reply.version), `reply version ${show(reply)}`);
    if ("state" in reply) {
      assert.ok(!("ops" in reply), `a reply has state or ops, not both: ${show(reply)}`);
      this.reset(reply);
    } else {
      assert.ok(Array.isArray(reply.ops), `a reply without state has ops: ${show(reply)}`);
      assert.equal(reply.epoch, this.epoch, "ops come only for the epoch held");
      this.state = applyOps(this.state, reply.ops);
      this.version = reply.version;
    }
    // Patches stashed during a gap: those that follow now apply, older ones go.
    const stash = this.stash.sort((a, b) => a.from - b.from);
    this.stash = [];
    for (const p of stash) this.onPatch(p, true);
  }

  onPatch(p, replay = false) {
    if (!replay) this.events.push({ event: "patch", payload: p });
    assert.ok(Number.isInteger(p.from) && Number.isInteger(p.to) && p.to > p.from, `patch ${show(p)}`);
    if (this.version === null) return;
    if (this.dropNext > 0 && !replay) {
      this.dropNext -= 1;
      return;
    }
    if (p.to <= this.version) return;
    if (p.from === this.version && !this.syncing) {
      this.state = applyOps(this.state, p.ops);
      this.version = p.to;
      return;
    }
    this.stash.push(p);
    if (!this.syncing) this.sync();
  }

  async sync() {
    this.syncing = true;
    this.gaps += 1;
    const r = await push(this.channel, "sync", { epoch: this.epoch, version: this.version });
    assert.equal(r.status, "ok", `sync reply ${show(r)}`);
    this.syncing = false;
    this.applyReply(r.response);
  }
}

/**
 * Waits until `copy` holds `version` (or later) and the same version as GET, then checks
 * that it holds the very state GET reports for it. Nothing else acts on the store while
 * a test of this file runs, so both settle on the same version.
 */
async function convergeOn(copy, version) {
  let got = null;
  await waitUntil(() => `store:${copy.name} copy at version >= ${version} and at GET's (copy at ${copy.version}, GET at ${got?.body?.version}; last events ${show(copy.events.slice(-2))})`,
    async () => {
      if (copy.version < version || copy.syncing) return false;
      got = await getStore(copy.name);
      return got.body.version === copy.version;
    });
  assert.equal(got.status, 200);
  assert.equal(copy.epoch, got.body.epoch);
  assert.deepEqual(copy.state, got.body.state, `the copy's state at version ${copy.version} is GET's`);
  return got;
}

async function act(channel, event, payload = {}) {
  return push(channel, event, payload);
}

function todosBy(state, text) {
  return state.todos.filter((t) => t.text === text);
}

test.afterEach(async () => {
  await closeAll();
});

// ---------------------------------------------------------------------------------------
// Joins

test("a join without a version gets the state, then presence; unknown stores are refused", T, async () => {
  const user = uname("ann");
  const socket = await connect({ user });
  const ch = socket.channel("store:todos", {});
  const presence = waitFor(ch, "presence_state");
  const reply = await join(ch);
  assert.deepEqual(Object.keys(reply).sort(), ["epoch", "state", "version"]);
  assert.match(reply.epoch, /^[0-9a-z]{13}$/);
  assert.ok(Array.isArray(reply.state.todos), show(reply));
  const state = await presence;
  assert.ok(state[user] && state[user].metas.length === 1, `presence_state names the joiner: ${show(state)}`);

  for (const topic of ["store:nope", "store:", "store:todos/x"]) {
    const refused = socket.channel(topic, {});
    await assert.rejects(join(refused), (e) => e instanceof JoinError && e.response.reason === "unknown store",
      `join ${topic}`);
    refused.leave();
  }
});

test("a join from the current version gets no ops; from an older one the ops since; otherwise the state", T, async () => {
  const socket = await connect({ user: uname("bob") });
  const writer = socket.channel("store:todos", {});
  const first = await join(writer);
  const text = tag("rejoin");
  const added = await act(writer, "add", { text });
  assert.equal(added.status, "ok", show(added));
  const v1 = added.response.version;
  assert.ok(v1 > first.version, `version grows: ${v1} > ${first.version}`);

  const at = async (params) => {
    const s = await connect({ user: uname("probe") });
    const reply = await join(s.channel("store:todos", params));
    await disconnect(s);
    return reply;
  };
  const same = await at({ epoch: first.epoch, version: v1 });
  assert.deepEqual(same, { epoch: first.epoch, version: v1, ops: [] });

  const older = await at({ epoch: first.epoch, version: first.version });
  assert.equal(older.version, v1);
  assert.deepEqual(applyOps(first.state, older.ops), (await getStore("todos")).body.state);

  for (const params of [
    { epoch: "another", version: first.version },
    { epoch: first.epoch, version: v1 + 1000 },
    { epoch: first.epoch, version: "3" },
    { epoch: first.epoch, version: -1 },
    { epoch: 7, version: 1 },
    { version: 1 },
  ]) {
    const reply = await at(params);
    assert.deepEqual(Object.keys(reply).sort(), ["epoch", "state", "version"], `join with ${show(params)}`);
    assert.equal(reply.epoch, first.epoch);
  }
  const removed = await act(writer, "remove", { id: todosBy((await getStore("todos")).body.state, text)[0].id });
  assert.equal(removed.status, "ok");
});

test("a join payload that is not an object is refused", T, async () => {
  const socket = await connect({ user: uname("cy") });
  const ch = socket.channel("store:todos", () => [1]);
  await assert.rejects(join(ch), (e) => e instanceof JoinError && e.response.reason === "invalid payload");
});

// ---------------------------------------------------------------------------------------
// Actions and patches

test("store:todos actions: replies, errors that change nothing, and patches to every member", T, async () => {
  const user = uname("dee");
  const socket = await connect({ user });
  const mine = new Copy(socket, "todos");
  await mine.join();
  const other = new Copy(await connect({ user: uname("eve") }), "todos");
  await other.join();
  const text = tag("milk");

  const added = await act(mine.channel, "add", { text: `  ${text}  ` });
  assert.deepEqual(Object.keys(added.response), ["version"]);
  assert.equal(added.status, "ok");
  const got = await convergeOn(other, added.response.version);
  const [todo] = todosBy(other.state, text);
  assert.deepEqual(todo, { id: todo.id, text, done: false, by: user }, "the text is kept trimmed");
  assert.ok(Number.isInteger(todo.id));
  // The patch that carried it is an add of exactly that todo.
  const carried = other.events.find((e) => e.event === "patch" && e.payload.ops.some((op) => op.value?.text === text));
  assert.ok(carried, `a patch carried the new todo: ${show(other.events.slice(-3))}`);
  assert.deepEqual(carried.payload.ops.find((op) => op.value?.text === text).op, "add");
  assert.equal(got.body.version >= added.response.version, true);

  const refusals = [
    ["add", { text: "   " }, "invalid text"],
    ["add", { text: "x".repeat(201) }, "invalid text"],
    ["add", { text: 5 }, "invalid text"],
    ["add", {}, "invalid text"],
    ["toggle", { id: -1 }, "unknown todo"],
    ["toggle", { id: "1" }, "unknown todo"],
    ["remove", { id: 999999999 }, "unknown todo"],
    ["remove", {}, "unknown todo"],
    ["rename", { id: todo.id }, "unknown event"],
  ];
  const before = await getStore("todos");
  for (const [event, payload, reason] of refusals) {
    const r = await act(mine.channel, event, payload);
    assert.deepEqual(r, { status: "error", response: { reason } }, `${event} ${show(payload)}`);
  }
  const after = await getStore("todos");
  assert.equal(after.body.version, before.body.version, "refused actions commit nothing");
  assert.deepEqual(after.body.state, before.body.state);

  const toggled = await act(mine.channel, "toggle", { id: todo.id });
  assert.equal(toggled.status, "ok");
  assert.equal(toggled.response.version, after.body.version + 1);
  await convergeOn(other, toggled.response.version);
  assert.equal(todosBy(other.state, text)[0].done, true);

  const noop = await act(mine.channel, "clear_done", {});
  assert.equal(noop.status, "ok");
  await convergeOn(mine, noop.response.version);
  assert.deepEqual(todosBy(mine.state, text), [], "clear_done removed the done todo");
  const again = await act(mine.channel, "clear_done", {});
  assert.deepEqual(again, { status: "ok", response: { version: noop.response.version } },
    "a no-op action answers the current version");

  const second = await act(mine.channel, "add", { text });
  const removed = await act(mine.channel, "remove", { id: todosBy((await getStore("todos")).body.state, text)[0].id });
  assert.equal(removed.response.version, second.response.version + 1);
  await convergeOn(other, removed.response.version);
  await convergeOn(mine, removed.response.version);
  assert.deepEqual(todosBy(other.state, text), []);
  assert.equal(mine.gaps + other.gaps, 0, "no gap without a lost patch");
});

test("at 500 todos the store is full; a clear_done larger than the state goes out as a state push", T, async () => {
  const socket = await connect({ user: uname("fay") });
  const copy = new Copy(socket, "todos");
  await copy.join();
  const text = tag("bulk");
  const ids = [];
  let last = null;
  for (;;) {
    const r = await act(copy.channel, "add", { text });
    if (r.status === "error") {
      assert.deepEqual(r.response, { reason: "store full" });
      break;
    }
    ids.push(r.response.version);
    assert.ok(ids.length <= 500, "the store accepted more than 500 todos");
  }
  const full = await getStore("todos");
  assert.equal(full.body.state.todos.length, 500);
  for (const todo of todosBy(full.body.state, text)) {
    last = await act(copy.channel, "toggle", { id: todo.id });
    assert.equal(last.status, "ok");
  }
  const states = copy.events.filter((e) => e.event === "state").length;
  const cleared = await act(copy.channel, "clear_done", {});
  await convergeOn(copy, cleared.response.version);
  assert.deepEqual(todosBy(copy.state, text), []);
  assert.ok(copy.events.filter((e) => e.event === "state").length > states,
    `removing ${ids.length} todos in one action is sent as the (smaller) state: ${show(copy.events.slice(-2).map((e) => e.event))}`);
});

test("several clients acting at once all converge on the GET state", T, async () => {
  const copies = [];
  for (let i = 0; i < 4; i++) {
    const c = new Copy(await connect({ user: uname("conv") }), "todos");
    await c.join();
    copies.push(c);
  }
  const text = tag("conv");
  const replies = await Promise.all(copies.flatMap((c) =>
    Array.from({ length: 15 }, (_, i) => act(c.channel, "add", { text: `${text}-${i}` }))));
  assert.ok(replies.every((r) => r.status === "ok"), show(replies.filter((r) => r.status !== "ok")));
  const versions = replies.map((r) => r.response.version);
  assert.equal(new Set(versions).size, versions.length, "each action got its own version");
  const top = Math.max(...versions);
  for (const c of copies) await convergeOn(c, top);
  const final = await getStore("todos");
  assert.equal(final.body.version, top, "the last action's version is the store's");
  for (const c of copies) assert.equal(c.version, top);
  const mine = final.body.state.todos.filter((t) => t.text.startsWith(text));
  assert.equal(mine.length, 60);
  for (const t of mine) await act(copies[0].channel, "remove", { id: t.id });
});

test("a client that misses a patch notices the gap, syncs once and catches up", T, async () => {
  const writer = new Copy(await connect({ user: uname("gw") }), "todos");
  await writer.join();
  const reader = new Copy(await connect({ user: uname("gr") }), "todos");
  await reader.join();
  const text = tag("gap");
  reader.dropNext = 1;
  const a = await act(writer.channel, "add", { text: `${text}-a` });
  await waitUntil("the reader to drop a patch", () => reader.dropNext === 0);
  assert.equal(reader.gaps, 0);
  const b = await act(writer.channel, "add", { text: `${text}-b` });
  assert.ok(b.response.version > a.response.version);
  await convergeOn(reader, b.response.version);
  assert.equal(reader.gaps, 1, "one sync resolved the gap");
  assert.equal(todosBy(reader.state, `${text}-a`).length, 1);
  assert.equal(todosBy(reader.state, `${text}-b`).length, 1);
  // A sync from the current version answers no ops; a malformed one the state.
  const same = await push(reader.channel, "sync", { epoch: reader.epoch, version: reader.version });
  assert.deepEqual(same.response, { epoch: reader.epoch, version: reader.version, ops: [] });
  const bad = await push(reader.channel, "sync", { epoch: reader.epoch });
  assert.deepEqual(Object.keys(bad.response).sort(), ["epoch", "state", "version"]);
  for (const t of reader.state.todos.filter((t) => t.text.startsWith(text))) {
    await act(writer.channel, "remove", { id: t.id });
  }
});

test("a client that comes back with its version gets the ops it missed (params closure)", T, async () => {
  const writer = socketAndCopy(uname("rw"));
  const away = socketAndCopy(uname("ra"));
  await (await writer).copy.join();
  const { socket, copy } = await away;
  await copy.join();
  const text = tag("away");
  // Closed for good before the changes: no frame of them can still arrive.
  await new Promise((resolve) => socket.disconnect(resolve));
  const w = (await writer).copy;
  const r1 = await act(w.channel, "add", { text: `${text}-1` });
  const r2 = await act(w.channel, "add", { text: `${text}-2` });
  const rejoined = waitForRejoin(copy.channel, 10_000);
  socket.connect();
  await rejoined;
  const reply = copy.replies.at(-1);
  assert.ok(Array.isArray(reply.ops), `the rejoin reply has ops: ${show(reply)}`);
  assert.ok(reply.ops.length >= 2, show(reply));
  await convergeOn(copy, r2.response.version);
  assert.equal(todosBy(copy.state, `${text}-1`).length + todosBy(copy.state, `${text}-2`).length, 2);
  for (const t of copy.state.todos.filter((t) => t.text.startsWith(text))) {
    await act(w.channel, "remove", { id: t.id });
  }
  assert.ok(r1.response.version < r2.response.version);
});

async function socketAndCopy(user, name = "todos") {
  const socket = await connect({ user });
  return { socket, copy: new Copy(socket, name) };
}

// ---------------------------------------------------------------------------------------
// store:status

test("store:status mirrors all: a new user is one add at its index, a hit one replace of /hits; actions are read only", T, async () => {
  const watcher = new Copy(await connect({ user: uname("sw") }), "status");
  await watcher.join();
  assert.deepEqual(Object.keys(watcher.state).sort(), ["connections", "hits", "msgs", "user_count", "users"]);
  const refused = await act(watcher.channel, "hit", {});
  assert.deepEqual(refused, { status: "error", response: { reason: "read only" } });

  const user = `zz-${uname("late")}`;
  const socket = await connect({ user });
  const all = socket.channel("all", {});
  const status = [];
  all.on("status_users", (s) => status.push(s));
  await join(all);
  await waitUntil(`${user} in store:status`, () => watcher.state.users.includes(user));
  const index = watcher.state.users.indexOf(user);
  const patch = watcher.events.find((e) => e.event === "patch" && e.payload.ops.some((op) => op.value === user));
  assert.ok(patch, show(watcher.events.slice(-3)));
  assert.deepEqual(patch.payload.ops.find((op) => op.value === user), { op: "add", path: `/users/${index}`, value: user });

  const hit = await push(all, "hit", {});
  await waitUntil(`hits ${hit.response.hits} in store:status`, () => watcher.state.hits >= hit.response.hits);
  const hitPatch = watcher.events.find((e) => e.event === "patch" && e.payload.ops.some((op) => op.path === "/hits" && op.value === hit.response.hits));
  assert.deepEqual(hitPatch.payload.ops.find((op) => op.path === "/hits"), { op: "replace", path: "/hits", value: hit.response.hits });

  const msg = await push(all, "new_msg", { body: tag("hello") });
  await waitUntil("the message in store:status", () => watcher.state.msgs.some((m) => m.id === msg.response.id));
  // Nothing else changes all in this file: once both have the message, store:status,
  // its GET and the last status_users are the same status.
  await waitUntil("status_users with the message", () => status.at(-1)?.msgs.some((m) => m.id === msg.response.id));
  let snap = null;
  await waitUntil("GET /stores/status at the watcher's version", async () => {
    snap = await getStore("status");
    return snap.body.version === watcher.version;
  });
  assert.deepEqual(watcher.state, snap.body.state);
  assert.deepEqual(snap.body.state, status.at(-1), "store:status holds exactly what status_users says");

  await disconnect(socket);
  await waitUntil(`${user} gone from store:status`, () => !watcher.state.users.includes(user));
  assert.equal(watcher.state.user_count, watcher.state.users.length);
});

// ---------------------------------------------------------------------------------------
// HTTP

test("GET /stores/NAME: 200 with a weak ETag, 304 on If-None-Match, HEAD, 403 and 404", T, async () => {
  const got = await getStore("todos", { user: uname("http") });
  assert.equal(got.status, 200);
  assert.deepEqual(Object.keys(got.body).sort(), ["epoch", "state", "version"]);
  const etag = got.headers.get("etag");
  assert.equal(etag, `W/"${got.body.epoch}.${got.body.version}"`);
  assert.equal(got.headers.get("cache-control"), "no-cache");
  assert.match(got.headers.get("content-type"), /^application\/json/);

  const fresh = await getStore("todos", { headers: { "if-none-match": etag } });
  assert.equal(fresh.status, 304);
  assert.equal(fresh.text, "");
  assert.equal(fresh.headers.get("etag"), etag);
  const listed = await getStore("todos", { headers: { "if-none-match": `W/"old.1", ${etag}` } });
  assert.equal(listed.status, 304);
  const stale = await getStore("todos", { headers: { "if-none-match": `W/"${got.body.epoch}.${got.body.version + 1}"` } });
  assert.equal(stale.status, 200);

  const head = await getStore("todos", { method: "HEAD" });
  assert.equal(head.status, 200);
  assert.equal(head.text, "");
  assert.equal(head.headers.get("etag"), etag);
  assert.equal(head.headers.get("content-length"), String(Buffer.byteLength(got.text)));

  assert.equal((await getStore("todos", { user: null })).status, 403);
  assert.equal((await getStore("todos", { user: "   " })).status, 403);
  assert.equal((await getStore("todos", { user: "a\u0007b" })).status, 403);
  const unknown = await getStore("nope");
  assert.deepEqual([unknown.status, unknown.body], [404, { reason: "unknown store" }]);
  assert.equal((await getStore("nope", { user: null })).status, 403, "admission comes first");

  // A change makes a new tag.
  const socket = await connect({ user: uname("etag") });
  const ch = socket.channel("store:todos", {});
  await join(ch);
  const text = tag("etag");
  const r = await act(ch, "add", { text });
  const changed = await getStore("todos", { headers: { "if-none-match": etag } });
  assert.equal(changed.status, 200);
  assert.ok(changed.body.version >= r.response.version);
  await act(ch, "remove", { id: todosBy(changed.body.state, text)[0].id });
});

test("presence on a store topic follows its members", T, async () => {
  const a = await connect({ user: uname("pa") });
  const chA = a.channel("store:todos", {});
  const presence = new Presence(chA);
  await join(chA);
  const userB = uname("pb");
  const b = await connect({ user: userB });
  await join(b.channel("store:todos", {}));
  await waitUntil(`${userB} in presence`, () => presence.list((key) => key).includes(userB));
  await disconnect(b);
  await waitUntil(`${userB} gone from presence`, () => !presence.list((k) => k).includes(userB));
});
