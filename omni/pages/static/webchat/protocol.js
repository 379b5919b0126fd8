// The visitor's side of Omni's websocket protocol (docs/protocol.md §4), and nothing of the page.
//
// Rules of this module:
// - It owns the socket: connects, binds it with `start` or `resume`, and after any drop
//   reconnects by itself with exponential back-off and full jitter, resuming from the highest
//   `seq` it has seen. It tells its listener every frame once, in `seq` order: replayed
//   frames it already passed on are dropped here, so the page never shows a message twice.
// - Messages are sent with a fresh `client_id` and kept until their `ack`; after a reconnect
//   the unacknowledged ones are sent again with the same `client_id` (the server stores each
//   once), so a message typed while offline is not lost either. Files (`attachment`) and
//   answers to the chatbot (`bot_reply`) are kept and sent again the same way.
// - What it must remember across a reload (the conversation's token, and the messages not yet
//   acknowledged) goes to the storage it is given (the page passes `localStorage`), under a key
//   per service. A reloaded page has shown nothing yet: it resumes from the first `seq`.
// - Time and randomness come from the outside (`clock`), so tests can drive them.

const BACKOFF_FIRST = 500; // ms
const BACKOFF_MAX = 30_000;
const TYPING_EVERY = 3_000; // ms between two typing frames while the visitor types
// Refusals of a message that sending it again cannot change (the page shows it "not sent").
const REFUSED = new Set(["message_too_long", "invalid_frame", "conversation_closed", "message_limit", "invalid_state", "invalid_reply", "unknown_attachment", "not_your_attachment", "attachment_claimed"]);

export class Connection {
  /**
   * @param {object} options
   * @param {string} options.url - ws://…/ws/visitor
   * @param {number} options.service - the service id (the storage key's part)
   * @param {(frame: object) => void} options.onFrame - every new frame, once, in order
   * @param {(status: string) => void} options.onStatus - "connecting" | "online" | "offline"
   * @param {Storage} [options.storage]
   * @param {{now: () => number, random: () => number, setTimeout: Function, clearTimeout: Function}} [options.clock]
   * @param {typeof WebSocket} [options.WebSocket]
   */
  constructor({ url, service, onFrame, onStatus, storage, clock, WebSocket: Socket }) {
    this.url = url;
    this.key = `omni.webchat.${service}`;
    this.onFrame = onFrame;
    this.onStatus = onStatus;
    this.storage = storage || null;
    this.clock = clock || {
      now: () => Date.now(),
      random: Math.random,
      setTimeout: (fn, ms) => setTimeout(fn, ms),
      clearTimeout: (id) => clearTimeout(id),
    };
    this.Socket = Socket || WebSocket;
    const saved = this._load();
    /** The conversation's resume token, once started. */
    this.token = saved.token || null;
    /** The highest `seq` passed on (by this page: a reload starts from nothing). */
    this.lastSeq = 0;
    /** client_id -> what was sent and not yet acknowledged, in the order it was sent: a
     * message's text, a file's {upload_id, name}, an answer to the bot's {bot, label}. */
    this.pending = new Map(saved.pending || []);
    this.ws = null;
    this.bound = false;
    this.attempt = 0;
    this.timer = null;
    this.closed = false;
    this.startFrame = null;
    this.lastTyping = -Infinity;
  }

  /** Whether a conversation of this service is remembered (a reload resumes it). */
  get hasConversation() {
    return this.token !== null;
  }

  /** Sent and not yet acknowledged: [client_id, what] (shown again after a reload). */
  get unacknowledged() {
    return [...this.pending];
  }

  /** Resume the remembered conversation, if any. With none, the socket opens with `start`:
   * a visitor reading the form holds no connection (the server would close an idle one). */
  open() {
    this.closed = false;
    if (this.token || this.startFrame) this._connect();
  }

  /** Start a new conversation: `start` with these fields (service_id is added). */
  start(fields) {
    this.startFrame = { type: "start", ...fields };
    if (this.ws && this.ws.readyState === 1 && !this.bound) this._send(this.startFrame);
    else if (!this.ws) this._connect();
  }

  /** Send a message; its `client_id` (also the page's key for it until the ack). */
  message(text) {
    const clientId = this.newClientId();
    this.pending.set(clientId, text);
    this._save();
    if (this.bound) this._send(frameOf(clientId, text));
    return clientId;
  }

  /** A fresh `client_id`: an attachment takes one before its upload, its frame after. */
  newClientId() {
    return `v-${this.clock.now().toString(36)}-${Math.floor(this.clock.random() * 1e9).toString(36)}`;
  }

  /** Send an uploaded file (`attachment {client_id, upload_id}`), kept like a message until
   * its ack and sent again after a reconnect under the same `client_id`. */
  attachment(clientId, uploadId, name) {
    const pending = { upload_id: uploadId, name };
    this.pending.set(clientId, pending);
    this._save();
    if (this.bound) this._send(frameOf(clientId, pending));
  }

  /** Answer the chatbot (`bot_reply`): `{option}` (a button's id; `label` is what the page
   * shows meanwhile) or `{text}`; kept like a message until its ack, and sent again after a
   * reconnect under the same `client_id`. Returns the `client_id`. */
  botReply({ option, text, label }) {
    const clientId = this.newClientId();
    const pending = option != null ? { bot: { option }, label } : { bot: { text }, label: text };
    this.pending.set(clientId, pending);
    this._save();
    if (this.bound) this._send(frameOf(clientId, pending));
    return clientId;
  }

  /** The visitor is typing: at most one frame every few seconds. */
  typing() {
    const now = this.clock.now();
    if (this.bound && now - this.lastTyping >= TYPING_EVERY) {
      this.lastTyping = now;
      this._send({ type: "typing" });
    }
  }

  /** Any other visitor frame (end, survey, survey_skip, transcript). */
  send(frame) {
    if (this.bound) this._send(frame);
  }

  /** Forget the conversation (after it closed, to start another), and stop reconnecting. */
  forget() {
    this.token = null;
    this.lastSeq = 0;
    this.pending.clear();
    this.startFrame = null;
    if (this.storage) this.storage.removeItem(this.key);
  }

  /** Close for good (the page is leaving). */
  close() {
    this.closed = true;
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
    // Done with that socket now: its close event may come late, and start() must not wait for it.
    this.ws = null;
    this.bound = false;
  }

  // -- the socket ------------------------------------------------------------------------------

  _connect() {
    if (this.closed) return;
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
    // One socket at a time: start() may come before open(), or while a reconnect waits.
    if (this.ws && this.ws.readyState <= 1) return;
    this.bound = false;
    this.onStatus("connecting");
    const ws = new this.Socket(this.url);
    this.ws = ws;
    ws.onopen = () => {
      if (ws !== this.ws) return;
      if (this.token) this._send({ type: "resume", token: this.token, last_seq: this.lastSeq });
      else if (this.startFrame) this._send(this.startFrame);
      else this.onStatus("online"); // nothing to bind yet: the form is showing
    };
    ws.onmessage = (event) => {
      if (ws !== this.ws) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this._receive(frame);
    };
    ws.onclose = () => {
      if (ws !== this.ws) return;
      this.ws = null;
      this.bound = false;
      if (this.closed) return;
      if (!this.token && !this.startFrame) return; // nothing to bind: `start` connects again
      this.onStatus("offline");
      this._retry();
    };
  }

  _retry() {
    // Full jitter: a server that dropped everyone at once is not met by everyone at once.
    const ceiling = Math.min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** this.attempt);
    this.attempt += 1;
    this.timer = this.clock.setTimeout(() => this._connect(), this.clock.random() * ceiling);
  }

  _send(frame) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(frame));
  }

  _receive(frame) {
    switch (frame.type) {
      case "started":
        this.token = frame.token;
        this.lastSeq = 0;
        this._bound();
        this._save();
        this.onFrame(frame);
        return;
      case "resumed":
        this._bound();
        this.onFrame(frame);
        // What was typed while offline goes now, under its first client_id.
        for (const [clientId, what] of this.pending) this._send(frameOf(clientId, what));
        return;
      case "ack":
        this.pending.delete(frame.client_id);
        if (frame.seq > this.lastSeq) this.lastSeq = frame.seq;
        this._save();
        this.onFrame(frame);
        return;
      case "error":
        this._error(frame);
        return;
      default:
        if (typeof frame.seq === "number") {
          if (frame.seq <= this.lastSeq) return; // seen already (a replay)
          this.lastSeq = frame.seq;
          this._save();
        }
        this.onFrame(frame);
    }
  }

  _error(frame) {
    if (frame.code === "invalid_token" || frame.code === "invalid_seq") {
      // The remembered conversation is gone (or the server's store was reset): start afresh.
      this.forget();
      this.onFrame({ type: "forgotten", code: frame.code });
      return;
    }
    if (frame.code === "moved") {
      // Served by another node now (docs/scale-out.md): the server closes this socket, and
      // the next one resumes at once (no back-off, nothing to show).
      this.attempt = 0;
      return;
    }
    if (frame.code === "superseded") {
      // Another tab took the conversation: do not fight over it.
      this.closed = true;
    }
    if (frame.client_id && REFUSED.has(frame.code) && this.pending.delete(frame.client_id)) {
      this._save(); // not to be sent again after a reconnect, nor shown as sending after a reload
    }
    if (frame.code === "rate_limited" && frame.client_id && this.pending.has(frame.client_id)) {
      const what = this.pending.get(frame.client_id);
      const wait = Math.max(0.1, frame.retry_after || 1) * 1000;
      this.clock.setTimeout(() => {
        if (this.bound && this.pending.has(frame.client_id)) this._send(frameOf(frame.client_id, what));
      }, wait);
    }
    this.onFrame(frame);
  }

  _bound() {
    this.bound = true;
    this.attempt = 0;
    this.onStatus("online");
  }

  // -- what survives a reload -------------------------------------------------------------------

  _load() {
    if (!this.storage) return {};
    try {
      return JSON.parse(this.storage.getItem(this.key) || "{}") || {};
    } catch {
      return {};
    }
  }

  _save() {
    if (!this.storage || !this.token) return;
    const saved = { token: this.token, pending: [...this.pending] };
    try {
      this.storage.setItem(this.key, JSON.stringify(saved));
    } catch {
      // Storage full or refused (private mode): the conversation lives as long as the page.
    }
  }
}

/** The frame of a pending item: a message's text, an answer to the bot, or an uploaded file. */
function frameOf(clientId, what) {
  if (typeof what === "string") return { type: "message", client_id: clientId, text: what };
  if (what.bot) return { type: "bot_reply", client_id: clientId, ...what.bot };
  return { type: "attachment", client_id: clientId, upload_id: what.upload_id };
}
