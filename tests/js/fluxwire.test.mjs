// static/fluxwire.js, the client module the server serves, in Node against the real app
// (docs/contract.md, "Stores over the wire"): its immutable RFC 6902 apply, and
// FluxStore on phoenix.js 1.8.x: join, snapshot first, actions, a lost patch resolved
// with one sync, a rejoin that gets only the ops it missed, and clients converging.
//
//   cd tests/js && FLUXWIRE_URL=ws://127.0.0.1:4000/socket FLUXWIRE_HTTP=http://127.0.0.1:4000 \
//     node --test fluxwire.test.mjs

import { test } from "node:test";
import assert from "node:assert/strict";

import { applyPatch, joinStore } from "../../static/fluxwire.js";
import { closeAll, connect, getStore, httpBase, show, uniqueName, waitUntil } from "./lib.mjs";

const T = { timeout: 60_000 };
const uname = uniqueName;
const tag = uniqueName;

/** A FluxStore on a new connection, with every change it reports recorded. */
async function store(user, options = {}) {
  const socket = await connect({ user });
  const s = joinStore(socket, "todos", { baseUrl: httpBase(), ...options });
  s.changes = [];
  s.subscribe((_state, change) => s.changes.push(change));
  await s.ready;
  return s;
}

/** Waits until `s` holds GET's version, then checks it holds GET's state. */
async function converged(s) {
  let got = null;
  await waitUntil(() => `FluxStore at GET's version (at ${s.version}, GET at ${got?.version})`, async () => {
    got = await getStore("todos");
    return got.version === s.version && !s.syncing;
  });
  assert.equal(s.epoch, got.epoch);
  assert.deepEqual(s.getState(), got.state);
}

async function removeMine(s, prefix) {
  for (const todo of s.getState().todos.filter((t) => t.text.startsWith(prefix))) {
    await s.dispatch("remove", { id: todo.id });
  }
}

test.afterEach(async () => {
  await closeAll();
});

test("applyPatch copies only along the changed paths and leaves its input alone", () => {
  const doc = { a: { list: [{ n: 1 }, { n: 2 }] }, b: { deep: { x: 1 } }, "s/l": { "t~": 0 } };
  const frozen = JSON.stringify(doc);
  const out = applyPatch(doc, [
    { op: "replace", path: "/a/list/1/n", value: 3 },
    { op: "add", path: "/a/list/-", value: { n: 4 } },
    { op: "add", path: "/a/list/0", value: { n: 0 } },
    { op: "remove", path: "/a/list/1" },
    { op: "add", path: "/s~1l/t~0", value: 5 },
  ]);
  assert.equal(JSON.stringify(doc), frozen, "the input is unchanged");
  assert.deepEqual(out, { a: { list: [{ n: 0 }, { n: 3 }, { n: 4 }] }, b: { deep: { x: 1 } }, "s/l": { "t~": 5 } });
  assert.notEqual(out, doc);
  assert.notEqual(out.a, doc.a);
  assert.notEqual(out.a.list, doc.a.list);
  assert.equal(out.b, doc.b, "an untouched subtree is shared");
  assert.notEqual(out.a.list[1], doc.a.list[1], "the changed element is new");

  const list = [{ id: 1 }, { id: 2 }, { id: 3 }];
  const next = applyPatch({ list }, [{ op: "replace", path: "/list/1/id", value: 9 }]);
  assert.equal(next.list[0], list[0]);
  assert.equal(next.list[2], list[2]);
  assert.deepEqual(next.list[1], { id: 9 });

  assert.deepEqual(applyPatch({ a: 1 }, [{ op: "move", from: "/a", path: "/b" }, { op: "copy", from: "/b", path: "/c" }, { op: "test", path: "/c", value: 1 }]), { b: 1, c: 1 });
  assert.deepEqual(applyPatch({ a: 1 }, [{ op: "replace", path: "", value: [1] }]), [1]);
  for (const bad of [
    [{ op: "remove", path: "/missing" }],
    [{ op: "replace", path: "/missing", value: 1 }],
    [{ op: "add", path: "/list/5", value: 1 }],
    [{ op: "add", path: "/list/01", value: 1 }],
    [{ op: "add", path: "/nope/x", value: 1 }],
    [{ op: "test", path: "/list", value: [] }],
    [{ op: "remove", path: "" }],
    [{ op: "add", path: "x", value: 1 }],
  ]) {
    assert.throws(() => applyPatch({ list: [1] }, bad), `${show(bad)} throws`);
  }
});

test("joinStore: ready with GET's state; dispatch resolves the version or rejects the reason", T, async () => {
  const s = await store(uname("fa"));
  await converged(s);
  const text = tag("fx");
  const reply = await s.dispatch("add", { text });
  assert.deepEqual(Object.keys(reply), ["version"]);
  const state = await s.until(reply.version);
  assert.equal(state.todos.filter((t) => t.text === text).length, 1);
  await assert.rejects(s.dispatch("add", { text: " " }), (e) => e.message === "invalid text" && e.response.reason === "invalid text");
  await assert.rejects(s.dispatch("nope", {}), /unknown event/);
  await converged(s);
  await removeMine(s, text);
});

test("joinStore with snapshot: GET first, then a join that answers ops; a second GET is a 304", T, async () => {
  const s = await store(uname("fs"), { snapshot: true });
  assert.equal(s.changes[0].kind, "state");
  assert.equal(s.changes[0].cause, "snapshot");
  assert.ok(!s.changes.some((c) => c.kind === "state" && c.cause === "join"),
    `the join after the snapshot answers ops, not the state: ${show(s.changes.map((c) => [c.kind, c.cause]))}`);
  const reply = s.channel.joinPush.receivedResp.response;
  assert.ok(Array.isArray(reply.ops), `join reply ${show(reply)}`);
  assert.equal(await s.fetchSnapshot(), false, "If-None-Match with the held tag: 304");
  await converged(s);
});

test("a lost patch: FluxStore stashes what follows, syncs once and catches up", T, async () => {
  const writer = await store(uname("gw"));
  const reader = await store(uname("gr"));
  const text = tag("gap");
  // The reader loses the next patch, as a client would that missed it.
  let lose = 1;
  const handle = reader.handlePatch.bind(reader);
  reader.handlePatch = (patch) => (lose-- > 0 ? undefined : handle(patch));
  const a = await writer.dispatch("add", { text: `${text}-a` });
  await waitUntil("the reader to lose a patch", () => lose === 0);
  assert.ok(reader.version < a.version, "the lost patch is not applied");
  const b = await writer.dispatch("add", { text: `${text}-b` });
  await reader.until(b.version);
  await converged(reader);
  const syncs = reader.changes.filter((c) => c.cause === "sync");
  assert.equal(syncs.length, 1, `one sync: ${show(reader.changes.map((c) => [c.kind, c.cause, c.from, c.to]))}`);
  assert.equal(reader.getState().todos.filter((t) => t.text.startsWith(text)).length, 2);
  await removeMine(writer, text);
});

test("a FluxStore that comes back gets only the ops it missed (params closure)", T, async () => {
  const writer = await store(uname("rw"));
  const away = await store(uname("ra"));
  const text = tag("back");
  // Closed for good before the change: no frame of it can still arrive.
  await new Promise((resolve) => away.socket.disconnect(resolve));
  const before = away.changes.length;
  const r = await writer.dispatch("add", { text });
  assert.ok(away.version < r.version);
  away.socket.connect();
  await away.until(r.version);
  const change = away.changes.slice(before).find((c) => c.cause === "join");
  assert.ok(change && change.kind === "patch" && change.ops.length >= 1, show(away.changes.slice(before)));
  await converged(away);
  await removeMine(writer, text);
});

test("several FluxStores acting at once converge on GET's state", T, async () => {
  const stores = await Promise.all([1, 2, 3].map((i) => store(uname(`c${i}`))));
  const text = tag("many");
  const replies = await Promise.all(stores.flatMap((s, i) =>
    Array.from({ length: 10 }, (_, n) => s.dispatch("add", { text: `${text}-${i}-${n}` }))));
  const top = Math.max(...replies.map((r) => r.version));
  for (const s of stores) {
    await s.until(top);
    await converged(s);
  }
  assert.equal(stores[0].getState().todos.filter((t) => t.text.startsWith(text)).length, 30);
  await removeMine(stores[0], text);
});
