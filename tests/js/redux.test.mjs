// The Redux binding of static/fluxwire.js with the real `redux` package, in Node against
// the real app: the middleware pushes actions marked for the server and dispatches the
// replies and the server's events; storeReducer applies store patches immutably;
// presenceReducer follows phoenix.js presence.
//
//   cd tests/js && FLUXWIRE_URL=ws://127.0.0.1:4000/socket FLUXWIRE_HTTP=http://127.0.0.1:4000 \
//     node --test redux.test.mjs

import { test } from "node:test";
import assert from "node:assert/strict";

import { Presence } from "phoenix";
import { applyMiddleware, combineReducers, legacy_createStore as createStore } from "redux";

import {
  createFluxwireMiddleware,
  emitAction,
  JOINED,
  presenceReducer,
  storeReducer,
} from "../../static/fluxwire.js";
import { closeAll, connect, getStore, httpBase, show, uniqueName, waitUntil } from "./lib.mjs";

const T = { timeout: 60_000 };
const uname = uniqueName;
const tag = uniqueName;

/** A Redux store for `user`: todos, their presence, a room, and every action seen. */
async function reduxFor(user, room) {
  const socket = await connect({ user });
  const phx = createFluxwireMiddleware(socket, {
    stores: { todos: { snapshot: true, baseUrl: httpBase() } },
    channels: { [room]: {} },
  });
  const seen = (list = [], action) => [...list, action];
  const store = createStore(
    combineReducers({
      todos: storeReducer("store:todos"),
      who: presenceReducer("store:todos", Presence),
      seen,
    }),
    applyMiddleware(phx),
  );
  await waitUntil(`${user}'s todos and room joined`, () =>
    store.getState().todos.version !== null
    && store.getState().seen.some((a) => a.type === JOINED && a.payload.topic === room));
  return { socket, phx, store, user };
}

const types = (r) => r.store.getState().seen.map((a) => a.type);

async function convergedOnGet(r) {
  let got = null;
  await waitUntil(() => `${r.user}'s todos at GET's version (at ${r.store.getState().todos.version}, GET ${got?.version})`, async () => {
    got = await getStore("todos");
    return r.store.getState().todos.version === got.version;
  });
  assert.deepEqual(r.store.getState().todos.state, got.state);
  assert.equal(r.store.getState().todos.epoch, got.epoch);
}

test.afterEach(async () => {
  await closeAll();
});

const addTodo = emitAction((text) => ({ type: "todo/add", payload: { text } }), "store:todos", "add");
const toggleTodo = emitAction((id) => ({ type: "todo/toggle", payload: { id } }), "store:todos", "toggle");
const removeTodo = emitAction((id) => ({ type: "todo/remove", payload: { id } }), "store:todos", "remove");

test("actions go up, replies and patches come back as Redux actions; reducers copy only what changed", T, async () => {
  const room = `room:${uniqueName("redux")}`;
  const ann = await reduxFor(uname("ann"), room);
  const bob = await reduxFor(uname("bob"), room);
  const text = tag("milk");

  const reply = await ann.store.dispatch(addTodo(text));
  assert.equal(reply.type, "todo/add/ok");
  assert.ok(Number.isInteger(reply.payload.version), show(reply));
  const seen = types(ann);
  assert.ok(seen.indexOf("todo/add") < seen.indexOf("todo/add/ok"), "the action reaches the reducers, then its reply");
  for (const r of [ann, bob]) await convergedOnGet(r);
  const mine = () => bob.store.getState().todos.state.todos.find((t) => t.text === text);
  assert.deepEqual(mine(), { id: mine().id, text, done: false, by: ann.user });

  // A toggle: the toggled todo is a new object; every other todo is the very same one.
  const before = bob.store.getState().todos.state;
  const toggled = await ann.store.dispatch(toggleTodo(mine().id));
  await waitUntil("bob to see the toggle", () => bob.store.getState().todos.version >= toggled.payload.version);
  const after = bob.store.getState().todos.state;
  assert.notEqual(after, before);
  assert.notEqual(after.todos, before.todos);
  for (const [i, todo] of after.todos.entries()) {
    if (todo.text === text) {
      assert.equal(todo.done, true);
      assert.notEqual(todo, before.todos[i]);
    } else {
      assert.equal(todo, before.todos[i], `todo ${todo.id} is shared, not copied`);
    }
  }
  assert.ok(types(bob).includes("store:todos/patch"), show(types(bob).slice(-5)));

  // A refusal comes back as TYPE/error with error: true.
  const refused = await bob.store.dispatch(addTodo("   "));
  assert.equal(refused.type, "todo/add/error");
  assert.equal(refused.error, true);
  assert.deepEqual(refused.payload, { reason: "invalid text" });

  // Server events of a plain channel are Redux actions too.
  const body = tag("hi");
  const posted = await ann.store.dispatch({ type: "chat/send", payload: { body }, meta: { phx: { topic: room, event: "new_msg", local: false } } });
  assert.equal(posted.type, "chat/send/ok");
  assert.ok(!types(ann).includes("chat/send"), "local: false keeps the action from the reducers");
  for (const r of [ann, bob]) {
    await waitUntil(`${r.user} to get new_msg`, () => r.store.getState().seen.some((a) => a.type === `${room}/new_msg` && a.payload.body === body));
  }

  // Presence, through phoenix.js's Presence.syncState / syncDiff.
  for (const r of [ann, bob]) {
    await waitUntil(`${r.user}'s presence to list both`, () => {
      const who = r.store.getState().who;
      return who[ann.user]?.metas.length === 1 && who[bob.user]?.metas.length === 1;
    });
  }
  const whoBefore = ann.store.getState().who;
  await closeSocket(bob);
  await waitUntil("bob to leave ann's presence", () => !ann.store.getState().who[bob.user]);
  assert.ok(whoBefore[bob.user], "the old presence state was not mutated");
  assert.ok(types(ann).includes("store:todos/presence_diff"));

  await ann.store.dispatch(removeTodo(mine()?.id ?? ann.store.getState().todos.state.todos.find((t) => t.text === text).id));
  await convergedOnGet(ann);
});

async function closeSocket(r) {
  await new Promise((resolve) => r.socket.disconnect(resolve));
}
