// The operator console's state and how each server frame or operator action changes it: pure
// functions, no DOM, no socket, no clock of their own (`now` comes with the events that need it).
//
// A conversation the operator holds (or held, until they dismiss it) is kept by id with its
// summary, its messages (stored ones by `seq`, the operator's own ones still on their way by
// `client_id`), its unread count and the visitor's typing. Offers are kept with the instant
// they lapse, for the countdown.
//
// What the chatbot said before the hand-off (F15) comes in the history like messages: a `bot`
// frame is an entry of author kind "bot" (with its options, for the operator to read), a
// `bot_reply` the visitor's answer.

export function initial() {
  return {
    phase: "signin", // signin | connecting | ready | stopped
    connection: "connecting", // connecting | online | offline | stopped
    me: null, // {id, name, capacity, status, reason}
    groups: [],
    pauseReasons: [],
    offers: [], // [{id, conversation, until}] (until: ms)
    conversations: {}, // id -> conversation (see held())
    order: [], // ids, oldest first
    selected: null,
    tab: "chats", // chats | folder | history
    folder: { items: [], next: null, loaded: false },
    targets: null, // {conversation_id, groups, operators} while choosing a transfer
    error: null, // {code, message}
    notice: null, // a passing notice: {key, args}
  };
}

function held(summary) {
  return { summary, messages: [], unread: 0, typingUntil: 0, ended: false, closed: false, transferredTo: null, idleWarning: null };
}

function withConversation(state, id, change) {
  const current = state.conversations[id];
  if (!current) return state;
  return { ...state, conversations: { ...state.conversations, [id]: change(current) } };
}

/** A history frame of a conversation not (yet) shown: its replay comes before its `assigned`
 * (accept, a transfer to this operator, a resume), so it is kept, hidden, until then. */
function known(state, id) {
  if (state.conversations[id]) return state;
  return { ...state, conversations: { ...state.conversations, [id]: { ...held(null), hidden: true } } };
}

/** The next state after `event` (a server frame, or {action}). */
export function reduce(state, event) {
  if (event.action) return act(state, event);
  const frame = event;
  switch (frame.type) {
    case "welcome": {
      const conversations = { ...state.conversations };
      const order = [...state.order];
      for (const summary of frame.conversations || []) {
        if (!conversations[summary.id]) {
          conversations[summary.id] = held(summary);
          order.push(summary.id);
        }
      }
      return {
        ...state,
        phase: "ready",
        me: { ...frame.operator, reason: frame.operator.reason ?? null },
        groups: frame.groups || [],
        pauseReasons: frame.pause_reasons || state.pauseReasons,
        conversations,
        order,
        selected: state.selected ?? order[0] ?? null,
        // The folder is asked for again after each welcome: its pushes are not replayed.
        folder: { items: [], next: null, loaded: false },
        error: null,
      };
    }
    case "status":
      return { ...state, me: { ...state.me, status: frame.status, reason: frame.reason ?? null } };
    case "offer":
      if (state.offers.some((o) => o.id === frame.conversation_id)) return state;
      return {
        ...state,
        offers: [...state.offers, { id: frame.conversation_id, conversation: frame.conversation, until: frame.now + frame.timeout * 1000 }],
      };
    case "offer_withdrawn":
      return { ...state, offers: state.offers.filter((o) => o.id !== frame.conversation_id) };
    case "assigned":
      return assigned(state, frame);
    case "message":
    case "bot_reply":
      return message(state, frame);
    case "bot":
      return message(state, { ...frame, author: { kind: "bot" } });
    case "ack":
      return withConversation(state, frame.conversation_id, (c) => ({
        ...c,
        messages: c.messages.some((m) => m.seq === frame.seq)
          ? c.messages.filter((m) => m.key !== frame.client_id)
          : c.messages.map((m) => (m.key === frame.client_id ? { ...m, seq: frame.seq, status: "sent" } : m)),
      }));
    case "typing":
      return withConversation(state, frame.conversation_id, (c) => ({ ...c, typingUntil: frame.now + 6000 }));
    case "transferred":
      return withConversation(known(state, frame.conversation_id), frame.conversation_id, (c) => {
        const mine = frame.to.kind === "operator" && state.me && frame.to.id === state.me.id;
        return {
          ...c,
          transferredTo: mine ? null : frame.to,
          messages: add(c.messages, notice(frame, mine ? "transferred_to_me" : frame.reason === "transfer" ? "transferred" : `transferred_${frame.reason}`, frame.to.name)),
        };
      });
    case "idle_warning":
      return withConversation(state, frame.conversation_id, (c) => ({ ...c, idleWarning: frame.closes_in }));
    case "ended":
      return withConversation(known(state, frame.conversation_id), frame.conversation_id, (c) => ({
        ...c,
        ended: true,
        typingUntil: 0,
        messages: add(c.messages, notice(frame, `ended_${frame.by}`)),
      }));
    case "closed":
      return withConversation(state, frame.conversation_id, (c) => ({ ...c, ended: true, closed: true }));
    case "folder":
      return {
        ...state,
        folder: {
          items: frame.replace ? frame.conversations : [...state.folder.items, ...frame.conversations.filter((s) => !state.folder.items.some((i) => i.id === s.id))],
          next: frame.next_cursor,
          loaded: true,
        },
      };
    case "folder_changed": {
      const items = state.folder.items.filter((s) => s.id !== (frame.removed || (frame.added && frame.added.id)));
      if (frame.added) items.unshift(frame.added);
      return { ...state, folder: { ...state.folder, items } };
    }
    case "targets":
      return { ...state, targets: { conversation_id: frame.conversation_id, groups: frame.groups || [], operators: frame.operators || [] } };
    case "error":
      if (frame.client_id && frame.conversation_id) {
        const failed = withConversation(state, frame.conversation_id, (c) => ({
          ...c,
          messages: c.messages.map((m) => (m.key === frame.client_id ? { ...m, status: "failed" } : m)),
        }));
        return { ...failed, error: { code: frame.code, message: frame.message } };
      }
      return { ...state, error: { code: frame.code, message: frame.message } };
    default:
      return state;
  }
}

function act(state, event) {
  switch (event.action) {
    case "connection":
      return { ...state, connection: event.status, phase: event.status === "stopped" ? "stopped" : state.phase === "signin" ? "connecting" : state.phase };
    case "signin":
      return { ...initial(), phase: "signin", error: event.error || null };
    case "select": {
      const next = { ...state, selected: event.id, tab: "chats", targets: null };
      return withConversation(next, event.id, (c) => ({ ...c, unread: 0 }));
    }
    case "tab":
      return { ...state, tab: event.tab };
    case "send":
      return withConversation(state, event.id, (c) => ({
        ...c,
        messages: [
          ...c.messages,
          {
            key: event.clientId,
            seq: null,
            author: { kind: "operator", name: state.me ? state.me.name : "" },
            text: event.text,
            at: event.at,
            status: "sending",
            ...(event.attachment ? { attachment: event.attachment, progress: 0 } : {}),
          },
        ],
      }));
    case "progress":
      return withConversation(state, event.id, (c) => ({ ...c, messages: c.messages.map((m) => (m.key === event.clientId ? { ...m, progress: event.fraction, attachment: { ...m.attachment, ...(event.attachment || {}) } } : m)) }));
    case "upload_failed":
      return withConversation(state, event.id, (c) => ({ ...c, messages: c.messages.map((m) => (m.key === event.clientId ? { ...m, status: "failed", failure: event.code } : m)) }));
    case "dismiss": {
      const conversations = { ...state.conversations };
      delete conversations[event.id];
      const order = state.order.filter((id) => id !== event.id);
      return { ...state, conversations, order, selected: state.selected === event.id ? order[0] ?? null : state.selected };
    }
    case "tick": {
      let changed = false;
      const conversations = {};
      for (const [id, c] of Object.entries(state.conversations)) {
        if (c.typingUntil && c.typingUntil <= event.now) {
          conversations[id] = { ...c, typingUntil: 0 };
          changed = true;
        } else conversations[id] = c;
      }
      const offers = state.offers.filter((o) => o.until > event.now - 2000); // the server withdraws; this only tidies
      if (!changed && offers.length === state.offers.length) return state;
      return { ...state, conversations, offers };
    }
    case "targets_closed":
      return { ...state, targets: null };
    case "clear_error":
      return { ...state, error: null };
    default:
      return state;
  }
}

function assigned(state, frame) {
  const id = frame.conversation_id;
  const mine = state.me && frame.operator.id === state.me.id;
  const offers = state.offers.filter((o) => o.id !== id);
  if (!mine) {
    return withConversation(known({ ...state, offers }, id), id, (c) => ({ ...c, summary: frame.conversation || c.summary, messages: add(c.messages, notice(frame, "assigned_other", frame.operator.name)) }));
  }
  const existing = state.conversations[id];
  const listed = state.order.includes(id);
  const conversation = existing
    ? { ...existing, summary: frame.conversation || existing.summary, hidden: false, ended: false, closed: false, transferredTo: null }
    : held(frame.conversation);
  conversation.messages = add(conversation.messages, notice(frame, "assigned", frame.operator.name));
  if (!listed) conversation.unread = 0; // it opens: its history is being read
  return {
    ...state,
    offers,
    conversations: { ...state.conversations, [id]: conversation },
    order: listed ? state.order : [...state.order, id],
    selected: listed ? state.selected : id, // a conversation just taken is the one to answer
    folder: { ...state.folder, items: state.folder.items.filter((s) => s.id !== id) },
  };
}

function message(state, frame) {
  const id = frame.conversation_id;
  state = known(state, id);
  const c = state.conversations[id];
  if (c.messages.some((m) => m.seq === frame.seq)) return state;
  const entry = { key: `s${frame.seq}`, seq: frame.seq, author: frame.author, text: frame.text, at: frame.at, status: "sent" };
  if (frame.attachment) entry.attachment = frame.attachment;
  if (frame.type === "bot") entry.options = (frame.options || []).map((o) => o.label);
  // Stored messages go before the operator's own still on their way.
  const pendingAt = c.messages.findIndex((m) => m.status === "sending");
  const messages = pendingAt < 0 ? [...c.messages, entry] : [...c.messages.slice(0, pendingAt), entry, ...c.messages.slice(pendingAt)];
  const fromVisitor = frame.author.kind === "visitor";
  const unread = fromVisitor && state.selected !== id ? c.unread + 1 : c.unread;
  return {
    ...state,
    conversations: { ...state.conversations, [id]: { ...c, messages, unread, typingUntil: fromVisitor ? 0 : c.typingUntil, idleWarning: fromVisitor ? null : c.idleWarning } },
  };
}

/** `entry` after `messages`, unless one with its `seq` is there already (a replay). */
function add(messages, entry) {
  return entry.seq != null && messages.some((m) => m.seq === entry.seq) ? messages : [...messages, entry];
}

function notice(frame, kind, name = "") {
  return { key: frame.seq != null ? `n${frame.seq}` : `n-${kind}-${name}`, seq: frame.seq ?? null, notice: kind, name, status: "sent" };
}

/** The conversations with visitor messages the operator has not looked at, summed. */
export function unreadTotal(state) {
  return Object.values(state.conversations).reduce((sum, c) => sum + (c.hidden ? 0 : c.unread), 0);
}
