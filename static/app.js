// fluxwire demo page: the stock phoenix.js client (global `Phoenix`, loaded by
// index.html) talking to the fluxwire server. Topics and payloads follow
// docs/contract.md. All user text goes into the DOM through textContent.
"use strict";

(() => {
  const NAME_KEY = "fluxwire.name";
  const MAX_MESSAGES = 100; // the server keeps the last 100 in "all"; cap rooms alike
  const ROOM_NAME = /^[A-Za-z0-9_-]{1,64}$/;
  const CONTROL_CHARS = /[\u0000-\u001f\u007f-\u009f]/;

  const $ = (id) => document.getElementById(id);
  const els = {
    welcome: $("welcome"), nameForm: $("name-form"), name: $("name"), nameError: $("name-error"),
    app: $("app"), conn: $("conn-state"), me: $("me"), changeName: $("change-name"),
    hits: $("hits"), hit: $("hit"), userCount: $("user-count"), connections: $("connections"),
    users: $("users"), messages: $("messages"),
    msgForm: $("msg-form"), msg: $("msg"), send: $("send"), msgError: $("msg-error"),
    roomForm: $("room-form"), room: $("room"), roomError: $("room-error"),
    roomPanel: $("room-panel"), roomTitle: $("room-title"), roomLeave: $("room-leave"),
    roomUsers: $("room-users"), roomMessages: $("room-messages"),
    roomMsgForm: $("room-msg-form"), roomMsg: $("room-msg"), roomSend: $("room-send"),
    roomMsgError: $("room-msg-error"),
  };

  let socket = null; // the current Phoenix.Socket (replaced when the name changes)
  let lobby = null;  // the "all" channel
  let room = null;   // {name, channel, joined} for the one open room
  let me = "";
  let connState = "connecting";

  // ---- storage (localStorage can throw in private modes; the page still works) ----

  function loadName() {
    try { return localStorage.getItem(NAME_KEY) || ""; } catch { return ""; }
  }

  function saveName(name) {
    try {
      if (name) localStorage.setItem(NAME_KEY, name);
      else localStorage.removeItem(NAME_KEY);
    } catch { /* not persisted, that's all */ }
  }

  // Same rule as the server (docs/contract.md): 1-64 code points after trimming, no control chars.
  function nameProblem(name) {
    const length = [...name].length;
    if (length < 1) return "Please enter a name.";
    if (length > 64) return "Names are at most 64 characters.";
    if (CONTROL_CHARS.test(name)) return "Names cannot contain control characters.";
    return "";
  }

  // ---- formatting helpers ----

  function formatTime(ms) {
    const date = new Date(ms);
    if (Number.isNaN(date.getTime())) return "";
    const time = { hour: "2-digit", minute: "2-digit" };
    return date.toDateString() === new Date().toDateString()
      ? date.toLocaleTimeString([], time)
      : date.toLocaleString([], { month: "short", day: "numeric", ...time });
  }

  // A stable colour per name, so people are easy to tell apart in lists.
  function hue(name) {
    let h = 0;
    for (const ch of name) h = (h * 31 + ch.codePointAt(0)) % 360;
    return h;
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function avatar(name) {
    const node = el("span", "avatar", [...name][0].toUpperCase());
    node.style.setProperty("--hue", hue(name));
    node.setAttribute("aria-hidden", "true");
    return node;
  }

  // ---- rendering ----

  function setConnState(state) {
    connState = state;
    els.conn.textContent = state;
    els.conn.dataset.state = state;
    document.body.dataset.conn = state;
    updateControls();
  }

  function updateControls() {
    const online = connState === "connected";
    els.hit.disabled = !online;
    els.send.disabled = !online;
    els.roomSend.disabled = !(online && room && room.joined);
  }

  function messageItem(msg) {
    const li = el("li", msg.user === me ? "msg mine" : "msg");
    li.dataset.id = msg.id;
    li.dataset.at = msg.at;
    const meta = el("div", "msg-meta");
    meta.append(el("span", "msg-user", msg.user));
    const time = el("time", "msg-time", formatTime(msg.at));
    time.dateTime = new Date(msg.at).toISOString();
    meta.append(time);
    li.append(avatar(msg.user), meta, el("div", "msg-body", msg.body));
    return li;
  }

  // Keep a list scrolled to the newest message only if the reader was already there.
  function keepingScroll(list, change) {
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    change();
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  // Replace a list with an authoritative history (status_users, a room's join reply).
  // Skipped when nothing changed, so a hit doesn't rebuild the chat under a text selection.
  function renderMessages(list, msgs) {
    const key = (id, at) => `${id}@${at}`;
    const shown = Array.from(list.children, (li) => key(li.dataset.id, li.dataset.at)).join();
    if (shown === msgs.map((m) => key(m.id, m.at)).join()) return;
    keepingScroll(list, () => list.replaceChildren(...msgs.map(messageItem)));
  }

  // A live new_msg: the same message may also arrive inside status_users, hence the id check.
  function appendMessage(list, msg) {
    if (list.querySelector(`li[data-id="${CSS.escape(String(msg.id))}"]`)) return;
    keepingScroll(list, () => {
      list.append(messageItem(msg));
      while (list.children.length > MAX_MESSAGES) list.firstElementChild.remove();
    });
  }

  // One entry per name; metas are that user's connections (tabs).
  function renderPresence(list, presence) {
    const people = presence.list((name, { metas }) => ({
      name,
      tabs: metas.length,
      since: Math.min(...metas.map((m) => m.online_at).filter(Number.isFinite)),
    }));
    people.sort((a, b) => a.name.localeCompare(b.name));
    list.replaceChildren(...people.map(personItem));
  }

  function personItem({ name, tabs, since }) {
    const li = el("li", name === me ? "person self" : "person");
    li.dataset.user = name;
    const info = el("div", "person-info");
    const title = el("span", "person-name", name);
    if (name === me) title.append(el("span", "you", " (you)"));
    info.append(title);
    if (Number.isFinite(since)) info.append(el("span", "since", `online since ${formatTime(since)}`));
    const badge = el("span", "badge", String(tabs));
    badge.title = `${tabs} ${tabs === 1 ? "connection" : "connections"}`;
    li.append(avatar(name), info, badge);
    return li;
  }

  function setHits(hits) {
    if (els.hits.textContent === String(hits)) return;
    els.hits.textContent = String(hits);
    // Restart the small "bump" animation so hits from other tabs are noticeable.
    els.hits.classList.remove("bump");
    void els.hits.offsetWidth;
    els.hits.classList.add("bump");
  }

  function renderStatus({ user_count, connections, hits, msgs }) {
    setHits(hits);
    els.userCount.textContent = String(user_count);
    els.connections.textContent = String(connections);
    renderMessages(els.messages, msgs || []);
  }

  // ---- pushing ----

  // Send a chat message; keep the text on error so nothing typed is lost.
  function sendMessage(channel, input, errorEl) {
    const body = input.value;
    errorEl.textContent = "";
    channel.push("new_msg", { body })
      .receive("ok", () => { if (input.value === body) input.value = ""; })
      .receive("error", (resp) => { errorEl.textContent = (resp && resp.reason) || "error"; })
      .receive("timeout", () => { errorEl.textContent = "timed out, please retry"; });
  }

  // ---- connection ----

  // The todo list (todos.js, an ES module) shares this page's socket.
  function announceSocket(s) {
    window.fluxwireSocket = s;
    window.dispatchEvent(new CustomEvent("fluxwire:socket", { detail: s }));
  }

  function connect(name) {
    me = name;
    showApp(name);
    setConnState("connecting");

    const options = { params: { user: name } };
    // ?transport=longpoll forces phoenix.js's long-poll transport (handy for testing it).
    if (new URLSearchParams(location.search).get("transport") === "longpoll") {
      options.transport = Phoenix.LongPoll;
    }
    const s = new Phoenix.Socket("/socket", options);
    socket = s;
    announceSocket(s);
    let opened = false;
    // Callbacks of a socket dropped by a name change must not touch the page.
    const current = () => socket === s;
    s.onOpen(() => { if (current()) { opened = true; setConnState("connected"); } });
    // phoenix.js reconnects on its own; we only report it.
    const dropped = () => { if (current()) setConnState(opened ? "reconnecting" : "connecting"); };
    s.onError(dropped);
    s.onClose(dropped);
    s.connect();

    joinLobby(s);
  }

  function joinLobby(s) {
    lobby = s.channel("all", {});
    lobby.on("status_users", renderStatus);
    lobby.on("new_msg", (msg) => appendMessage(els.messages, msg));
    const presence = new Phoenix.Presence(lobby);
    presence.onSync(() => renderPresence(els.users, presence));
    // Join hooks fire again on every automatic rejoin, e.g. after a server restart.
    lobby.join()
      .receive("ok", ({ user }) => {
        if (user) { me = user; els.me.textContent = user; }
        els.msgError.textContent = "";
      })
      .receive("error", (resp) => { els.msgError.textContent = (resp && resp.reason) || "could not join"; });
  }

  function disconnect() {
    leaveRoom();
    const s = socket;
    socket = null; // first, so its close callback is ignored
    lobby = null;
    announceSocket(null);
    if (s) s.disconnect();
  }

  // ---- rooms ----

  function joinRoom(name) {
    els.roomError.textContent = "";
    if (!ROOM_NAME.test(name)) {
      els.roomError.textContent = "Room names are 1–64 letters, digits, _ or -.";
      return;
    }
    if (!socket || (room && room.name === name)) return;
    leaveRoom(); // one room at a time

    const channel = socket.channel(`room:${name}`, {});
    const current = { name, channel, joined: false };
    room = current;
    const mine = () => room === current;

    els.roomTitle.textContent = `#${name}`;
    els.roomMessages.replaceChildren();
    els.roomUsers.replaceChildren();
    els.roomMsgError.textContent = "";
    els.roomPanel.hidden = false;

    channel.on("new_msg", (msg) => { if (mine()) appendMessage(els.roomMessages, msg); });
    const presence = new Phoenix.Presence(channel);
    presence.onSync(() => { if (mine()) renderPresence(els.roomUsers, presence); });
    channel.onError(() => { current.joined = false; if (mine()) updateControls(); });
    channel.join()
      .receive("ok", ({ messages }) => {
        if (!mine()) return;
        current.joined = true;
        renderMessages(els.roomMessages, messages || []);
        updateControls();
      })
      .receive("error", (resp) => {
        if (!mine()) return;
        // phoenix.js would retry a refused join forever; leaving stops that.
        leaveRoom();
        els.roomError.textContent = (resp && resp.reason) || "could not join";
      });
    updateControls();
  }

  function leaveRoom() {
    if (!room) return;
    room.channel.leave();
    room = null;
    els.roomPanel.hidden = true;
    els.roomMessages.replaceChildren();
    els.roomUsers.replaceChildren();
    updateControls();
  }

  // ---- screens ----

  function showWelcome(prefill) {
    els.app.hidden = true;
    els.me.hidden = true;
    els.changeName.hidden = true;
    els.conn.hidden = true;
    els.welcome.hidden = false;
    els.name.value = prefill || "";
    els.name.focus();
  }

  function showApp(name) {
    els.welcome.hidden = true;
    els.nameError.textContent = "";
    els.me.textContent = name;
    els.me.hidden = false;
    els.changeName.hidden = false;
    els.conn.hidden = false;
    els.app.hidden = false;
    // Fresh lists: the new connection's state will fill them.
    for (const list of [els.users, els.messages]) list.replaceChildren();
    els.hits.textContent = "0";
    els.userCount.textContent = "0";
    els.connections.textContent = "0";
    els.msgError.textContent = "";
    els.roomError.textContent = "";
  }

  // ---- wiring ----

  els.nameForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const name = els.name.value.trim();
    const problem = nameProblem(name);
    els.nameError.textContent = problem;
    if (problem) return;
    saveName(name);
    connect(name);
  });

  els.changeName.addEventListener("click", () => {
    const previous = me;
    disconnect();
    saveName("");
    showWelcome(previous);
  });

  els.hit.addEventListener("click", () => {
    if (!lobby) return;
    lobby.push("hit", {}).receive("ok", ({ hits }) => {
      // A newer status_users may already be shown; never step the counter back.
      if (Number(hits) > Number(els.hits.textContent)) setHits(hits);
    });
  });

  els.msgForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (lobby && connState === "connected") sendMessage(lobby, els.msg, els.msgError);
  });

  els.roomForm.addEventListener("submit", (event) => {
    event.preventDefault();
    joinRoom(els.room.value.trim());
  });

  els.roomLeave.addEventListener("click", leaveRoom);

  els.roomMsgForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (room && room.joined && connState === "connected") {
      sendMessage(room.channel, els.roomMsg, els.roomMsgError);
    }
  });

  // Typing again clears a stale error.
  els.msg.addEventListener("input", () => { els.msgError.textContent = ""; });
  els.roomMsg.addEventListener("input", () => { els.roomMsgError.textContent = ""; });
  els.room.addEventListener("input", () => { els.roomError.textContent = ""; });

  // A remembered name reconnects straight away.
  const saved = loadName().trim();
  if (saved && !nameProblem(saved)) connect(saved);
  else showWelcome("");
})();
