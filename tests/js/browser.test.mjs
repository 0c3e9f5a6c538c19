// The demo page (static/index.html + app.js) in a real browser: Playwright (playwright-core)
// driving Debian's Chromium, two browser contexts as two users against the real app.
//
//   cd tests/js && FLUXWIRE_HTTP=http://127.0.0.1:4000 node --test browser.test.mjs
//
// Needs /usr/bin/chromium (Debian package `chromium`). Without it the test is skipped
// with a loud message, or fails when the CI environment variable is set.

import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { randomBytes } from "node:crypto";

import { chromium } from "playwright-core";

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-quic",
];
const WAIT_MS = 10_000;

function httpBase() {
  const url = process.env.FLUXWIRE_HTTP;
  if (!url) throw new Error("FLUXWIRE_HTTP is not set (expected e.g. http://127.0.0.1:4123)");
  return url.replace(/\/+$/, "");
}

/** Runs a Playwright wait; on failure, rethrows naming what was waited for, on which page. */
async function waiting(what, page, fn) {
  try {
    return await fn();
  } catch (e) {
    let state = "";
    try {
      state = await page.evaluate(() => JSON.stringify({
        conn: document.getElementById("conn-state")?.textContent,
        users: [...document.querySelectorAll("#users li")].map((li) => li.dataset.user),
        hits: document.getElementById("hits")?.textContent,
        messages: [...document.querySelectorAll("#messages .msg-body")].map((n) => n.textContent).slice(-5),
        roomMessages: [...document.querySelectorAll("#room-messages .msg-body")].map((n) => n.textContent).slice(-5),
        errors: ["name-error", "msg-error", "room-error", "room-msg-error"]
          .map((id) => document.getElementById(id)?.textContent).filter(Boolean),
      }));
    } catch { /* page gone */ }
    throw new Error(`timed out or failed waiting for ${what}; page state: ${state}\n${e.message}`);
  }
}

/** Waits until fn(arg) is truthy in the page. */
function until(page, what, fn, arg) {
  return waiting(what, page, () => page.waitForFunction(fn, arg, { timeout: WAIT_MS, polling: 50 }));
}

const listHas = ([selector, text]) =>
  [...document.querySelectorAll(selector)].some((n) => n.textContent === text);

/** A fresh browser context (own storage) as `user`: opens the page, types the name, joins. */
async function openAs(browser, user, problems) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on("pageerror", (e) => problems.push(`${user}: page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`${user}: console error: ${m.text()}`);
  });
  const response = await page.goto(`${httpBase()}/`, { timeout: WAIT_MS });
  assert.equal(response.status(), 200, "GET / serves the demo page");
  await waiting("the name form (#name)", page, () => page.locator("#name").waitFor({ state: "visible", timeout: WAIT_MS }));
  await page.fill("#name", user);
  await page.click("#join");
  await until(page, `#conn-state "connected" for ${user}`,
    () => document.getElementById("conn-state").textContent === "connected");
  await waiting("#app visible", page, () => page.locator("#app").waitFor({ state: "visible", timeout: WAIT_MS }));
  return { context, page, user };
}

test("demo page: two users in Chromium see each other, hits, chat and a room live", { timeout: 60_000 }, async (t) => {
  if (!existsSync(CHROMIUM)) {
    const msg = `!!! ${CHROMIUM} not found: chromium not found, install Debian package chromium (apt-get install -y chromium) to run the browser test !!!`;
    if (process.env.CI) assert.fail(`CI is set and ${msg}`);
    console.error(msg);
    t.skip(msg);
    return;
  }
  // chromium.launch always uses a fresh temporary user-data-dir (removed on close).
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 30_000,
  });
  t.after(() => browser.close());

  // The HTTP side the page relies on.
  const health = await fetch(`${httpBase()}/health`, { signal: AbortSignal.timeout(WAIT_MS) });
  assert.equal(health.status, 200, "GET /health");
  assert.deepEqual(await health.json(), { status: "ok" }, "GET /health body");

  const id = randomBytes(3).toString("hex");
  const aliceName = `alice-${id}`;
  const bobName = `bob-${id}`;
  const problems = [];
  const alice = await openAs(browser, aliceName, problems);
  const bob = await openAs(browser, bobName, problems);

  // Each sees both users in #users (presence), once each.
  for (const { page, user } of [alice, bob]) {
    for (const name of [aliceName, bobName]) {
      await waiting(`#users li[data-user=${name}] at ${user}`, page,
        () => page.locator(`#users li[data-user="${name}"]`).waitFor({ state: "visible", timeout: WAIT_MS }));
    }
    assert.equal(await page.locator(`#users li[data-user="${user}"]`).count(), 1, `${user} listed once`);
    assert.equal(await page.locator("#conn-state").textContent(), "connected");
    assert.equal(await page.locator("#me").textContent(), user, "#me shows the name");
  }
  await until(alice.page, "#user-count 2 or more at alice", () => Number(document.getElementById("user-count").textContent) >= 2);

  // A hit in alice's page shows in bob's #hits.
  const before = Number(await alice.page.locator("#hits").textContent());
  await alice.page.click("#hit");
  const hitsHandle = await until(alice.page, `alice's #hits to go above ${before}`,
    (n) => Number(document.getElementById("hits").textContent) > n && document.getElementById("hits").textContent, before);
  const hits = await hitsHandle.jsonValue();
  await until(bob.page, `bob's #hits to show ${hits}`, (h) => document.getElementById("hits").textContent === h, hits);

  // A chat message typed by bob appears in both #messages.
  const chat = `hello from bob ${id} <b>not bold</b>`;
  await bob.page.fill("#msg", chat);
  await bob.page.click("#send");
  for (const { page, user } of [alice, bob]) {
    await until(page, `chat message in #messages at ${user}`, listHas, ["#messages li .msg-body", chat]);
  }
  await until(bob.page, "#msg cleared after the ok reply", () => document.getElementById("msg").value === "");
  assert.equal(await alice.page.locator("#messages b").count(), 0, "message text is not interpreted as HTML");
  assert.equal(
    await alice.page.locator("#messages li").filter({ hasText: chat }).locator(".msg-user").textContent(),
    bobName, "the message shows its author");

  // A room joined by both: a room message appears in both #room-messages.
  const room = `lobby-${id}`;
  for (const { page, user } of [alice, bob]) {
    await page.fill("#room", room);
    await page.click("#room-join");
    await until(page, `room joined at ${user} (#room-send enabled)`,
      () => !document.getElementById("room-panel").hidden && !document.getElementById("room-send").disabled);
    assert.equal(await page.locator("#room-title").textContent(), `#${room}`);
  }
  for (const { page, user } of [alice, bob]) {
    for (const name of [aliceName, bobName]) {
      await waiting(`#room-users li[data-user=${name}] at ${user}`, page,
        () => page.locator(`#room-users li[data-user="${name}"]`).waitFor({ state: "visible", timeout: WAIT_MS }));
    }
  }
  const roomMsg = `room message from alice ${id}`;
  await alice.page.fill("#room-msg", roomMsg);
  await alice.page.click("#room-send");
  for (const { page, user } of [alice, bob]) {
    await until(page, `room message in #room-messages at ${user}`, listHas, ["#room-messages li .msg-body", roomMsg]);
  }
  // Room messages stay out of the "all" chat.
  assert.equal(await bob.page.locator("#messages li").filter({ hasText: roomMsg }).count(), 0,
    "a room message must not show in #messages");

  // Bob closes his tab: alice's #users drops him (no ghost).
  await bob.context.close();
  await waiting(`bob to leave alice's #users`, alice.page,
    () => alice.page.locator(`#users li[data-user="${bobName}"]`).waitFor({ state: "detached", timeout: WAIT_MS }));
  await waiting(`bob to leave alice's #room-users`, alice.page,
    () => alice.page.locator(`#room-users li[data-user="${bobName}"]`).waitFor({ state: "detached", timeout: WAIT_MS }));

  assert.deepEqual(problems, [], "no page errors or console errors");
});

test("demo page: the shared todo list, live between two users through fluxwire.js", { timeout: 60_000 }, async (t) => {
  if (!existsSync(CHROMIUM)) {
    const msg = `!!! ${CHROMIUM} not found: the todo list browser test is SKIPPED !!!`;
    if (process.env.CI) assert.fail(`CI is set and ${msg}`);
    console.error(msg);
    t.skip(msg);
    return;
  }
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30_000 });
  t.after(() => browser.close());
  const id = randomBytes(3).toString("hex");
  const problems = [];
  const carol = await openAs(browser, `carol-${id}`, problems);
  const dan = await openAs(browser, `dan-${id}`, problems);
  for (const { page, user } of [carol, dan]) {
    await until(page, `the todo list ready at ${user} (#todo-add enabled)`, () => !document.getElementById("todo-add").disabled);
  }
  const todo = (text) => `#todos li:has(.todo-text:text-is("${text}"))`;
  const text = `buy milk ${id} <i>not italic</i>`;

  // Carol adds a todo: it shows in both lists, with its author.
  await carol.page.fill("#todo-text", text);
  await carol.page.click("#todo-add");
  for (const { page, user } of [carol, dan]) {
    await until(page, `the new todo at ${user}`, listHas, ["#todos .todo-text", text]);
  }
  await until(carol.page, "#todo-text cleared after the ok reply", () => document.getElementById("todo-text").value === "");
  assert.equal(await dan.page.locator(todo(text)).locator(".todo-by").textContent(), carol.user);
  assert.equal(await dan.page.locator("#todos i").count(), 0, "todo text is not interpreted as HTML");

  // Dan ticks it: Carol sees it done.
  await dan.page.locator(todo(text)).locator("input[type=checkbox]").check();
  await waiting("carol to see the todo done", carol.page,
    () => carol.page.locator(`${todo(text)}.done`).waitFor({ state: "visible", timeout: WAIT_MS }));
  assert.equal(await carol.page.locator(todo(text)).locator("input[type=checkbox]").isChecked(), true);

  // An invalid todo: the server's reason shows, nothing is added.
  await dan.page.fill("#todo-text", "   ");
  await dan.page.click("#todo-add");
  await until(dan.page, "#todo-error invalid text", () => document.getElementById("todo-error").textContent === "invalid text");

  // Both pages show the same version once settled, and Carol removes the todo.
  const version = async (page) => page.locator("#todo-version").textContent();
  await until(carol.page, "the same version on both pages", (v) => document.getElementById("todo-version").textContent === v, await version(dan.page));
  await carol.page.locator(todo(text)).locator(".todo-remove").click();
  for (const { page, user } of [carol, dan]) {
    await waiting(`the todo removed at ${user}`, page, () => page.locator(todo(text)).waitFor({ state: "detached", timeout: WAIT_MS }));
  }
  assert.deepEqual(problems, [], "no page errors or console errors");
});
