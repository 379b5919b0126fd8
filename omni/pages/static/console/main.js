// The operator console (/console): signs the operator in (POST /api/v1/session), keeps the
// session for the tab (sessionStorage: a reload stays signed in, a closed tab does not), and
// wires the websocket client, the reducer and the view. It also plays the offer's sound,
// shows a desktop notification when the tab is hidden and the operator allowed them, and
// reads the operator's finished conversations from the admin API with the same session.

import { OperatorConnection } from "./connection.js";
import { initial, reduce, unreadTotal } from "./state.js";
import { ConsoleView } from "./view.js";
import { upload } from "../webchat/files.js";
import { language, strings } from "./i18n.js";
import { loadSession, saveSession, signIn, signOut } from "./signin.js";

const root = document.getElementById("console");
const wsUrl = document.body.dataset.ws;
const KEY = "omni.console.session";
const lang = language(navigator.languages);
const t = strings(lang);
document.documentElement.lang = lang;
document.title = t.title;

let state = initial();
let connection = null;
let session = loadSession(KEY);
let changingPassword = false;
const view = new ConsoleView(root, t, lang, {});

const dispatch = (event) => {
  state = reduce(state, event);
  view.render(state);
  const unread = unreadTotal(state);
  document.title = unread ? `(${unread}) ${t.title}` : t.title;
};

view.actions = {
  async signIn(username, password) {
    state = { ...state, signingIn: true, error: null };
    view.render(state);
    const result = await signIn(username, password, ["operator"]);
    if (result.error) return failed(result.error);
    session = result.session;
    saveSession(KEY, session);
    askForNotifications();
    connect();
  },
  async signOut() {
    const token = session && session.token;
    end();
    await signOut(token);
  },
  /** The owner's password change: null when done (the console signs in again with the
   * new session the server answers with), else what to tell them. */
  async changePassword(oldPassword, newPassword) {
    changingPassword = true; // every session ends, this console's too: not a sign-out
    try {
      const reply = await fetch("/api/v1/session/password", {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${session.token}` },
        body: JSON.stringify({ old_password: oldPassword, new_password: newPassword }),
      }).catch(() => null);
      if (!reply) return t.error;
      if (reply.status === 401) return t.old_password_wrong;
      if (reply.status === 429) return t.too_many_attempts(Number(reply.headers.get("Retry-After")) || 1);
      if (!reply.ok) return (await reply.json().catch(() => ({}))).detail || t.error;
      const body = await reply.json();
      session = { token: body.token, expires_at: body.expires_at, user: body.user };
      saveSession(KEY, session);
      if (connection) connection.close();
      connect(true);
      return null;
    } finally {
      changingPassword = false;
    }
  },
  status(status, reason) {
    const frame = { type: "status", status };
    if (reason) frame.reason = reason;
    connection.send(frame);
    if (status === "available") askForNotifications();
  },
  accept(id) {
    connection.send({ type: "accept", conversation_id: id });
  },
  select(id) {
    dispatch({ action: "select", id });
  },
  tab(key) {
    dispatch({ action: "tab", tab: key });
  },
  folderMore() {
    if (state.folder.next) connection.send({ type: "folder", name: "out_of_hours", cursor: state.folder.next });
  },
  resume(id) {
    connection.send({ type: "resume", conversation_id: id });
  },
  /** A file the operator picked, dropped or pasted: uploaded, then sent as `attachment`. */
  async attach(id, file) {
    const clientId = connection.newClientId();
    const attachment = { name: file.name || "file", size: file.size, type: file.type };
    dispatch({ action: "send", id, clientId, text: attachment.name, attachment, at: new Date().toISOString() });
    const answer = await upload(id, session.token, file, (fraction) => dispatch({ action: "progress", id, clientId, fraction }));
    if (answer.error) return dispatch({ action: "upload_failed", id, clientId, code: answer.error.code || "network" });
    dispatch({ action: "progress", id, clientId, fraction: 1, attachment: { id: answer.upload_id, name: answer.name, size: answer.size, type: answer.type } });
    connection.attachment(id, clientId, answer.upload_id);
  },
  fileToken: () => session && session.token,
  send(id, text) {
    const clientId = connection.message(id, text);
    dispatch({ action: "send", id, clientId, text, at: new Date().toISOString() });
  },
  typing(id) {
    connection.typing(id);
  },
  targets(id) {
    connection.send({ type: "targets", conversation_id: id });
  },
  closeTargets() {
    dispatch({ action: "targets_closed" });
  },
  transfer(id, target) {
    connection.send({ type: "transfer", conversation_id: id, ...target });
    dispatch({ action: "targets_closed" });
  },
  end(id) {
    connection.send({ type: "end", conversation_id: id });
  },
  dismiss(id) {
    connection.drop(id);
    dispatch({ action: "dismiss", id });
  },
  async search(query) {
    const params = new URLSearchParams({ status: "closed", limit: "50" });
    if (state.me) params.set("operator_id", String(state.me.id));
    if (query) params.set("q", query);
    const reply = await api(`/api/v1/conversations?${params}`);
    view.showHistory(reply ? reply.items : []);
  },
  async transcript(id) {
    const lines = [];
    let after = 0;
    let summary = null;
    // Page by page (the server pages long histories), at most a few thousand events.
    for (let page = 0; page < 20; page += 1) {
      const reply = await api(`/api/v1/conversations/${encodeURIComponent(id)}/transcript?after=${after}&limit=200`);
      if (!reply) return;
      summary = reply.conversation;
      for (const event of reply.events) {
        // Messages, and what the chatbot said and was answered before the hand-off.
        if (event.type === "message" || event.type === "bot_reply") lines.push({ author: event.author.name || "", text: event.text });
        else if (event.type === "bot") lines.push({ author: t.bot, text: event.text });
      }
      if (reply.next_after === null) break;
      after = reply.next_after;
    }
    view.showTranscript(summary, lines);
  },
};

function failed(error) {
  state = { ...initial(), phase: "signin", signingIn: false, error };
  view.render(state);
}

function connect(again = false) {
  // Signing in again (a new session) keeps what the page shows; the server's welcome and
  // sync bring the rest.
  if (!again) {
    state = { ...initial(), phase: "connecting" };
    view.render(state);
  }
  loadServices();
  connection = new OperatorConnection({
    url: `${wsUrl}/ws/operator`,
    token: session.token,
    onFrame(frame) {
      if (frame.type === "offer") {
        dispatch({ ...frame, now: Date.now() });
        alertOffer(frame);
        return;
      }
      if (frame.type === "typing") return dispatch({ ...frame, now: Date.now() });
      if (frame.type === "welcome") {
        dispatch(frame);
        connection.send({ type: "folder", name: "out_of_hours" }); // then kept live by folder_changed
        return;
      }
      if (frame.type === "error" && frame.code === "session_ended" && changingPassword) return; // a new session follows
      if (frame.type === "error" && ["invalid_login", "session_ended", "session_replaced", "operator_deactivated", "credentials_changed"].includes(frame.code)) {
        end(frame.code === "session_replaced" ? null : { code: "session_over" });
        return;
      }
      dispatch(frame);
    },
    onStatus(status) {
      if (status !== "stopped") dispatch({ action: "connection", status });
    },
  });
  connection.open();
}

/** Signed out, or the session is over: back to the form. */
function end(error = null) {
  if (connection) connection.close();
  connection = null;
  session = null;
  saveSession(KEY, null);
  failed(error);
}

async function api(path) {
  const reply = await fetch(path, { headers: { Authorization: `Bearer ${session.token}` } }).catch(() => null);
  if (reply && reply.status === 401) end({ code: "session_over" });
  return reply && reply.ok ? reply.json() : null;
}

async function loadServices() {
  const reply = await fetch("/api/public/services").catch(() => null);
  if (!reply || !reply.ok) return;
  const { services } = await reply.json();
  view.services = Object.fromEntries(services.map((s) => [s.id, s.name]));
}

// -- telling the operator a conversation is offered ------------------------------------------------

let audio = null;

function alertOffer(frame) {
  try {
    audio = audio || new AudioContext();
    const now = audio.currentTime;
    for (const [at, pitch] of [[0, 880], [0.18, 1175]]) {
      const tone = audio.createOscillator();
      const gain = audio.createGain();
      tone.frequency.value = pitch;
      gain.gain.setValueAtTime(0.0001, now + at);
      gain.gain.exponentialRampToValueAtTime(0.2, now + at + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, now + at + 0.16);
      tone.connect(gain).connect(audio.destination);
      tone.start(now + at);
      tone.stop(now + at + 0.17);
    }
  } catch {
    // No sound where the browser allows none: the offer is still shown and announced.
  }
  if (document.visibilityState !== "visible" && "Notification" in window && Notification.permission === "granted") {
    const note = new Notification(t.new_offer, { body: frame.conversation.visitor.name, tag: frame.conversation_id });
    note.onclick = () => window.focus();
  }
}

function askForNotifications() {
  if ("Notification" in window && Notification.permission === "default") Notification.requestPermission().catch(() => {});
}

setInterval(() => dispatch({ action: "tick", now: Date.now() }), 1000);
if (session) connect();
else view.render(state);
