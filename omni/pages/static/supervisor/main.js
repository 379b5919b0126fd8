// The supervisor's live view (/supervisor): a supervisor (or administrator) signs in, and the
// server pushes a `board` on /ws/supervisor whenever what it shows changes (docs/protocol.md
// §10). The page ticks the longest waits itself between boards, draws the service level per
// 15 minutes, and lists the waiting and active conversations (read from the admin API when a
// board says something changed) with `assign` and `transfer` for each.

import { fill, h } from "../webchat/dom.js";
import { language } from "../console/i18n.js";
import { SigninScreen, loadSession, saveSession, signIn, signOut } from "../console/signin.js";
import { strings } from "./i18n.js";

const root = document.getElementById("supervisor");
const wsUrl = document.body.dataset.ws;
const KEY = "omni.supervisor.session";
const lang = language(navigator.languages);
const t = strings(lang);
document.documentElement.lang = lang;
document.title = t.title;

const BACKOFF_FIRST = 500;
const BACKOFF_MAX = 30_000;

let session = loadSession(KEY);
let socket = null;
let attempt = 0;
let timer = null;
let board = null;
let skew = 0; // the server's clock minus this page's, from each board's `at`
let listing = []; // the waiting and active conversations (summaries)
let screen = null;
let parts = null;
let signin = null;

function showSignin(error = null, busy = false) {
  if (screen !== "signin") {
    screen = "signin";
    signin = new SigninScreen(root, t, t.title, async (username, password) => {
      showSignin(null, true);
      const result = await signIn(username, password, ["supervisor", "admin"]);
      if (result.error) return showSignin(result.error);
      session = result.session;
      saveSession(KEY, session);
      connect();
    });
  }
  signin.update(error, busy);
}

function stop(error) {
  if (timer) clearTimeout(timer);
  timer = null;
  const ws = socket;
  socket = null;
  if (ws) ws.close(1000);
  session = null;
  saveSession(KEY, null);
  showSignin(error);
}

function connect() {
  if (screen !== "board") build();
  const ws = new WebSocket(`${wsUrl}/ws/supervisor`);
  socket = ws;
  setBanner(t.connecting);
  ws.onopen = () => ws.send(JSON.stringify({ type: "login", token: session.token }));
  ws.onmessage = (event) => {
    if (ws !== socket) return;
    const frame = JSON.parse(event.data);
    if (frame.type === "welcome") {
      attempt = 0;
      setBanner(null);
      fill(parts.who, frame.supervisor.name);
    } else if (frame.type === "board") {
      board = frame;
      skew = new Date(frame.at).getTime() - Date.now();
      drawBoard();
      refreshListing();
    } else if (frame.type === "done") {
      fill(parts.status, frame.action === "assign" ? t.done_assign : t.done_transfer);
    } else if (frame.type === "error") {
      if (["invalid_login", "session_ended"].includes(frame.code)) return stop({ code: "session_over" });
      fill(parts.status, frame.message);
    }
  };
  ws.onclose = () => {
    if (ws !== socket) return;
    socket = null;
    setBanner(t.offline);
    const ceiling = Math.min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** attempt);
    attempt += 1;
    timer = setTimeout(connect, Math.random() * ceiling);
  };
}

function send(frame) {
  if (socket && socket.readyState === 1) socket.send(JSON.stringify(frame));
}

// -- the page -----------------------------------------------------------------------------------------

function build() {
  screen = "board";
  parts = {
    who: h("span", { class: "c-me" }),
    day: h("p", { class: "s-day" }),
    banner: h("p", { class: "c-banner", role: "status", hidden: true }),
    status: h("p", { class: "s-status", role: "status" }),
    groups: h("tbody"),
    charts: h("div", { class: "s-charts" }),
    operators: h("tbody"),
    conversations: h("tbody"),
    none: h("p", { class: "c-empty" }, t.none_waiting),
  };
  const table = (caption, heads, body) =>
    h("table", { class: "s-table" }, h("caption", {}, caption), h("thead", {}, h("tr", {}, heads.map((x) => h("th", { scope: "col" }, x)))), body);
  root.replaceChildren(
    h(
      "header",
      { class: "c-top" },
      h("h1", { class: "c-title" }, t.title),
      parts.who,
      h("button", { type: "button", class: "c-signout", onclick: () => { const token = session && session.token; stop(null); signOut(token); } }, t.sign_out),
    ),
    parts.banner,
    h(
      "main",
      { class: "s-main" },
      parts.day,
      parts.status,
      table(t.groups, [t.group, t.waiting, t.longest, t.offered, t.answered, t.abandoned, t.service_level], parts.groups),
      parts.charts,
      table(t.operators, [t.operator, t.state, t.load], parts.operators),
      table(t.conversations, [t.visitor, t.group, t.status, t.since, t.action], parts.conversations),
      parts.none,
    ),
  );
}

function setBanner(text) {
  if (!parts) return;
  parts.banner.hidden = !text;
  fill(parts.banner, text || "");
}

const percent = (value) => (value === null || value === undefined ? t.no_figure : `${Math.round(value * 100)}%`);

function since(iso) {
  const seconds = Math.max(0, Math.round((Date.now() + skew - new Date(iso).getTime()) / 1000));
  return seconds < 60 ? `${seconds} s` : `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
}

function drawBoard() {
  fill(parts.day, `${t.today(board.day, board.timezone)} · ${t.service_level}: ${t.within(board.threshold_seconds)}`);
  fill(
    parts.groups,
    board.groups.map((g) =>
      h(
        "tr",
        { "data-group": g.id },
        h("th", { scope: "row" }, g.name),
        h("td", { class: "s-waiting" }, String(g.waiting)),
        h("td", { class: "s-longest", "data-since": g.oldest_waiting_since || "" }, g.oldest_waiting_since ? since(g.oldest_waiting_since) : t.no_figure),
        h("td", {}, String(g.offered)),
        h("td", {}, String(g.answered)),
        h("td", {}, String(g.abandoned)),
        h("td", { class: "s-level" }, percent(g.service_level)),
      ),
    ),
  );
  fill(parts.charts, board.groups.map((g) => chart(g)));
  fill(
    parts.operators,
    board.operators.map((o) => {
      const state =
        o.presence === "offline" ? t.offline : o.presence === "paused" ? (o.pause_reason ? t.paused_for(reason(o.pause_reason)) : t.paused) : o.busy ? t.busy : t.available;
      return h(
        "tr",
        { "data-operator": o.id, class: `s-${o.presence}${o.busy ? " s-busy" : ""}` },
        h("th", { scope: "row" }, o.name),
        h("td", { class: "s-state" }, state),
        h("td", {}, `${o.held}/${o.capacity}`),
      );
    }),
  );
  drawListing();
}

function reason(id) {
  const found = (board.pause_reasons || []).find((r) => r.id === id);
  return found ? found.label : id;
}

/** The service level per 15 minutes as bars (an SVG), with the figures as a text alternative. */
function chart(group) {
  const ns = "http://www.w3.org/2000/svg";
  const width = 96 * 6;
  const height = 80;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height + 14}`);
  svg.setAttribute("role", "img");
  const label = group.intervals
    .map((value, i) => (value === null ? null : `${slot(i)} ${percent(value)}`))
    .filter(Boolean)
    .join(", ");
  svg.setAttribute("aria-label", `${t.chart(group.name)}: ${label || t.no_figure}`);
  const line = document.createElementNS(ns, "line");
  for (const [k, v] of Object.entries({ x1: 0, x2: width, y1: height * 0.2, y2: height * 0.2, class: "s-target" })) line.setAttribute(k, v);
  svg.append(line);
  group.intervals.forEach((value, i) => {
    if (value === null) return;
    const bar = document.createElementNS(ns, "rect");
    const x = (i % 96) * 6;
    for (const [k, v] of Object.entries({ x, width: 5, y: height * (1 - value), height: Math.max(1, height * value), class: value >= 0.8 ? "s-good" : "s-bad" })) bar.setAttribute(k, v);
    svg.append(bar);
  });
  for (const i of [0, 24, 48, 72]) {
    const tick = document.createElementNS(ns, "text");
    for (const [k, v] of Object.entries({ x: i * 6 + 2, y: height + 12, class: "s-tick" })) tick.setAttribute(k, v);
    tick.textContent = slot(i);
    svg.append(tick);
  }
  const empty = group.intervals.every((value) => value === null);
  return h("figure", { class: "s-chart" }, h("figcaption", {}, t.chart(group.name)), svg, empty ? h("p", { class: "c-meta s-nothing" }, t.nothing_yet) : null);
}

function slot(i) {
  const start = new Date(new Date(board.day_start).getTime() + i * board.interval_minutes * 60_000);
  return start.toLocaleTimeString(lang, { hour: "2-digit", minute: "2-digit", timeZone: board.timezone });
}

async function refreshListing() {
  const found = [];
  for (const status of ["queued", "offered", "active"]) {
    const reply = await fetch(`/api/v1/conversations?status=${status}&limit=200`, { headers: { Authorization: `Bearer ${session.token}` } }).catch(() => null);
    if (reply && reply.status === 401) return stop({ code: "session_over" });
    if (reply && reply.ok) found.push(...(await reply.json()).items);
  }
  listing = found;
  drawListing();
}

function drawListing() {
  if (!board) return;
  const groups = Object.fromEntries(board.groups.map((g) => [g.id, g.name]));
  const free = board.operators.filter((o) => o.presence !== "offline" && o.held < o.capacity);
  parts.none.hidden = listing.length > 0;
  fill(
    parts.conversations,
    listing.map((c) => {
      const operator = h("select", { "aria-label": `${t.assign_to} (${c.visitor.name})` }, h("option", { value: "" }, t.choose), free.map((o) => h("option", { value: String(o.id) }, o.name)));
      const group = h("select", { "aria-label": `${t.transfer_to} (${c.visitor.name})` }, h("option", { value: "" }, t.choose), board.groups.map((g) => h("option", { value: String(g.id) }, g.name)));
      const waiting = c.status !== "active";
      return h(
        "tr",
        { "data-conversation": c.id },
        h("th", { scope: "row" }, c.visitor.name, h("span", { class: "c-meta" }, ` · ${c.ticket}`)),
        h("td", {}, groups[c.group_id] || t.no_figure),
        h("td", {}, t[`status_${c.status}`] || c.status),
        h("td", {}, new Date(c.created_at).toLocaleTimeString(lang, { hour: "2-digit", minute: "2-digit" })),
        h(
          "td",
          { class: "s-actions" },
          operator,
          h(
            "button",
            {
              type: "button",
              class: "s-assign",
              onclick: () => operator.value && send(waiting ? { type: "assign", conversation_id: c.id, operator_id: Number(operator.value) } : { type: "transfer", conversation_id: c.id, operator_id: Number(operator.value) }),
            },
            t.assign,
          ),
          group,
          h("button", { type: "button", class: "s-move", onclick: () => group.value && send({ type: "transfer", conversation_id: c.id, group_id: Number(group.value) }) }, t.move),
        ),
      );
    }),
  );
}

// The longest waits tick here between boards.
setInterval(() => {
  if (!parts || !board) return;
  for (const cell of parts.groups.querySelectorAll(".s-longest[data-since]")) {
    if (cell.dataset.since) fill(cell, since(cell.dataset.since));
  }
}, 1000);

if (session) connect();
else showSignin();
