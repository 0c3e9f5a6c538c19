// The bounds on chat rooms (README, "What one user can make it send or keep") through
// phoenix.js 1.8.x, against the real app started with small settings:
//
//   cd tests/js && FLUXWIRE_URL=ws://127.0.0.1:4000/socket FLUXWIRE_MAX_ROOMS=3 \
//     FLUXWIRE_ROOM_IDLE_TIMEOUT_MS=500 node --test app_bounds.test.mjs
//
// (cargo test --test app_bounds starts that server on an ephemeral port.) Every test
// starts by letting the rooms of the one before go idle and be dropped, so that each
// starts with no room live; the tests of this file run one after the other.

import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";

import { closeAll, connect, join, JoinError, leave, push, show, sleep, waitFor } from "./lib.mjs";

const T = { timeout: 30_000 };
const MAX_ROOMS = Number(process.env.FLUXWIRE_MAX_ROOMS);
const IDLE_MS = Number(process.env.FLUXWIRE_ROOM_IDLE_TIMEOUT_MS);
assert.ok(MAX_ROOMS >= 2 && IDLE_MS >= 100, "FLUXWIRE_MAX_ROOMS and FLUXWIRE_ROOM_IDLE_TIMEOUT_MS must be set");
/** Idle rooms are dropped at most half an idle timeout late; this is well past that. */
const DROPPED_MS = 3 * IDLE_MS;

const RUN = randomBytes(3).toString("hex");
let counter = 0;
const uname = (base) => `${base}-${RUN}-${++counter}`;
const uroom = (base) => `room:${base}-${RUN}-${++counter}`;

/** Joins `topic` on `socket`; the reply. */
function joinRoom(socket, topic) {
  return join(socket.channel(topic, {}));
}

/** Asserts a join of `topic` is refused with `too many rooms`, and stops phoenix.js's retries. */
async function refused(socket, topic) {
  const channel = socket.channel(topic, {});
  await assert.rejects(join(channel), (err) => {
    assert.ok(err instanceof JoinError, `expected a JoinError, got ${err && err.stack}`);
    assert.equal(err.status, "error", err.message);
    assert.deepEqual(err.response, { reason: "too many rooms" }, `join ${topic}`);
    return true;
  });
  channel.leave();
}

/**
 * Joins `topic` once the server serves it: a room goes a moment after its last member's
 * leave is answered (when that channel has ended), so a join right after may still find
 * the cap reached; phoenix.js would retry it too.
 */
async function joinWhenServed(socket, topic, timeoutMs = 2000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const channel = socket.channel(topic, {});
    try {
      return { channel, reply: await join(channel) };
    } catch (err) {
      channel.leave();
      const full = err instanceof JoinError && err.response?.reason === "too many rooms";
      if (!full || Date.now() > deadline) throw err;
      await sleep(20);
    }
  }
}

async function post(channel, body) {
  const r = await push(channel, "new_msg", { body });
  assert.equal(r.status, "ok", `new_msg on ${channel.topic}: ${show(r)}`);
  return r.response.id;
}

/** A fresh start: whatever an earlier test left is idle long enough to be dropped. */
async function start(t) {
  t.after(closeAll);
  await sleep(DROPPED_MS);
}

test(`rooms: past --max-rooms (${MAX_ROOMS}), joining a new room -> error {reason: too many rooms}; live rooms still take members`, T, async (t) => {
  await start(t);
  const a = await connect({ user: uname("filler") });
  const rooms = Array.from({ length: MAX_ROOMS }, (_, i) => uroom(`full${i}`));
  const channels = [];
  for (const topic of rooms) {
    const channel = a.channel(topic, {});
    await join(channel);
    channels.push(channel);
  }
  await post(channels[1], "history of a live room");
  await refused(a, uroom("onemore"));
  const b = await connect({ user: uname("other") });
  await refused(b, uroom("another"));
  // A live room takes more members, with its history.
  const reply = await joinRoom(b, rooms[1]);
  assert.deepEqual(reply.messages.map((m) => m.body), ["history of a live room"], "join of a live room at the cap");
  // The refused joins started nothing: a room without history goes with its last
  // member, which makes room for exactly one new room.
  assert.equal((await leave(channels[0])).status, "ok");
  const { channel: next } = await joinWhenServed(a, uroom("next"));
  const atNext = waitFor(next, "new_msg");
  assert.equal(await post(next, "first"), 1, "a new room's ids start at 1");
  await atNext;
  await refused(b, uroom("still"));
});

test(`rooms: an empty room with history is dropped after --room-idle-timeout-ms (${IDLE_MS} ms), its history with it; a member keeps a room`, T, async (t) => {
  await start(t);
  const idle = uroom("idle");
  const kept = uroom("kept");
  const a = await connect({ user: uname("poster") });
  const c = await connect({ user: uname("visitor") });
  const keeper = await connect({ user: uname("keeper") });
  const idleChannel = a.channel(idle, {});
  await join(idleChannel);
  assert.deepEqual([await post(idleChannel, "one"), await post(idleChannel, "two")], [1, 2]);
  assert.equal((await leave(idleChannel)).status, "ok");
  // Within the idle timeout the empty room keeps its history; this join and leave
  // start its idle time over.
  const early = c.channel(idle, {});
  assert.deepEqual((await join(early)).messages.map((m) => m.body), ["one", "two"], "before the idle timeout");
  assert.equal((await leave(early)).status, "ok");
  const keptChannel = keeper.channel(kept, {});
  await join(keptChannel);
  await post(keptChannel, "kept");

  await sleep(DROPPED_MS);
  const late = c.channel(idle, {});
  assert.deepEqual(await join(late), { messages: [] }, "after the idle timeout the room starts over");
  assert.equal(await post(late, "again"), 1, "with its ids from 1");
  const d = await connect({ user: uname("late") });
  assert.deepEqual((await joinRoom(d, kept)).messages.map((m) => m.body), ["kept"],
    "a room with a member is never dropped, however long it is idle");
});

test("rooms: rooms left idle free the cap: at the cap joins are refused, after the idle timeout they are served", T, async (t) => {
  await start(t);
  const a = await connect({ user: uname("churner") });
  for (let i = 0; i < MAX_ROOMS; i++) {
    const channel = a.channel(uroom(`churn${i}`), {});
    await join(channel);
    await post(channel, `kept ${i}`);
    assert.equal((await leave(channel)).status, "ok");
  }
  const b = await connect({ user: uname("newcomer") });
  await refused(b, uroom("blocked"));
  await sleep(DROPPED_MS);
  assert.deepEqual(await joinRoom(b, uroom("served")), { messages: [] }, "a new room once the idle ones are dropped");
});
