// fluxwire.js: fluxwire stores in the browser (or Node), on a phoenix.js Socket, plus a
// Redux binding. An ES module with no dependency: the caller passes its phoenix.js Socket
// (and, for presence, phoenix.js's Presence class). The wire is docs/contract.md,
// "Stores over the wire".
//
//   import { joinStore } from "/fluxwire.js";
//   const todos = joinStore(socket, "todos", { snapshot: true });
//   await todos.ready;
//   todos.subscribe((state) => render(state));
//   await todos.dispatch("add", { text: "milk" });   // resolves {version}, rejects Error(reason)
//
// A store keeps {epoch, version, state}: it joins with a params closure that sends the
// pair it holds (so every rejoin of phoenix.js asks only for what it missed), applies
// each `patch` whose `from` is its version, ignores one it already has, and on a gap
// stashes later patches, sends one `sync`, applies the reply and replays the stash.
//
// Redux: createFluxwireMiddleware(socket, {stores, channels}) pushes actions whose
// meta.phx names a topic, dispatches `${type}/ok|error|timeout` with the reply, and every
// server event of its topics as `${topic}/${event}`; storeReducer(topic) applies the
// patches immutably (only the objects along a changed path are copied), and
// presenceReducer(topic, Presence) follows presence_state / presence_diff.

// ---------------------------------------------------------------------------------------
// RFC 6902 applied immutably

function parsePointer(path) {
  if (path === "") return [];
  if (path[0] !== "/") throw new Error(`invalid JSON pointer ${JSON.stringify(path)}`);
  return path.slice(1).split("/").map((t) => t.replace(/~1/g, "/").replace(/~0/g, "~"));
}

function arrayIndex(token, length, adding) {
  if (adding && token === "-") return length;
  if (!/^(0|[1-9][0-9]*)$/.test(token)) throw new Error(`invalid array index ${JSON.stringify(token)}`);
  const i = Number(token);
  if (i > length || (!adding && i === length)) throw new Error(`array index ${i} out of range`);
  return i;
}

function deepEqual(a, b) {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  return ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && deepEqual(a[k], b[k]));
}

/**
 * Applies RFC 6902 operations to `doc` without changing it: returns a new document in
 * which only the objects and arrays along the changed paths are new (copied once per
 * call), everything else shared with `doc`. Throws on an operation that does not apply.
 */
export function applyPatch(doc, ops) {
  const fresh = new Set();
  const own = (value) => {
    if (value === null || typeof value !== "object" || fresh.has(value)) return value;
    const copy = Array.isArray(value) ? value.slice() : { ...value };
    fresh.add(copy);
    return copy;
  };
  const get = (root, tokens) => {
    let at = root;
    for (const t of tokens) {
      if (at === null || typeof at !== "object") return undefined;
      at = Array.isArray(at) ? at[arrayIndex(t, at.length, false)] : Object.prototype.hasOwnProperty.call(at, t) ? at[t] : undefined;
    }
    return at;
  };
  let root = doc;
  const step = (op, tokens, value) => {
    if (tokens.length === 0) {
      if (op === "remove") throw new Error("the root cannot be removed");
      root = value;
      return;
    }
    root = own(root);
    let parent = root;
    for (const t of tokens.slice(0, -1)) {
      if (parent === null || typeof parent !== "object") throw new Error(`no container at ${t}`);
      const key = Array.isArray(parent) ? arrayIndex(t, parent.length, false) : t;
      if (!Array.isArray(parent) && !Object.prototype.hasOwnProperty.call(parent, key)) {
        throw new Error(`nothing at ${JSON.stringify(t)}`);
      }
      parent[key] = own(parent[key]);
      parent = parent[key];
    }
    if (parent === null || typeof parent !== "object") throw new Error("not a container");
    const last = tokens[tokens.length - 1];
    if (Array.isArray(parent)) {
      const i = arrayIndex(last, parent.length, op === "add");
      if (op === "add") parent.splice(i, 0, value);
      else if (op === "remove") parent.splice(i, 1);
      else parent[i] = value;
    } else if (op === "remove" || op === "replace") {
      if (!Object.prototype.hasOwnProperty.call(parent, last)) throw new Error(`nothing at ${JSON.stringify(last)}`);
      if (op === "remove") delete parent[last];
      else parent[last] = value;
    } else {
      parent[last] = value;
    }
  };
  for (const { op, path, from, value } of ops) {
    const tokens = parsePointer(path);
    switch (op) {
      case "add":
      case "replace":
        step(op, tokens, value);
        break;
      case "remove":
        step(op, tokens);
        break;
      case "copy":
      case "move": {
        const source = parsePointer(from);
        const moved = get(root, source);
        if (moved === undefined) throw new Error(`nothing at ${from}`);
        if (op === "move") step("remove", source);
        step("add", tokens, moved);
        break;
      }
      case "test":
        if (!deepEqual(get(root, tokens), value)) throw new Error(`test failed at ${path}`);
        break;
      default:
        throw new Error(`unknown operation ${JSON.stringify(op)}`);
    }
  }
  return root;
}

// ---------------------------------------------------------------------------------------
// A store over a phoenix.js channel

const EMPTY = Object.freeze({ epoch: null, version: null, state: null });

/**
 * Joins `store:NAME` on `socket` and keeps the store's state. Options:
 * - `snapshot`: GET /stores/NAME first (with If-None-Match after the first time), so
 *   that the join usually answers a few operations instead of the whole state;
 * - `baseUrl`: where to GET from (default: the page's origin);
 * - `fetch`: a fetch function (default: the global one);
 * - `timeout`: push timeout in ms for actions and syncs (default phoenix.js's).
 */
export function joinStore(socket, name, options = {}) {
  return new FluxStore(socket, name, options);
}

export class FluxStore {
  constructor(socket, name, options = {}) {
    this.socket = socket;
    this.name = name;
    this.topic = `store:${name}`;
    this.options = options;
    this.held = EMPTY;
    this.listeners = new Set();
    this.stash = [];
    this.syncing = false;
    this.etag = null;
    this.error = null;
    this.channel = socket.channel(this.topic, () =>
      this.held.epoch === null ? {} : { epoch: this.held.epoch, version: this.held.version });
    this.channel.on("patch", (patch) => this.handlePatch(patch));
    this.channel.on("state", (snapshot) => this.replace(snapshot, "state"));
    // Every ok join reply: the first one and each rejoin's.
    this.channel.joinPush.receive("ok", (reply) => this.applyReply(reply, "join"));
    this.ready = new Promise((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.start();
  }

  async start() {
    if (this.options.snapshot) {
      try {
        await this.fetchSnapshot();
      } catch (e) {
        // The socket will do: the join answers the whole state.
        this.error = e;
      }
    }
    this.channel.join(this.options.timeout)
      .receive("error", (response) => this.rejectReady(new Error(response?.reason || "join refused")))
      .receive("timeout", () => this.rejectReady(new Error("join timed out")));
  }

  /** GET /stores/NAME with the socket's connect parameters; a 304 keeps what is held. */
  async fetchSnapshot() {
    const fetchFn = this.options.fetch || globalThis.fetch;
    const base = (this.options.baseUrl ?? (globalThis.location ? globalThis.location.origin : "")).replace(/\/+$/, "");
    const params = typeof this.socket.params === "function" ? this.socket.params() : {};
    const query = new URLSearchParams(params).toString();
    const headers = this.etag ? { "if-none-match": this.etag } : {};
    const res = await fetchFn(`${base}/stores/${encodeURIComponent(this.name)}${query ? `?${query}` : ""}`, { headers });
    if (res.status === 304) return false;
    if (!res.ok) throw new Error(`GET /stores/${this.name}: ${res.status}`);
    const snapshot = await res.json();
    this.etag = res.headers.get("etag");
    this.replace(snapshot, "snapshot");
    return true;
  }

  /** The state held now (null before the first reply or snapshot). */
  getState() {
    return this.held.state;
  }

  get epoch() {
    return this.held.epoch;
  }

  get version() {
    return this.held.version;
  }

  /** Calls `fn(state, change)` after each change; returns a function that unsubscribes. */
  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /**
   * Sends the action `event` with `payload`; resolves with the reply (`{version}`) or
   * rejects with an Error whose message is the server's reason ("timeout" if none came).
   */
  dispatch(event, payload = {}) {
    return new Promise((resolve, reject) => {
      this.channel.push(event, payload, this.options.timeout)
        .receive("ok", resolve)
        .receive("error", (response) => {
          const error = new Error(response?.reason || "error");
          error.response = response;
          reject(error);
        })
        .receive("timeout", () => reject(new Error("timeout")));
    });
  }

  /** Resolves once the held version is at least `version` (e.g. an action's reply). */
  until(version) {
    if (this.held.version !== null && this.held.version >= version) return Promise.resolve(this.held.state);
    return new Promise((resolve) => {
      const off = this.subscribe(() => {
        if (this.held.version >= version) {
          off();
          resolve(this.held.state);
        }
      });
    });
  }

  leave() {
    this.listeners.clear();
    return this.channel.leave();
  }

  emit(change) {
    for (const fn of [...this.listeners]) fn(this.held.state, change);
  }

  replace({ epoch, version, state }, cause) {
    this.held = { epoch, version, state };
    this.emit({ kind: "state", cause, epoch, version, state });
  }

  applyOps(from, to, ops, cause) {
    const state = applyPatch(this.held.state, ops);
    this.held = { epoch: this.held.epoch, version: to, state };
    this.emit({ kind: "patch", cause, from, to, ops });
  }

  /** A join or sync reply: the state, or the operations from the version held. */
  applyReply(reply, cause) {
    if (reply && "state" in reply) {
      this.replace(reply, cause);
    } else if (reply && Array.isArray(reply.ops) && reply.epoch === this.held.epoch) {
      if (reply.ops.length > 0 || reply.version !== this.held.version) {
        this.applyOps(this.held.version, reply.version, reply.ops, cause);
      }
    }
    this.resolveReady();
    this.replay();
  }

  handlePatch(patch) {
    if (this.held.version === null || patch.to <= this.held.version) return;
    if (patch.from === this.held.version && !this.syncing) {
      this.applyOps(patch.from, patch.to, patch.ops, "patch");
      return;
    }
    // A gap: keep this patch for later, and ask once for what is missing.
    this.stash.push(patch);
    if (!this.syncing) this.sync();
  }

  sync() {
    this.syncing = true;
    this.channel.push("sync", { epoch: this.held.epoch, version: this.held.version }, this.options.timeout)
      .receive("ok", (reply) => {
        this.syncing = false;
        this.applyReply(reply, "sync");
      })
      .receive("error", () => { this.syncing = false; })
      .receive("timeout", () => { this.syncing = false; });
  }

  /** Applies the stashed patches that now follow, drops those already held. */
  replay() {
    const stash = this.stash.sort((a, b) => a.from - b.from);
    this.stash = [];
    for (const patch of stash) this.handlePatch(patch);
  }
}

// ---------------------------------------------------------------------------------------
// Redux

/** Lifecycle action types. */
export const JOINED = "@@phx/JOINED";
export const JOIN_ERROR = "@@phx/JOIN_ERROR";
export const CHANNEL_ERROR = "@@phx/CHANNEL_ERROR";

/**
 * Redux middleware over a phoenix.js `socket`.
 *
 * - `stores`: `{NAME: options}` joined as fluxwire stores (see joinStore); each change is
 *   dispatched as `store:NAME/patch` `{from, to, ops}` or `store:NAME/@@state`
 *   `{epoch, version, state}`, which storeReducer("store:NAME") applies.
 * - `channels`: `{TOPIC: params}` other topics to join.
 * - Every server event on these topics (presence too) is dispatched as `TOPIC/EVENT`
 *   with the payload, `meta.phx = {topic, event, server: true}`.
 * - An action with `meta.phx = {topic, event?, local?, timeout?}` is pushed on that topic as
 *   `event` (default: the action's type) with `action.payload`; it still reaches the
 *   reducers unless `local === false`. The middleware returns a Promise of the reply and
 *   dispatches `TYPE/ok` (payload: the response), `TYPE/error` (error: true) or
 *   `TYPE/timeout`.
 *
 * The returned middleware also has `.stores` (the FluxStore of each store topic) and
 * `.channels` (every phoenix.js channel by topic).
 */
export function createFluxwireMiddleware(socket, { stores = {}, channels = {} } = {}) {
  const byTopic = {};
  const fluxStores = {};
  let dispatch = null;
  const queue = [];
  const send = (action) => (dispatch ? dispatch(action) : queue.push(action));

  const forward = (channel) => {
    const topic = channel.topic;
    const previous = channel.onMessage.bind(channel);
    channel.onMessage = (event, payload, ref, joinRef) => {
      // Replies reach onMessage as phx_reply and again as chan_reply_REF; a store's
      // patch and state go out as the store's own changes (below), in order.
      const internal = event.startsWith("phx_") || event.startsWith("chan_reply_");
      const storeChange = topic.startsWith("store:") && (event === "patch" || event === "state");
      if (!internal && !storeChange) {
        send({ type: `${topic}/${event}`, payload, meta: { phx: { topic, event, server: true } } });
      }
      return previous(event, payload, ref, joinRef);
    };
    channel.onError((reason) => send({ type: CHANNEL_ERROR, payload: { topic, reason } }));
  };

  for (const [name, options] of Object.entries(stores)) {
    const store = joinStore(socket, name, options);
    const topic = store.topic;
    fluxStores[topic] = store;
    byTopic[topic] = store.channel;
    forward(store.channel);
    store.subscribe((_state, change) => {
      const meta = { phx: { topic, cause: change.cause, server: true } };
      if (change.kind === "patch") {
        send({ type: `${topic}/patch`, payload: { from: change.from, to: change.to, ops: change.ops }, meta });
      } else {
        send({ type: `${topic}/@@state`, payload: { epoch: change.epoch, version: change.version, state: change.state }, meta });
      }
    });
    store.channel.joinPush.receive("ok", (response) => send({ type: JOINED, payload: { topic, response } }));
    store.channel.joinPush.receive("error", (response) => send({ type: JOIN_ERROR, payload: { topic, response }, error: true }));
  }
  for (const [topic, params] of Object.entries(channels)) {
    const channel = socket.channel(topic, params);
    byTopic[topic] = channel;
    forward(channel);
    channel.join()
      .receive("ok", (response) => send({ type: JOINED, payload: { topic, response } }))
      .receive("error", (response) => send({ type: JOIN_ERROR, payload: { topic, response }, error: true }));
  }

  const middleware = (api) => {
    dispatch = api.dispatch;
    for (const action of queue.splice(0)) dispatch(action);
    return (next) => (action) => {
      const phx = action && action.meta && action.meta.phx;
      // What this middleware dispatches itself (server events, replies) is marked server.
      if (!phx || !phx.topic || phx.server) return next(action);
      const channel = byTopic[phx.topic];
      if (!channel) throw new Error(`fluxwire: no channel for ${phx.topic}; list it in stores or channels`);
      if (phx.local !== false) next(action);
      return new Promise((resolve) => {
        const push = channel.push(phx.event || action.type, action.payload ?? {}, phx.timeout);
        const reply = (suffix, payload, error) => {
          const replyAction = {
            type: `${action.type}/${suffix}`,
            payload,
            meta: { phx: { topic: phx.topic, ref: push.ref, server: true } },
          };
          if (error) replyAction.error = true;
          dispatch(replyAction);
          resolve(replyAction);
        };
        push.receive("ok", (response) => reply("ok", response, false))
          .receive("error", (response) => reply("error", response, true))
          .receive("timeout", () => reply("timeout", undefined, true));
      });
    };
  };
  middleware.stores = fluxStores;
  middleware.channels = byTopic;
  return middleware;
}

/** Wraps an action creator so that its actions are pushed on `topic` (Artsy's emitAction). */
export function emitAction(creator, topic, event) {
  return (...args) => {
    const action = creator(...args);
    return { ...action, meta: { ...(action.meta || {}), phx: { topic, ...(event ? { event } : {}) } } };
  };
}

/**
 * A reducer of `{epoch, version, state}` for the store topic `topic` ("store:NAME"): a
 * `@@state` replaces it, a `patch` that follows its version is applied immutably.
 */
export function storeReducer(topic) {
  return (held = EMPTY, action) => {
    if (action.type === `${topic}/@@state`) {
      const { epoch, version, state } = action.payload;
      return { epoch, version, state };
    }
    if (action.type === `${topic}/patch`) {
      const { from, to, ops } = action.payload;
      if (from !== held.version) return held;
      return { epoch: held.epoch, version: to, state: applyPatch(held.state, ops) };
    }
    return held;
  };
}

/**
 * A reducer of the presence of `topic` in phoenix.js's format, on `Presence.syncState`
 * and `Presence.syncDiff` (pass phoenix.js's Presence class).
 */
export function presenceReducer(topic, Presence) {
  return (state = {}, action) => {
    if (action.type === `${topic}/presence_state`) {
      return Presence.syncState(state, action.payload);
    }
    if (action.type === `${topic}/presence_diff`) {
      // syncDiff changes the state it is given: give it a copy.
      return Presence.syncDiff(Presence.clone(state), action.payload);
    }
    return state;
  };
}
