// The operator's side of Omni's websocket protocol (docs/protocol.md §5), and nothing of the page.
//
// Rules of this module:
// - It owns the socket: connects, signs in with `login`, and after a drop reconnects by itself
//   with exponential back-off and full jitter. After every `welcome` it catches up each held
//   conversation with `sync` from the highest `seq` it has passed on (0 after a reload), then
//   sends again the messages not yet acknowledged, under their first `client_id` (the server
//   stores each once).
// - It passes each frame on once, in `seq` order per conversation: replayed frames it already
//   passed on are dropped here, so the console never shows a message twice.
// - A refusal that trying again cannot change (`invalid_login`, `session_ended`,
//   `session_replaced`, `operator_deactivated`, `credentials_changed`) stops it: the page then
//   asks the person to sign in again.
// - Time and randomness come from the outside (`clock`), so tests can drive them.

const BACKOFF_FIRST = 500; // ms
const BACKOFF_MAX = 30_000;
const TYPING_EVERY = 3_000; // ms between two typing frames per conversation
/** Errors after which signing in again with the same token cannot work. */
export const FINAL = new Set(["invalid_login", "session_ended", "session_replaced", "operator_deactivated", "credentials_changed"]);
/** Refusals of a message that sending it again cannot change. */
const REFUSED = new Set(["message_too_long", "invalid_frame", "conversation_closed", "invalid_state", "not_your_conversation", "unknown_conversation", "unknown_attachment", "not_your_attachment", "attachment_claimed"]);

export class OperatorConnection {
  /**
   * @param {object} options
   * @param {string} options.url - ws://…/ws/operator
   * @param {string} options.token - a session token (or a console token)
   * @param {(frame: object) => void} options.onFrame
   * @param {(status: string) => void} options.onStatus - "connecting" | "online" | "offline" | "stopped"
   */
  constructor({ url, token, onFrame, onStatus, clock, WebSocket: Socket }) {
    this.url = url;
    this.token = token;
    this.onFrame = onFrame;
    this.onStatus = onStatus;
    this.clock = clock || {
      now: () => Date.now(),
      random: Math.random,
      setTimeout: (fn, ms) => setTimeout(fn, ms),
      clearTimeout: (id) => clearTimeout(id),
    };
    this.Socket = Socket || WebSocket;
    /** conversation_id -> the highest `seq` passed on. */
    this.seen = new Map();
    /** client_id -> {conversation_id, text}, in the order sent, until acknowledged. */
    this.pending = new Map();
    this.lastTyping = new Map();
    this.ws = null;
    this.bound = false;
    this.attempt = 0;
    this.timer = null;
    this.closed = false;
    this.sequence = 0;
  }

  open() {
    this.closed = false;
    this._connect();
  }

  close() {
    this.closed = true;
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.bound = false;
  }

  /** Any frame; dropped while the socket is not signed in (a state the page shows). */
  send(frame) {
    if (this.bound) this._send(frame);
    return this.bound;
  }

  /** A message: its `client_id`, kept until the `ack`, sent again after a reconnect. */
  message(conversationId, text) {
    this.sequence += 1;
    const clientId = `o-${this.clock.now().toString(36)}-${this.sequence}-${Math.floor(this.clock.random() * 1e6).toString(36)}`;
    this.pending.set(clientId, { conversation_id: conversationId, text });
    if (this.bound) this._send({ type: "message", conversation_id: conversationId, client_id: clientId, text });
    return clientId;
  }

  /** A fresh `client_id`: a file takes one before its upload, its frame after. */
  newClientId() {
    this.sequence += 1;
    return `o-${this.clock.now().toString(36)}-${this.sequence}-${Math.floor(this.clock.random() * 1e6).toString(36)}`;
  }

  /** An uploaded file (`attachment`), kept until its `ack` and sent again after a reconnect. */
  attachment(conversationId, clientId, uploadId) {
    this.pending.set(clientId, { conversation_id: conversationId, upload_id: uploadId });
    if (this.bound) this._send({ type: "attachment", conversation_id: conversationId, client_id: clientId, upload_id: uploadId });
  }

  typing(conversationId) {
    const now = this.clock.now();
    if (this.bound && now - (this.lastTyping.get(conversationId) ?? -Infinity) >= TYPING_EVERY) {
      this.lastTyping.set(conversationId, now);
      this._send({ type: "typing", conversation_id: conversationId });
    }
  }

  /** Forget a conversation the console no longer shows. */
  drop(conversationId) {
    this.seen.delete(conversationId);
    this.lastTyping.delete(conversationId);
    for (const [clientId, p] of this.pending) if (p.conversation_id === conversationId) this.pending.delete(clientId);
  }

  // -- the socket ------------------------------------------------------------------------------

  _connect() {
    if (this.closed) return;
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
    if (this.ws && this.ws.readyState <= 1) return;
    this.bound = false;
    this.onStatus("connecting");
    const ws = new this.Socket(this.url);
    this.ws = ws;
    ws.onopen = () => {
      if (ws === this.ws) this._send({ type: "login", token: this.token });
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
      this.onStatus("offline");
      const ceiling = Math.min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** this.attempt);
      this.attempt += 1;
      this.timer = this.clock.setTimeout(() => this._connect(), this.clock.random() * ceiling);
    };
  }

  _send(frame) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(frame));
  }

  _receive(frame) {
    if (frame.type === "welcome") {
      this.bound = true;
      this.attempt = 0;
      this.onStatus("online");
      this.onFrame(frame);
      // Catch up what happened while away (or, after a reload, everything), then resend.
      for (const c of frame.conversations || []) {
        this._send({ type: "sync", conversation_id: c.id, last_seq: this.seen.get(c.id) || 0 });
      }
      for (const [clientId, p] of this.pending) {
        this._send(
          p.upload_id
            ? { type: "attachment", conversation_id: p.conversation_id, client_id: clientId, upload_id: p.upload_id }
            : { type: "message", conversation_id: p.conversation_id, client_id: clientId, text: p.text },
        );
      }
      return;
    }
    if (frame.type === "error") {
      if (frame.code === "moved") {
        // Served by another node now (docs/scale-out.md): the server closes this socket, and
        // the next one signs in again at once (no back-off, nothing to show).
        this.attempt = 0;
        return;
      }
      if (FINAL.has(frame.code)) {
        this.closed = true;
        this.onStatus("stopped");
      }
      if (frame.client_id && REFUSED.has(frame.code)) this.pending.delete(frame.client_id);
      this.onFrame(frame);
      return;
    }
    if (frame.type === "ack") this.pending.delete(frame.client_id);
    if (typeof frame.seq === "number" && frame.conversation_id) {
      const seen = this.seen.get(frame.conversation_id) || 0;
      if (frame.type !== "ack" && frame.seq <= seen) return; // a replay of what was passed on
      if (frame.seq > seen) this.seen.set(frame.conversation_id, frame.seq);
    }
    this.onFrame(frame);
  }
}
