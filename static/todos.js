// The demo page's shared todo list: `store:todos` (docs/contract.md) through the
// fluxwire.js module, on the socket app.js opens (announced by a "fluxwire:socket"
// event). Every change anyone makes arrives as a patch and the list is drawn again.
// User text goes into the DOM through textContent only.

import { joinStore } from "/fluxwire.js";

const $ = (id) => document.getElementById(id);
const els = {
  form: $("todo-form"), text: $("todo-text"), add: $("todo-add"), error: $("todo-error"),
  list: $("todos"), clear: $("todo-clear"), version: $("todo-version"),
};

let store = null;
let unsubscribe = () => {};

function attach(socket) {
  if (store) {
    unsubscribe();
    store.leave();
    store = null;
  }
  render(null);
  if (!socket) return;
  const current = joinStore(socket, "todos", { snapshot: true });
  store = current;
  unsubscribe = current.subscribe((state) => { if (store === current) render(state); });
  current.ready
    .then(() => { if (store === current) render(current.getState()); })
    .catch((e) => { if (store === current) els.error.textContent = e.message; });
}

function render(state) {
  const ready = !!(store && state);
  els.add.disabled = !ready;
  els.clear.disabled = !ready || !state.todos.some((t) => t.done);
  els.version.textContent = ready ? `v${store.version}` : "";
  const items = (state ? state.todos : []).map((todo) => {
    const li = document.createElement("li");
    li.dataset.id = String(todo.id);
    li.className = todo.done ? "todo done" : "todo";
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = todo.done;
    box.setAttribute("aria-label", `done: ${todo.text}`);
    box.addEventListener("change", () => act("toggle", { id: todo.id }));
    const text = document.createElement("span");
    text.className = "todo-text";
    text.textContent = todo.text;
    const by = document.createElement("span");
    by.className = "todo-by";
    by.textContent = todo.by;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "link todo-remove";
    remove.textContent = "✕";
    remove.setAttribute("aria-label", `remove: ${todo.text}`);
    remove.addEventListener("click", () => act("remove", { id: todo.id }));
    li.append(box, text, by, remove);
    return li;
  });
  els.list.replaceChildren(...items);
}

function act(event, payload) {
  if (!store) return Promise.resolve();
  els.error.textContent = "";
  return store.dispatch(event, payload).catch((e) => { els.error.textContent = e.message; throw e; });
}

els.form.addEventListener("submit", (e) => {
  e.preventDefault();
  act("add", { text: els.text.value }).then(() => { els.text.value = ""; }, () => {});
});
els.clear.addEventListener("click", () => act("clear_done", {}).catch(() => {}));

window.addEventListener("fluxwire:socket", (e) => attach(e.detail));
if (window.fluxwireSocket) attach(window.fluxwireSocket);
