// fluxwire's default application (docs/contract.md) with phoenix.js on the long-poll
// transport next to a WebSocket client: the status channel "all", a chat room with
// presence, leave, and the presence leave of a long-poll client that stopped polling.
//
//   FLUXWIRE_URL=ws://127.0.0.1:4123/socket node --test longpoll_app.test.mjs
//
// The server is the real app with a 1 s long-poll window and a 2 s session timeout
// (tests/longpoll_js.rs starts it); this file is its only client.

import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";

import { LongPoll, Presence } from "phoenix";

import { closeAll, connect, join, leave, push, show, waitFor } from "./lib.mjs";

const T = { timeout: 30_000 };
const RUN = randomBytes(3).toString("hex");

/** Resolves with the first status_users on `channel` whose users satisfy `pred`. */
function statusWhere(channel, pred, what) {
  return waitFor(channel, "status_users", (p) => pred(p.users), 8000).catch((e) => {
    throw new Error(`status_users with ${what}: ${e.message}`);
  });
}

/** Resolves once `check()` is true (checked every 20 ms); rejects after 8 s. */
function until(check, what) {
  return new Promise((resolve, reject) => {
    const poll = () => {
      if (check()) {
        clearInterval(timer);
        clearTimeout(timeout);
        resolve();
      }
    };
    const timer = setInterval(poll, 20);
    const timeout = setTimeout(() => {
      clearInterval(timer);
      reject(new Error(`timed out after 8000 ms waiting for ${typeof what === "function" ? what() : what}`));
    }, 8000);
    poll();
  });
}

/** Resolves once the phoenix.js Presence on `channel` lists exactly `keys`. */
function presenceIs(presence, keys) {
  const want = JSON.stringify([...keys].sort());
  const have = () => JSON.stringify(presence.list((key) => key).sort());
  return until(() => have() === want, () => `presence ${want}; it is ${have()}`);
}

test("app: a long-poll client in all and in a room with a WebSocket member", T, async (t) => {
  t.after(closeAll);
  const wsUser = `ws-${RUN}`;
  const lpUser = `lp-${RUN}`;
  const room = `room:lp-${RUN}`;

  const ws = await connect({ user: wsUser });
  const wsAll = ws.channel("all", {});
  await join(wsAll);

  const lp = await connect({ user: lpUser }, { transport: LongPoll });
  const lpAll = lp.channel("all", {});
  const seen = statusWhere(wsAll, (users) => users.includes(lpUser), `${lpUser} in users`);
  assert.deepEqual(await join(lpAll), { user: lpUser });
  const status = await seen;
  assert.deepEqual(status.users, [lpUser, wsUser].sort(), show(status));

  // The WebSocket member may get the new count before the hitter's reply arrives.
  const hitsSeen = [];
  wsAll.on("status_users", (p) => hitsSeen.push(p.hits));
  const hit = await push(lpAll, "hit", {});
  assert.equal(hit.status, "ok", show(hit));
  await until(() => hitsSeen.includes(hit.response.hits), `hits ${hit.response.hits} at ${wsUser}`);

  // A room: presence both ways, chat both ways.
  const wsRoom = ws.channel(room, {});
  const wsPresence = new Presence(wsRoom);
  await join(wsRoom);
  const lpRoom = lp.channel(room, {});
  const lpPresence = new Presence(lpRoom);
  await join(lpRoom);
  await presenceIs(wsPresence, [wsUser, lpUser]);
  await presenceIs(lpPresence, [wsUser, lpUser]);

  const atWs = waitFor(wsRoom, "new_msg", (m) => m.body === "from long-poll");
  const sent = await push(lpRoom, "new_msg", { body: "from long-poll" });
  assert.equal(sent.status, "ok", show(sent));
  const got = await atWs;
  assert.deepEqual(got, { id: sent.response.id, user: lpUser, body: "from long-poll", at: got.at });
  const atLp = waitFor(lpRoom, "new_msg", (m) => m.body === "from websocket");
  await push(wsRoom, "new_msg", { body: "from websocket" });
  assert.equal((await atLp).user, wsUser);

  // Leaves: the WebSocket member sees the long-poll user go from the room and from all.
  const gone = statusWhere(wsAll, (users) => !users.includes(lpUser), `${lpUser} gone`);
  assert.equal((await leave(lpRoom)).status, "ok");
  assert.equal((await leave(lpAll)).status, "ok");
  await presenceIs(wsPresence, [wsUser]);
  assert.deepEqual((await gone).users, [wsUser]);
});

test("app: a long-poll client that stops polling leaves when its session expires", T, async (t) => {
  t.after(closeAll);
  const wsUser = `ws2-${RUN}`;
  const ghost = `ghost-${RUN}`;
  const room = `room:ghost-${RUN}`;
  const ws = await connect({ user: wsUser });
  const wsAll = ws.channel("all", {});
  await join(wsAll);
  const wsRoom = ws.channel(room, {});
  const wsPresence = new Presence(wsRoom);
  await join(wsRoom);

  const lp = await connect({ user: ghost }, { transport: LongPoll });
  const seen = statusWhere(wsAll, (users) => users.includes(ghost), `${ghost} in users`);
  await join(lp.channel("all", {}));
  await join(lp.channel(room, {}));
  await seen;
  await presenceIs(wsPresence, [wsUser, ghost]);

  // The client vanishes without a word (a closed laptop): no more polls, no leave.
  const gone = statusWhere(wsAll, (users) => !users.includes(ghost), `${ghost} gone`);
  lp.conn.poll = () => {};
  const since = Date.now();
  await gone;
  await presenceIs(wsPresence, [wsUser]);
  // Not before the 2 s timeout (counted from the end of the last poll, <= 1 s ago).
  assert.ok(Date.now() - since >= 1000, `left after ${Date.now() - since} ms`);
});
