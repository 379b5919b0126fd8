// What the WebChat shows, as one value, and the one place it changes: reduce(state, event).
//
// Rules of this module:
// - No DOM, no socket, no clock of its own: an event is a frame from the server (what
//   protocol.js passes on, each once and in order) or an action of the page ({action: …});
//   `reduce` returns the next state and never changes the one it is given.
// - A message is one entry whoever sent it: the visitor's own is shown at once as "sending"
//   under its client_id, becomes "sent" with its seq when the ack comes, and is never shown a
//   second time when a replay brings it back as a `message` frame.
// - The chatbot (F15) is more of the same: what it says (`bot`) is an entry of its own author
//   kind, "bot", carrying its options and the kind of answer it expects; the visitor's answer is
//   a pending entry like a message (a replay brings it back as `bot_reply`). Which question is
//   waiting for an answer is not kept but derived (`openQuestion`), so it cannot disagree with
//   the log.

/** The state before anything is known. */
export function initial(config) {
  return {
    config, // the service's public configuration (/api/public/services/{id})
    phase: "form", // form | starting | resuming | bot | queued | active | ended | survey | closed | out_of_hours | unavailable
    connection: "connecting", // connecting | online | offline
    conversationId: null,
    ticket: null,
    visitorName: null,
    position: null,
    estimatedWait: null,
    opensAt: config && config.opens_at ? config.opens_at : null,
    operator: null, // {id, name}
    avatar: config ? config.avatar : null,
    messages: [], // {key, seq, author: {kind, name}, text, at, status[, bot: {node, options, input, opensAt}]}
    replayUntil: 0, // frames up to this seq are a replay (after `resumed`): they change no phase
    typingUntil: 0,
    outOfHoursMessage: null,
    idleWarning: null,
    endedBy: null,
    survey: null, // {questions}
    surveySent: false,
    closingMessage: null,
    transcript: { sent: [], error: null },
    error: null, // {code, message}: the last refusal worth showing
    unread: 0, // the operator's messages after `seenSeq`, the last one the visitor saw
    seenSeq: 0,
  };
}

/** The next state after `event` (a server frame, or {action}). */
export function reduce(state, event) {
  if (event.action) return act(state, event);
  const frame = event;
  switch (frame.type) {
    case "started":
      // A service whose chatbot answers first says so: no queue is shown before its first word.
      return { ...state, phase: frame.service.bot ? "bot" : "queued", conversationId: frame.conversation_id, ticket: frame.ticket, error: null, avatar: frame.service.avatar || state.avatar };
    case "resumed":
      return {
        ...state,
        conversationId: frame.conversation_id,
        ticket: frame.ticket,
        phase: phaseOf(frame.status, state),
        replayUntil: frame.last_seq ?? state.replayUntil,
        error: null,
      };
    case "queued":
      return {
        ...state,
        // The bot handed the visitor to a group: the queue takes over.
        phase: ["form", "starting", "resuming", "queued", "bot"].includes(state.phase) ? "queued" : state.phase,
        position: frame.position,
        estimatedWait: frame.estimated_wait ?? null,
      };
    case "out_of_hours":
      return { ...state, phase: "out_of_hours", outOfHoursMessage: frame.message, opensAt: frame.opens_at ?? state.opensAt };
    case "assigned":
      return {
        ...state,
        phase: "active",
        operator: frame.operator,
        avatar: frame.avatar || state.avatar,
        visitorName: frame.conversation && frame.conversation.visitor ? frame.conversation.visitor.name : state.visitorName,
        ticket: frame.conversation ? frame.conversation.ticket : state.ticket,
        position: null,
        estimatedWait: null,
        messages: stored(state.messages, notice(frame, "assigned", { name: frame.operator.name })),
      };
    case "message":
    case "bot_reply": // the visitor's answer to the bot, as a replay brings it back
      return received(state, frame);
    case "bot":
      return botSays(state, frame);
    case "ack":
      return acknowledged(state, frame);
    case "typing":
      return { ...state, typingUntil: event.now === undefined ? Infinity : event.now + 6000 };
    case "transferred":
      return {
        ...state,
        phase: frame.to.kind === "group" ? "queued" : state.phase,
        operator: frame.to.kind === "operator" ? { id: frame.to.id, name: frame.to.name } : state.operator,
        messages: stored(state.messages, notice(frame, `transferred_${frame.to.kind}`, { name: frame.to.name })),
      };
    case "idle_warning":
      return { ...state, idleWarning: { closesIn: frame.closes_in } };
    case "ended":
      return {
        ...state,
        phase: "ended",
        endedBy: frame.by,
        idleWarning: null,
        position: null,
        typingUntil: 0,
        messages: stored(state.messages, notice(frame, `ended_${frame.by}`, {})),
      };
    case "survey":
      return { ...state, phase: "survey", survey: { questions: frame.questions } };
    case "closed":
      return { ...state, phase: "closed", closingMessage: frame.message, survey: null };
    case "transcript_queued":
      return { ...state, transcript: { sent: [...state.transcript.sent, frame.email], error: null } };
    case "forgotten":
      return { ...initial(state.config), connection: state.connection };
    case "error":
      return refused(state, frame);
    default:
      return state;
  }
}

function act(state, event) {
  switch (event.action) {
    case "status":
      return { ...state, connection: event.status };
    case "starting":
      return { ...state, phase: "starting", visitorName: event.name, error: null };
    case "resuming":
      return { ...state, phase: "resuming" };
    case "captcha_missing":
      return { ...state, phase: "form", error: { code: "captcha_required", message: "" } };
    case "send":
      return {
        ...state,
        messages: [
          ...state.messages,
          {
            key: event.clientId,
            seq: null,
            author: { kind: "visitor", name: state.visitorName },
            text: event.text,
            at: event.at ?? null,
            status: "sending",
            // A file on its way: its name, size and type, and how much of it is uploaded.
            ...(event.attachment ? { attachment: event.attachment, progress: event.progress ?? 0 } : {}),
          },
        ],
      };
    case "progress":
      return {
        ...state,
        messages: state.messages.map((m) => (m.key === event.clientId ? { ...m, progress: event.fraction, attachment: { ...m.attachment, ...(event.attachment || {}) } } : m)),
      };
    case "upload_failed":
      return {
        ...state,
        messages: state.messages.map((m) => (m.key === event.clientId ? { ...m, status: "failed", failure: event.code } : m)),
      };
    case "survey_sent":
      return { ...state, surveySent: true };
    case "seen": {
      // Everything shown is seen (or, from a reload, what the visitor had seen before it).
      const seq = event.seq ?? state.messages.reduce((last, m) => Math.max(last, m.seq || 0), state.seenSeq);
      return { ...state, unread: 0, seenSeq: Math.max(state.seenSeq, seq) };
    }
    case "tick":
      return state.typingUntil && state.typingUntil <= event.now ? { ...state, typingUntil: 0 } : state;
    case "new_conversation":
      return { ...initial(state.config), connection: state.connection };
    case "unavailable":
      return { ...state, phase: "unavailable", error: { code: event.code, message: event.message } };
    default:
      return state;
  }
}

function phaseOf(status, state) {
  switch (status) {
    case "queued":
    case "offered":
      return "queued";
    case "active":
      return "active";
    case "bot":
      return "bot";
    case "ended":
      return state.survey ? "survey" : "ended";
    case "out_of_hours":
      return "out_of_hours";
    case "closed":
    case "abandoned":
      return "closed";
    default:
      return state.phase;
  }
}

function received(state, frame) {
  const entry = { key: `s${frame.seq}`, seq: frame.seq, author: frame.author, text: frame.text, at: frame.at, status: "sent" };
  if (frame.attachment) entry.attachment = frame.attachment;
  if (state.messages.some((m) => m.seq === frame.seq)) return state;
  // Before the visitor's messages still on their way: those go out after what is stored.
  const messages = stored(state.messages, entry);
  return {
    ...state,
    messages,
    typingUntil: frame.author.kind === "operator" ? 0 : state.typingUntil,
    // A replay after a reload repeats messages already seen: only newer ones are unread.
    unread: frame.author.kind === "operator" && frame.seq > state.seenSeq ? state.unread + 1 : state.unread,
  };
}

function botSays(state, frame) {
  if (state.messages.some((m) => m.seq === frame.seq)) return state;
  const name = (state.avatar && state.avatar.name) || (state.config && state.config.name) || "";
  const entry = {
    key: `s${frame.seq}`,
    seq: frame.seq,
    author: { kind: "bot", name },
    text: frame.text,
    at: frame.at,
    status: "sent",
    bot: { node: frame.node, options: frame.options || [], input: frame.input ?? null, opensAt: frame.opens_at ?? null },
  };
  // A live frame means the bot is talking now; a replayed one (a reload after the hand-off)
  // leaves the phase `resumed` gave.
  const live = frame.seq > state.replayUntil;
  const talking = live && ["form", "starting", "resuming", "queued", "bot"].includes(state.phase);
  return {
    ...state,
    phase: talking ? "bot" : state.phase,
    messages: stored(state.messages, entry),
    unread: frame.seq > state.seenSeq ? state.unread + 1 : state.unread,
  };
}

/**
 * The bot's question waiting for the visitor's answer, or null: the last thing the bot said,
 * while the conversation is with the bot, if it offers options or asks for an answer and the
 * visitor has not answered it yet (an answer on its way counts; one refused does not).
 */
export function openQuestion(state) {
  if (state.phase !== "bot") return null;
  for (let at = state.messages.length - 1; at >= 0; at -= 1) {
    const m = state.messages[at];
    if (m.author.kind === "visitor" && m.status !== "failed") return null;
    if (m.bot) return m.bot.options.length || m.bot.input ? m : null;
  }
  return null;
}

function acknowledged(state, frame) {
  const known = state.messages.some((m) => m.seq === frame.seq);
  const messages = [];
  for (const m of state.messages) {
    if (m.key === frame.client_id) {
      // A replay already showed this message (it was stored before the connection dropped):
      // the pending copy goes.
      if (!known) messages.push({ ...m, seq: frame.seq, status: "sent" });
    } else {
      messages.push(m);
    }
  }
  return { ...state, messages };
}

function refused(state, frame) {
  if (frame.client_id) {
    const failed = new Set(["message_too_long", "invalid_frame", "conversation_closed", "message_limit", "invalid_state", "invalid_reply"]);
    if (failed.has(frame.code)) {
      return {
        ...state,
        messages: state.messages.map((m) => (m.key === frame.client_id ? { ...m, status: "failed", error: frame.code } : m)),
        error: { code: frame.code, message: frame.message },
      };
    }
    return state; // rate_limited: protocol.js sends it again after retry_after
  }
  if (["captcha_required", "captcha_failed", "captcha_unavailable", "invalid_identity", "invalid_frame", "origin_not_allowed", "unknown_service", "rate_limited"].includes(frame.code) && (state.phase === "starting" || state.phase === "form")) {
    return { ...state, phase: "form", error: { code: frame.code, message: frame.message } };
  }
  if (frame.code === "invalid_survey") return { ...state, surveySent: false, error: { code: frame.code, message: frame.message } };
  if (["invalid_email", "too_many_transcripts", "transcript_unavailable", "transcript_disabled"].includes(frame.code)) {
    return { ...state, transcript: { ...state.transcript, error: frame.code } };
  }
  if (frame.code === "superseded") return { ...state, phase: "unavailable", error: { code: frame.code, message: frame.message } };
  return { ...state, error: { code: frame.code, message: frame.message } };
}

/** ``messages`` with a stored entry added: in seq order, before the ones still being sent. */
function stored(messages, entry) {
  if (messages.some((m) => m.seq === entry.seq)) return messages;
  const at = messages.findIndex((m) => m.seq === null);
  return at < 0 ? [...messages, entry] : [...messages.slice(0, at), entry, ...messages.slice(at)];
}

function notice(frame, kind, fields) {
  return { key: `s${frame.seq}`, seq: frame.seq, author: { kind: "system" }, notice: kind, ...fields, at: null, status: "sent" };
}
