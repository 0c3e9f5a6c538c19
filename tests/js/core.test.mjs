// phoenix.js (1.8.x) against fluxwire's test EchoChannel ("echo:*").
//
//   cd tests/js && npm ci && FLUXWIRE_URL=ws://127.0.0.1:4123/socket node --test core.test.mjs
//
// Every test uses its own topic(s) and closes its sockets in t.after(closeAll).

import { test } from "node:test";
import assert from "node:assert/strict";

import {
  bytes,
  closeAll,
  connect,
  createSocket,
  disconnect,
  join,
  JoinError,
  leave,
  ping,
  push,
  recordMessages,
  show,
  uniqueTopic,
  waitFor,
  waitForChannelClose,
  waitForChannelError,
  waitForMessage,
  waitForRejoin,
  waitForSocket,
  waitUntil,
} from "./lib.mjs";

const T = { timeout: 20_000 };

/** Connects as `user` and joins `topic`; returns {socket, channel, reply}. */
async function joined(user, topic, joinParams = {}) {
  const socket = await connect({ user });
  const channel = socket.channel(topic, joinParams);
  const reply = await join(channel);
  return { socket, channel, reply };
}

function assertJoinError(reason) {
  return (err) => {
    assert.ok(err instanceof JoinError, `expected a JoinError, got ${err && err.stack}`);
    assert.equal(err.status, "error", `join should be answered with status "error": ${err.message}`);
    assert.equal(err.response && err.response.reason, reason, `unexpected join error response ${show(err.response)}`);
    return true;
  };
}

test("01 join ok: reply contains topic and user", T, async (t) => {
  t.after(closeAll);
  const topic = uniqueTopic("echo", "join");
  const { reply } = await joined("alice", topic);
  assert.equal(reply.topic, topic, `join reply ${show(reply)}`);
  assert.equal(reply.user, "alice", `join reply ${show(reply)}`);

  // phoenix.js's query string quirks (docs/protocol.md §1.2): percent-encoded value, and a
  // null param producing an empty segment ("user=...&&vsn=2.0.0").
  const tricky = "Zoë & co/?=";
  const socket = await connect({ user: tricky, extra: null });
  assert.match(socket.endPointURL(), /&&vsn=2\.0\.0$/, "phoenix.js should put an empty segment in the URL");
  const topic2 = uniqueTopic("echo", "join2");
  const reply2 = await join(socket.channel(topic2));
  assert.equal(reply2.topic, topic2, `join reply ${show(reply2)}`);
  assert.equal(reply2.user, tricky, `the user connect param must be URL-decoded; join reply ${show(reply2)}`);
});

test("02 join refused with refuse:true -> error reason \"refused\"", T, async (t) => {
  t.after(closeAll);
  const socket = await connect({ user: "alice" });
  const channel = socket.channel(uniqueTopic("echo", "refuse"), { refuse: true });
  await assert.rejects(join(channel), assertJoinError("refused"));
});

test("03 unmatched topic -> error reason \"unmatched topic\"", T, async (t) => {
  t.after(closeAll);
  const socket = await connect({ user: "alice" });
  const channel = socket.channel(uniqueTopic("nope", "unmatched"));
  await assert.rejects(join(channel), assertJoinError("unmatched topic"));
});

test("04 push with reply: echo returns a nested payload deep-equal", T, async (t) => {
  t.after(closeAll);
  const { channel } = await joined("alice", uniqueTopic("echo", "echo"));
  const payload = {
    a: 1,
    b: { c: [1, 2, { d: "x" }], e: null, f: true, g: false },
    s: "héllo ✓ \"quoted\" \\ \n",
    n: -1.5,
    big: 9007199254740991,
    empty: {},
    list: [],
  };
  const reply = await push(channel, "echo", payload);
  assert.equal(reply.status, "ok", `echo reply ${show(reply)}`);
  assert.deepEqual(reply.response, payload);
});

test("05 unknown event -> error \"unknown event\"; the channel still works", T, async (t) => {
  t.after(closeAll);
  const { channel } = await joined("alice", uniqueTopic("echo", "unknown"));
  const bad = await push(channel, "no_such_event", { x: 1 });
  assert.equal(bad.status, "error", `reply ${show(bad)}`);
  assert.equal(bad.response && bad.response.reason, "unknown event", `reply ${show(bad)}`);

  const good = await push(channel, "echo", { still: "alive" });
  assert.equal(good.status, "ok", `echo after unknown event: ${show(good)}`);
  assert.deepEqual(good.response, { still: "alive" });
});

test("06 broadcast between two clients: shout reaches both", T, async (t) => {
  t.after(closeAll);
  const topic = uniqueTopic("echo", "shout");
  const a = await joined("alice", topic);
  const b = await joined("bob", topic);

  const atA = waitFor(a.channel, "shout");
  const atB = waitFor(b.channel, "shout");
  const reply = await push(a.channel, "shout", { x: 1 });
  assert.equal(reply.status, "ok", `shout reply ${show(reply)}`);
  assert.deepEqual(reply.response, {});
  assert.deepEqual(await atB, { x: 1 }, "B (other client) should receive the shout");
  assert.deepEqual(await atA, { x: 1 }, "A (the sender) should receive its own shout");
});

test("07 server push: push_me -> \"pushed\" {n:1} arrives before the ok reply", T, async (t) => {
  t.after(closeAll);
  const topic = uniqueTopic("echo", "pushme");
  const { socket, channel } = await joined("alice", topic);

  const raw = recordMessages(socket, (m) => m.topic === topic);
  const pushed = waitFor(channel, "pushed");
  const reply = await push(channel, "push_me", {});
  raw.stop();
  assert.equal(reply.status, "ok", `push_me reply ${show(reply)}`);
  assert.deepEqual(reply.response, {});
  assert.deepEqual(await pushed, { n: 1 }, "channel.on(\"pushed\") payload");

  const events = raw.messages.map((m) => m.event);
  const iPushed = events.indexOf("pushed");
  const iReply = events.indexOf("phx_reply");
  assert.ok(iPushed !== -1 && iReply !== -1, `messages seen: ${show(raw.messages)}`);
  assert.ok(iPushed < iReply, `"pushed" must arrive before the reply (server pushes, then replies); order: ${events}`);
  const msg = raw.messages[iPushed];
  assert.equal(msg.join_ref, channel.joinRef(), `a push carries the channel's join_ref: ${show(msg)}`);
  assert.equal(msg.ref, null, `a push has a null ref: ${show(msg)}`);
});

test("08 binary: bin replies with the same bytes, bin_shout broadcasts an ArrayBuffer", T, async (t) => {
  t.after(closeAll);
  const topic = uniqueTopic("echo", "bin");
  const a = await joined("alice", topic);
  const b = await joined("bob", topic);

  const reply = await push(a.channel, "bin", new Uint8Array([1, 2, 3, 255]).buffer);
  assert.equal(reply.status, "ok", `bin reply ${show(reply)}`);
  assert.ok(reply.response instanceof ArrayBuffer,
    `bin reply response should be an ArrayBuffer (binary reply frame), got ${show(reply.response)}`);
  assert.deepEqual(bytes(reply.response), [1, 2, 3, 255]);

  const data = [9, 8, 7, 0, 255, 128];
  const atA = waitFor(a.channel, "bin_shout");
  const atB = waitFor(b.channel, "bin_shout");
  const shout = await push(a.channel, "bin_shout", new Uint8Array(data).buffer);
  assert.equal(shout.status, "ok", `bin_shout reply ${show(shout)}`);
  assert.deepEqual(shout.response, {});
  for (const [who, p] of [["B", atB], ["A", atA]]) {
    const payload = await p;
    assert.ok(payload instanceof ArrayBuffer, `${who}: bin_shout payload should be an ArrayBuffer, got ${show(payload)}`);
    assert.deepEqual(bytes(payload), data, `${who}: bin_shout bytes`);
  }
});

test("09 heartbeat: socket.ping gets its reply, also two pings in a row", T, async (t) => {
  t.after(closeAll);
  const socket = await connect({ user: "alice" });
  const raw = recordMessages(socket, (m) => m.topic === "phoenix");

  const rtt = await ping(socket);
  assert.equal(typeof rtt, "number");
  assert.ok(rtt >= 0, `rtt ${rtt}`);

  const rtts = await Promise.all([ping(socket), ping(socket)]);
  for (const r of rtts) assert.equal(typeof r, "number");
  const again = await ping(socket);
  assert.equal(typeof again, "number");
  raw.stop();

  // docs/protocol.md §4.1: [null, <same ref>, "phoenix", "phx_reply", {"status":"ok","response":{}}]
  assert.equal(raw.messages.length, 4, `heartbeat replies: ${show(raw.messages)}`);
  for (const m of raw.messages) {
    assert.equal(m.event, "phx_reply", show(m));
    assert.equal(m.join_ref, null, `heartbeat reply join_ref must be null: ${show(m)}`);
    assert.equal(typeof m.ref, "string", `heartbeat reply ref must be the client's string ref: ${show(m)}`);
    assert.deepEqual(m.payload, { status: "ok", response: {} });
  }
  assert.equal(new Set(raw.messages.map((m) => m.ref)).size, 4, "each heartbeat answered once, with its own ref");
});

test("10 leave: ok reply, onClose fires, no more broadcasts for the left client", T, async (t) => {
  t.after(closeAll);
  const topic = uniqueTopic("echo", "leave");
  const a = await joined("alice", topic);
  const b = await joined("bob", topic);

  const joinRef = a.channel.joinRef();
  const closed = waitForChannelClose(a.channel);
  const serverClose = waitForMessage(a.socket, (m) => m.topic === topic && m.event === "phx_close",
    `phx_close on "${topic}" after the leave`);
  const left = await leave(a.channel); // the server's reply, matched by ref
  assert.equal(left.status, "ok", `leave reply ${show(left)}`);
  assert.deepEqual(left.response, {}, `leave reply ${show(left)}`);
  assert.equal(left.joinRef, joinRef, "the leave reply carries the channel's join_ref");
  await closed; // channel.onClose hooks ran (phoenix.js runs them locally at leave())
  // docs/protocol.md §5.4: after the reply, phx_close with join_ref = ref = the instance's join ref.
  const close = await serverClose;
  assert.equal(close.join_ref, joinRef, `phx_close ${show(close)}`);
  assert.equal(close.ref, joinRef, `phx_close ${show(close)}`);

  // phoenix.js removed the channel object, so look at the raw socket traffic instead.
  const atA = recordMessages(a.socket, (m) => m.topic === topic && m.event === "shout");
  const atB = waitFor(b.channel, "shout");
  const reply = await push(b.channel, "shout", { after: "leave" });
  assert.equal(reply.status, "ok", `shout reply ${show(reply)}`);
  assert.deepEqual(await atB, { after: "leave" }, "B still receives its own shout");
  // The server writes a broadcast to every member before it replies to the shout, and a
  // connection's frames leave in order: had A been sent the shout, it would have
  // arrived before the reply to a heartbeat A sends now.
  await ping(a.socket);
  atA.stop();
  assert.deepEqual(atA.messages, [], "the client that left must not receive the topic's broadcasts");
});

test("11 crash: phx_error, automatic rejoin, echo works again", T, async (t) => {
  t.after(closeAll);
  const topic = uniqueTopic("echo", "crash");
  const { socket, channel } = await joined("alice", topic);
  const firstJoinRef = channel.joinRef();

  const errored = waitForChannelError(channel, 3000);
  const rawError = waitForMessage(socket, (m) => m.topic === topic && m.event === "phx_error",
    `phx_error on "${topic}"`, 3000);
  const rejoined = waitForRejoin(channel, 4000); // phoenix.js rejoins after 1 s
  // The crashing handler never replies; the push just times out client-side.
  push(channel, "crash", {}, 2500).catch(() => {});

  await errored; // channel.onError fired
  const msg = await rawError;
  assert.equal(msg.join_ref, firstJoinRef, `phx_error carries the channel's join_ref: ${show(msg)}`);
  await rejoined;
  assert.notEqual(channel.joinRef(), firstJoinRef, "the rejoin uses a new join ref");

  const reply = await push(channel, "echo", { after: "crash" });
  assert.equal(reply.status, "ok", `echo after rejoin: ${show(reply)}`);
  assert.deepEqual(reply.response, { after: "crash" });
});

test("12 refused connect: no/empty user -> onError, never opens, nor on reconnects", T, async (t) => {
  t.after(closeAll);
  for (const params of [{}, { user: "" }]) {
    const socket = createSocket(params);
    let opens = 0;
    let errors = 0;
    socket.onOpen(() => { opens += 1; });
    socket.onError(() => { errors += 1; });
    const err = await waitForSocket(socket, "error", 2000);
    const detail = (err && (err.message || (err.error && err.error.message))) || "";
    assert.match(detail, /\b403\b/, `params ${show(params)}: handshake should be refused with HTTP 403 (error: ${show(detail)})`);
    // phoenix.js retries after 10 ms, 50 ms, ...: those attempts are refused as well.
    await waitUntil(() => `two reconnect attempts of ${show(params)} to be refused (errors so far: ${errors})`,
      () => errors >= 3);
    assert.equal(opens, 0, `params ${show(params)}: the socket must never open`);
    assert.equal(socket.isConnected(), false);
    await disconnect(socket); // stops phoenix.js's reconnect attempts
  }
});

test("13 two clients on a topic, one leaves: the other still gets a third client's shouts", T, async (t) => {
  t.after(closeAll);
  const topic = uniqueTopic("echo", "three");
  const a = await joined("alice", topic);
  const b = await joined("bob", topic);

  const left = await leave(a.channel);
  assert.equal(left.status, "ok", `leave reply ${show(left)}`);
  const c = await joined("carol", topic);

  const atA = recordMessages(a.socket, (m) => m.topic === topic && m.event === "shout");
  const atB = waitFor(b.channel, "shout");
  const atC = waitFor(c.channel, "shout");
  const reply = await push(c.channel, "shout", { from: "carol" });
  assert.equal(reply.status, "ok", `shout reply ${show(reply)}`);
  assert.deepEqual(await atB, { from: "carol" }, "B (still joined) receives C's shout");
  assert.deepEqual(await atC, { from: "carol" }, "C receives its own shout");
  await ping(a.socket); // anything sent to A before the shout's reply comes first
  atA.stop();
  assert.deepEqual(atA.messages, [], "A left and must not receive the shout");
});
