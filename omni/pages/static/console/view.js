// The operator console's DOM: draws a state (state.js), and turns what the operator does into
// calls of `actions` (main.js). Text is always text (dom.js): nothing a visitor or an operator
// wrote becomes markup.
//
// - Lists (offers, conversations, the folder) are keyed: an element is made once per item and
//   updated in place, so the focus and a countdown survive the next render.
// - The open conversation's log is a `role="log"` live region, each message added once; the
//   composer is made once per conversation, so what the operator is typing stays.
// - Offers are announced (an assertive live region) — with a sound and a desktop notification,
//   which main.js plays.

import { append, confirmAfter, fill, h, syncLog } from "../webchat/dom.js";
import { showStatus } from "../webchat/files.js";
import { SigninScreen } from "./signin.js";

export class ConsoleView {
  constructor(root, t, lang, actions) {
    this.root = root;
    this.t = t;
    this.lang = lang;
    this.actions = actions;
    this.shown = null; // the screen: signin | console
    this.open = null; // the conversation shown in the main pane
    this.rendered = new Map(); // message key -> element, for the open conversation
    this.offerEls = new Map();
    this.chatEls = new Map();
    this.folderEls = new Map();
  }

  render(state) {
    const screen = state.phase === "signin" || state.phase === "stopped" ? "signin" : "console";
    if (screen !== this.shown) {
      this.shown = screen;
      this.open = null;
      if (screen === "signin") this.signinScreen();
      else this.consoleScreen();
    }
    if (screen === "signin") this.updateSignin(state);
    else this.update(state);
  }

  // -- signing in -------------------------------------------------------------------------------

  signinScreen() {
    this.signin = new SigninScreen(this.root, this.t, this.t.title, (user, password) => this.actions.signIn(user, password));
  }

  updateSignin(state) {
    this.signin.update(state.error, state.signingIn);
  }

  // -- the console ------------------------------------------------------------------------------

  consoleScreen() {
    const t = this.t;
    this.name = h("span", { class: "c-me" });
    this.statusSelect = h(
      "select",
      { id: "c-status", onchange: () => this.statusChanged() },
      h("option", { value: "available" }, t.available),
      h("option", { value: "paused" }, t.paused),
    );
    this.reasonSelect = h("select", { id: "c-reason", "aria-label": t.pause_reason, onchange: () => this.statusChanged() });
    this.reasonBox = h("span", { class: "c-reason", hidden: true }, this.reasonSelect);
    const top = h(
      "header",
      { class: "c-top" },
      h("h1", { class: "c-title" }, t.title),
      h("span", { class: "c-status" }, h("label", { for: "c-status" }, t.status_label), this.statusSelect, this.reasonBox),
      this.name,
      h("button", { type: "button", class: "c-password", "aria-haspopup": "dialog", onclick: () => this.passwordDialog() }, t.change_password),
      h("button", { type: "button", class: "c-signout", onclick: () => this.actions.signOut() }, t.sign_out),
    );
    this.banner = h("p", { class: "c-banner", role: "status", hidden: true });
    this.errorLine = h("p", { class: "c-error c-global-error", role: "alert" });
    this.offerList = h("ul", { class: "c-offers-list" });
    this.offersBox = h("section", { class: "c-offers", "aria-labelledby": "c-offers-title", hidden: true }, h("h2", { id: "c-offers-title" }, t.offers), this.offerList);
    this.announcer = h("p", { class: "c-sr", "aria-live": "assertive" });
    this.tabs = {};
    const tablist = h("div", { class: "c-tabs", role: "tablist", "aria-label": t.chats });
    this.panels = {};
    for (const [key, label] of [["chats", t.chats], ["folder", t.folder], ["history", t.history]]) {
      const tab = h("button", { type: "button", role: "tab", id: `c-tab-${key}`, "aria-controls": `c-panel-${key}`, onclick: () => this.actions.tab(key), onkeydown: (e) => this.tabKeys(e, key) }, label);
      this.tabs[key] = tab;
      tablist.append(tab);
      this.panels[key] = h("div", { class: "c-panel", role: "tabpanel", id: `c-panel-${key}`, "aria-labelledby": `c-tab-${key}` });
    }
    this.chatList = h("ul", { class: "c-chat-list" });
    this.chatEmpty = h("p", { class: "c-empty" }, t.no_chats);
    append(this.panels.chats, [this.chatList, this.chatEmpty]);
    this.folderList = h("ul", { class: "c-chat-list" });
    this.folderEmpty = h("p", { class: "c-empty" }, t.folder_empty);
    this.folderMore = h("button", { type: "button", class: "c-more", hidden: true, onclick: () => this.actions.folderMore() }, t.more);
    append(this.panels.folder, [this.folderList, this.folderEmpty, this.folderMore]);
    this.historyPanel();
    const side = h("nav", { class: "c-side", "aria-label": t.chats }, this.offersBox, tablist, ...Object.values(this.panels));
    this.mainPane = h("main", { class: "c-main", id: "c-main" });
    this.visitorPane = h("aside", { class: "c-visitor", "aria-label": t.visitor });
    this.root.replaceChildren(top, this.banner, this.errorLine, this.announcer, h("div", { class: "c-body" }, side, this.mainPane, this.visitorPane));
  }

  /** The owner changes their password: the current one, the new one twice. */
  passwordDialog() {
    const t = this.t;
    if (this.passwordBox) return this.passwordBox.querySelector("input").focus();
    const field = (id, label, autocomplete) => {
      const input = h("input", { id, type: "password", autocomplete, required: true, maxlength: 256 });
      return [input, h("p", { class: "c-field" }, h("label", { for: id }, label), input)];
    };
    const [old, oldField] = field("c-old-password", t.old_password, "current-password");
    const [fresh, freshField] = field("c-new-password", t.new_password, "new-password");
    const [again, againField] = field("c-repeat-password", t.repeat_password, "new-password");
    const message = h("p", { class: "c-error", role: "alert" });
    const close = () => {
      this.passwordBox.remove();
      this.passwordBox = null;
    };
    this.passwordBox = h(
      "form",
      {
        class: "c-password-box",
        role: "dialog",
        "aria-label": t.change_password,
        onkeydown: (e) => e.key === "Escape" && close(),
        onsubmit: async (event) => {
          event.preventDefault();
          if (fresh.value !== again.value) return fill(message, t.passwords_differ);
          const problem = await this.actions.changePassword(old.value, fresh.value);
          if (problem) return fill(message, problem);
          close();
          fill(this.errorLine, "");
          fill(this.announcer, t.password_changed);
        },
      },
      h("h2", {}, t.change_password),
      oldField,
      freshField,
      againField,
      message,
      h("p", { class: "c-buttons" }, h("button", { type: "submit", class: "c-primary" }, t.save_password), h("button", { type: "button", onclick: close }, t.cancel)),
    );
    this.root.querySelector(".c-top").after(this.passwordBox);
    old.focus();
  }

  tabKeys(event, key) {
    const keys = ["chats", "folder", "history"];
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (!step) return;
    event.preventDefault();
    const next = keys[(keys.indexOf(key) + step + keys.length) % keys.length];
    this.actions.tab(next);
    this.tabs[next].focus();
  }

  statusChanged() {
    const status = this.statusSelect.value;
    this.actions.status(status, status === "paused" ? this.reasonSelect.value || null : null);
  }

  update(state) {
    const t = this.t;
    const me = state.me;
    fill(this.name, me ? me.name : "");
    this.banner.hidden = state.connection === "online" || state.phase !== "ready";
    fill(this.banner, state.connection === "offline" ? t.offline : t.connecting);
    if (state.phase !== "ready") this.banner.hidden = false;
    fill(this.errorLine, state.error && !state.error.client_id ? state.error.message || t.error : "");
    if (me) {
      this.statusSelect.value = me.status === "available" ? "available" : "paused";
      const reasons = state.pauseReasons || [];
      this.reasonBox.hidden = me.status !== "paused" || reasons.length === 0;
      const options = [["", t.no_reason], ...reasons.map((r) => [r.id, r.label])];
      if (this.reasonSelect.options.length !== options.length) {
        fill(this.reasonSelect, options.map(([value, label]) => h("option", { value }, label)));
      }
      this.reasonSelect.value = me.reason || "";
    }
    this.updateOffers(state);
    const waiting = state.folder.items.length;
    fill(this.tabs.folder, t.folder, waiting ? h("span", { class: "c-count" }, ` (${waiting}${state.folder.next ? "+" : ""})`) : null);
    for (const key of Object.keys(this.tabs)) {
      const selected = state.tab === key;
      this.tabs[key].setAttribute("aria-selected", String(selected));
      this.tabs[key].tabIndex = selected ? 0 : -1;
      this.panels[key].hidden = !selected;
    }
    this.updateChats(state);
    this.updateFolder(state);
    this.updateMain(state);
  }

  // -- offers -----------------------------------------------------------------------------------

  updateOffers(state) {
    const t = this.t;
    this.offersBox.hidden = state.offers.length === 0;
    keyed(
      this.offerList,
      state.offers,
      (o) => o.id,
      (o) => {
        const countdown = h("span", { class: "c-countdown" });
        const el = h(
          "li",
          { class: "c-offer", "data-id": o.id },
          h("strong", {}, o.conversation.visitor.name, channelLabel(o.conversation, t)),
          h("span", { class: "c-meta" }, `${this.serviceName(o.conversation.service_id)} · ${o.conversation.ticket} · ${t.waited(o.conversation.waited || 0)}`),
          countdown,
          h("button", { type: "button", class: "c-primary c-accept", onclick: () => this.actions.accept(o.id) }, t.accept),
        );
        el.countdown = countdown;
        fill(this.announcer, `${t.new_offer}: ${o.conversation.visitor.name}`);
        return el;
      },
      (el, o) => fill(el.countdown, t.seconds_left(Math.max(0, Math.ceil((o.until - Date.now()) / 1000)))),
    );
  }

  serviceName(id) {
    return (this.services && this.services[id]) || `#${id}`;
  }

  // -- lists ------------------------------------------------------------------------------------

  updateChats(state) {
    const t = this.t;
    const items = state.order.map((id) => ({ id, c: state.conversations[id] }));
    this.chatEmpty.hidden = items.length > 0;
    fill(this.chatEmpty, state.me && state.me.status === "available" ? t.no_chats_available : t.no_chats);
    keyed(
      this.chatList,
      items,
      (item) => item.id,
      (item) => {
        const badge = h("span", { class: "c-badge" });
        const status = h("span", { class: "c-meta" });
        const el = h(
          "li",
          {},
          h("button", { type: "button", class: "c-chat", "data-id": item.id, onclick: () => this.actions.select(item.id) }, h("span", { class: "c-chat-name" }, item.c.summary.visitor.name, channelLabel(item.c.summary, t)), status, badge),
        );
        el.badge = badge;
        el.status = status;
        el.button = el.firstChild;
        return el;
      },
      (el, item) => {
        const c = item.c;
        fill(el.badge, c.unread ? String(c.unread) : "");
        el.badge.hidden = !c.unread;
        el.badge.setAttribute("aria-label", c.unread ? t.unread(c.unread) : "");
        fill(el.status, c.closed || c.ended ? t.ended_operator() : c.transferredTo ? t.transferred(c.transferredTo.name) : c.summary.ticket);
        el.button.setAttribute("aria-current", String(state.selected === item.id));
      },
    );
  }

  updateFolder(state) {
    const t = this.t;
    const items = state.folder.items;
    this.folderEmpty.hidden = items.length > 0 || !state.folder.loaded;
    this.folderMore.hidden = !state.folder.next;
    keyed(
      this.folderList,
      items,
      (s) => s.id,
      (s) =>
        h(
          "li",
          { class: "c-folder-item", "data-id": s.id },
          h("span", { class: "c-chat-name" }, s.visitor.name),
          h("span", { class: "c-meta" }, `${this.serviceName(s.service_id)} · ${s.ticket} · ${new Date(s.created_at).toLocaleString(this.lang, { dateStyle: "short", timeStyle: "short" })}`),
          h("button", { type: "button", class: "c-resume", onclick: () => this.actions.resume(s.id) }, t.resume),
        ),
      () => {},
    );
  }

  historyPanel() {
    const t = this.t;
    this.historyQuery = h("input", { id: "c-search", type: "search", maxlength: 200 });
    this.historyList = h("ul", { class: "c-history-list" });
    this.historyEmpty = h("p", { class: "c-empty", hidden: true }, t.history_empty);
    this.transcriptBox = h("section", { class: "c-transcript", hidden: true, "aria-label": t.transcript });
    const form = h(
      "form",
      {
        class: "c-search",
        role: "search",
        onsubmit: (event) => {
          event.preventDefault();
          this.actions.search(this.historyQuery.value.trim());
        },
      },
      h("label", { for: "c-search" }, t.search),
      h("span", { class: "c-search-row" }, this.historyQuery, h("button", { type: "submit" }, t.search_button)),
    );
    append(this.panels.history, [form, this.historyList, this.historyEmpty, this.transcriptBox]);
  }

  /** The operator's own conversations found (summaries). */
  showHistory(items) {
    const t = this.t;
    this.historyEmpty.hidden = items.length > 0;
    fill(
      this.historyList,
      items.map((s) =>
        h(
          "li",
          {},
          h(
            "button",
            { type: "button", class: "c-chat", onclick: () => this.actions.transcript(s.id) },
            h("span", { class: "c-chat-name" }, s.visitor.name),
            h("span", { class: "c-meta" }, `${s.ticket} · ${new Date(s.created_at).toLocaleString(this.lang, { dateStyle: "short", timeStyle: "short" })}`),
          ),
        ),
      ),
    );
  }

  /** A read-only transcript: [{author, text, at}] of the conversation `summary`. */
  showTranscript(summary, lines) {
    const t = this.t;
    const close = h("button", { type: "button", onclick: () => (this.transcriptBox.hidden = true) }, t.close_transcript);
    fill(
      this.transcriptBox,
      h("h3", { tabindex: "-1" }, `${t.transcript} · ${summary.visitor.name} · ${summary.ticket}`),
      h(
        "ol",
        { class: "c-transcript-lines" },
        lines.map((line) => h("li", {}, h("span", { class: "c-author" }, line.author), h("p", { class: "c-text" }, line.text))),
      ),
      close,
    );
    this.transcriptBox.hidden = false;
    this.transcriptBox.querySelector("h3").focus();
  }

  // -- the open conversation --------------------------------------------------------------------

  updateMain(state) {
    const t = this.t;
    const id = state.selected;
    const c = id ? state.conversations[id] : null;
    if (!c) {
      if (this.open !== null || !this.mainPane.firstChild) {
        this.open = null;
        this.rendered.clear();
        fill(this.mainPane, h("p", { class: "c-empty" }, t.no_selection));
        fill(this.visitorPane);
      }
      return;
    }
    if (this.open !== id) {
      this.open = id;
      this.rendered.clear();
      this.buildMain(c);
      this.buildVisitor(c.summary);
    }
    const over = c.ended || c.closed || !!c.transferredTo;
    this.transferButton.hidden = over;
    this.endButton.hidden = over;
    this.dismissButton.hidden = !over;
    this.composerBox.hidden = over;
    fill(this.typingLine, c.typingUntil > 0 ? t.typing(c.summary.visitor.name) : "");
    this.warning.hidden = c.idleWarning === null;
    if (c.idleWarning !== null) fill(this.warning, t.idle_warning(c.idleWarning));
    this.updateLog(c);
    this.updateTargets(state);
  }

  buildMain(c) {
    const t = this.t;
    const s = c.summary;
    this.transferButton = h("button", { type: "button", class: "c-transfer", "aria-haspopup": "dialog", onclick: () => this.actions.targets(this.open) }, t.transfer);
    this.endButton = h("button", { type: "button", class: "c-end", onclick: () => this.confirmEnd() }, t.end);
    this.dismissButton = h("button", { type: "button", class: "c-dismiss", onclick: () => this.actions.dismiss(this.open) }, t.dismiss);
    this.log = h("ol", { class: "c-items" });
    const region = h("div", { class: "c-log", role: "log", "aria-live": "polite", "aria-label": s.visitor.name, tabindex: "0" }, this.log);
    region.addEventListener("dragover", (event) => event.preventDefault());
    region.addEventListener("drop", (event) => {
      event.preventDefault();
      for (const f of event.dataTransfer ? event.dataTransfer.files : []) this.actions.attach(this.open, f);
    });
    this.typingLine = h("p", { class: "c-typing" });
    this.warning = h("p", { class: "c-warning", hidden: true });
    this.targetsBox = h("div", { class: "c-targets", hidden: true });
    this.input = h("textarea", {
      id: "c-compose",
      rows: 2,
      maxlength: 8000,
      "aria-label": t.message_label,
      placeholder: t.message_label,
      onkeydown: (event) => {
        if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          submit();
        }
      },
      oninput: () => this.actions.typing(this.open),
    });
    const submit = () => {
      const text = this.input.value.trim();
      if (!text) return;
      this.input.value = "";
      this.actions.send(this.open, text);
      this.input.focus();
    };
    this.emojiPanel = h("div", { class: "omni-emoji-panel", hidden: true });
    this.emojiButton = h("button", { type: "button", class: "c-emoji-button", "aria-label": t.emoji, "aria-expanded": "false", onclick: () => this.toggleEmoji() }, "🙂");
    // A file: by the button, dropped on the conversation, or pasted into the reply box.
    const picker = h("input", { type: "file", class: "omni-file-input", tabindex: "-1", "aria-hidden": "true", onchange: () => { for (const f of picker.files) this.actions.attach(this.open, f); picker.value = ""; } });
    const attach = h("button", { type: "button", class: "c-emoji-button c-attach", "aria-label": t.attach, title: t.attach, onclick: () => picker.click() }, "📎");
    this.input.addEventListener("paste", (event) => {
      const pasted = [...(event.clipboardData ? event.clipboardData.files : [])];
      if (pasted.length) {
        event.preventDefault();
        for (const f of pasted) this.actions.attach(this.open, f);
      }
    });
    this.composerBox = h(
      "form",
      { class: "c-composer", onsubmit: (event) => (event.preventDefault(), submit()) },
      this.emojiPanel,
      this.emojiButton,
      picker,
      attach,
      this.input,
      h("button", { type: "submit", class: "c-primary" }, t.send),
    );
    fill(
      this.mainPane,
      h(
        "div",
        { class: "c-conversation-head" },
        h("h2", { class: "c-conversation-title" }, s.visitor.name, h("span", { class: "c-meta" }, ` · ${s.ticket}`)),
        this.transferButton,
        this.endButton,
        this.dismissButton,
      ),
      this.targetsBox,
      region,
      this.typingLine,
      this.warning,
      this.composerBox,
    );
    this.input.focus();
  }

  buildVisitor(s) {
    const t = this.t;
    const v = s.visitor;
    const rows = [
      [t.name, v.name, v.verified ? h("span", { class: "c-verified" }, ` ✔ ${t.verified}`) : null],
      v.email ? [t.email, v.email] : null,
      v.phone ? [t.phone, v.phone] : null,
      // What the visitor gave or the bot collected; an e-mail or phone shown above is not repeated.
      ...Object.entries(v.fields || {})
        .filter(([key, value]) => !((key === "email" || key === "phone") && v[key] === value))
        .map(([key, value]) => [key, String(value)]),
      [t.service, this.serviceName(s.service_id)],
      [t.channel, channelName(s, t)],
      [t.ticket, s.ticket],
      s.answered_at ? [t.waited_label, duration((new Date(s.answered_at) - new Date(s.created_at)) / 1000)] : null,
    ].filter(Boolean);
    fill(
      this.visitorPane,
      h("h2", {}, t.visitor),
      h(
        "dl",
        { class: "c-facts" },
        rows.map(([term, value, extra]) => h("div", {}, h("dt", {}, term), h("dd", {}, value, extra || null))),
      ),
    );
  }

  updateLog(c) {
    syncLog(this.log, this.rendered, c.messages, (m) => this.messageElement(m), (el, m) => this.setStatus(el, m));
  }


  messageElement(m) {
    const t = this.t;
    if (m.notice) {
      const text = typeof t[m.notice] === "function" ? t[m.notice](m.name || "") : t[m.notice] || "";
      return h("li", { class: "c-notice", "data-status": m.status }, text);
    }
    const mine = m.author.kind === "operator";
    const bot = m.author.kind === "bot";
    const meta = h("span", { class: "c-time" });
    const fileBox = m.attachment ? h("div", { class: "c-text" }) : null;
    const el = h(
      "li",
      { class: `c-message ${mine ? "c-mine" : "c-theirs"}${bot ? " c-bot" : ""}` },
      h("span", { class: "c-author" }, mine ? m.author.name || t.you : bot ? t.bot : m.author.name || ""),
      fileBox || h("p", { class: "c-text" }, m.text),
      // The options the bot offered, for the operator to read (the visitor's answer follows).
      bot && m.options && m.options.length ? h("p", { class: "c-bot-options" }, t.bot_options(m.options)) : null,
      meta,
    );
    el.meta = meta;
    el.file = fileBox;
    this.setStatus(el, m);
    return el;
  }

  setStatus(el, m) {
    const t = this.t;
    el.dataset.status = m.status;
    if (!el.meta) return;
    showStatus(el, m, t, this.lang, () => this.actions.fileToken());
  }

  updateTargets(state) {
    const t = this.t;
    const targets = state.targets && state.targets.conversation_id === this.open ? state.targets : null;
    if (!targets) {
      this.targetsBox.hidden = true;
      this.shownTargets = null;
      return;
    }
    if (this.shownTargets === targets) return;
    this.shownTargets = targets;
    const groups = targets.groups.map((g) => h("li", {}, h("button", { type: "button", onclick: () => this.actions.transfer(this.open, { group_id: g.id }) }, g.name)));
    const operators = targets.operators.map((o) =>
      h("li", {}, h("button", { type: "button", onclick: () => this.actions.transfer(this.open, { operator_id: o.id }) }, o.name, h("span", { class: "c-meta" }, ` · ${t.free_slots(o.free)}`))),
    );
    fill(
      this.targetsBox,
      h("h3", { tabindex: "-1" }, t.transfer),
      h("div", { class: "c-target-columns" },
        h("section", {}, h("h4", {}, t.transfer_to_group), h("ul", {}, groups)),
        h("section", {}, h("h4", {}, t.transfer_to_operator), operators.length ? h("ul", {}, operators) : h("p", { class: "c-empty" }, t.transfer_none)),
      ),
      h("button", { type: "button", onclick: () => this.actions.closeTargets() }, t.cancel),
    );
    this.targetsBox.hidden = false;
    this.targetsBox.querySelector("h3").focus();
  }

  confirmEnd() {
    const t = this.t;
    const id = this.open;
    const box = confirmAfter(this.endButton, { question: t.end_confirm, yesLabel: t.end_yes, noLabel: t.end_no, className: "c-confirm", yesClass: "c-danger" }, () => this.actions.end(id));
    if (!box) return;
    this.endButton.after(box);
    box.querySelector("button:last-child").focus();
  }


  async toggleEmoji() {
    const open = this.emojiPanel.hidden;
    this.emojiPanel.hidden = !open;
    this.emojiButton.setAttribute("aria-expanded", String(open));
    if (!open) return this.emojiButton.focus();
    if (!this.emojiPanel.firstChild) {
      const { picker } = await import("../webchat/emoji.js");
      append(this.emojiPanel, [
        picker(
          this.lang,
          (emoji) => {
            const input = this.input;
            const at = input.selectionStart ?? input.value.length;
            input.value = input.value.slice(0, at) + emoji + input.value.slice(input.selectionEnd ?? at);
            input.selectionStart = input.selectionEnd = at + emoji.length;
            this.toggleEmoji();
            input.focus();
          },
          () => this.toggleEmoji(),
        ),
      ]);
    }
    const first = this.emojiPanel.querySelector('.omni-emoji[tabindex="0"]');
    if (first) first.focus();
  }
}

/** Make `container`'s children match `items`: one element per key, made once, updated always. */
function keyed(container, items, key, make, update) {
  const old = container.elements || new Map();
  const next = new Map();
  let previous = null;
  for (const item of items) {
    const k = key(item);
    let el = old.get(k);
    if (!el) el = make(item);
    update(el, item);
    next.set(k, el);
    if (previous ? previous.nextSibling !== el : container.firstChild !== el) {
      if (previous) previous.after(el);
      else container.prepend(el);
    }
    previous = el;
  }
  for (const [k, el] of old) if (!next.has(k)) el.remove();
  container.elements = next;
}

function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

/** The channel a conversation came through (issue 17), as the console names it: the
 * platform's name, or the WebChat's. */
export function channelName(summary, t) {
  const kind = summary.channel ? summary.channel.kind : "webchat";
  return t.channels[kind] || kind;
}

/** A small label beside a visitor's name for a conversation from a messaging channel (none
 * for the WebChat): the platform's name, as text. */
export function channelLabel(summary, t) {
  if (!summary.channel) return null;
  return h("span", { class: `c-channel c-channel-${summary.channel.kind}`, title: t.channel }, channelName(summary, t));
}
