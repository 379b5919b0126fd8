// The WebChat's screens, drawn from the state (state.js) into the page's #omni root.
//
// Rules of this module:
// - It reads the state and calls the `actions` it is given; it never talks to the server.
// - Elements are made with dom.js (text stays text); the palette is CSS custom properties.
// - The conversation log is a `role="log"` live region: each message is added once (keyed by
//   its seq or client_id) and screen readers announce it; status changes (queue position,
//   connection) go to a separate polite status region.
// - Focus moves on purpose: to the first field of the form, to the composer once the
//   conversation is open (and back to it when an option of the bot's is picked), to the
//   heading of the survey and of the closing screen.
// - The chatbot's question shows its options as buttons (a group named by the question) while
//   it waits for an answer, and only then; the composer then answers it, hinted for the kind of
//   answer asked (e-mail, phone, number).

import { append, confirmAfter, fill, h, syncLog } from "./dom.js";
import { showStatus } from "./files.js";
import { when } from "./i18n.js";
import { openQuestion } from "./state.js";
import { surveyForm } from "./survey.js";

const EMAIL = /^[^@\s,<>()]+@[^@\s,<>()]+\.[^@\s,<>()]+$/;
// The option that hands the visitor to a person (omni/domain/bot.py, PERSON).
const PERSON = "@person";
// How the composer asks for each kind of answer: its label's key, the virtual keyboard, what
// the browser may fill in, and the longest text the server takes.
const COMPOSER = {
  message: { label: "message_label", mode: null, autocomplete: null, max: 8000 },
  answer: { label: "answer_label", mode: null, autocomplete: null, max: 500 },
  email: { label: "email_answer", mode: "email", autocomplete: "email", max: 320 },
  phone: { label: "phone_answer", mode: "tel", autocomplete: "tel", max: 500 },
  number: { label: "number_answer", mode: "decimal", autocomplete: "off", max: 500 },
};

export class View {
  constructor(root, t, lang, actions) {
    this.root = root;
    this.t = t;
    this.lang = lang;
    this.actions = actions;
    this.phase = null;
    this.rendered = new Map(); // message key -> element
    this.questions = new Map(); // key of a bot message with options -> its element
    this.statusText = "";
    this.build();
  }

  build() {
    const t = this.t;
    // A picture that does not load is hidden (the avatar's initial stands in): never a broken
    // image in the header.
    this.logo = h("img", { class: "omni-logo", alt: "", hidden: true, onerror: () => (this.logo.hidden = true) });
    this.avatar = h("img", {
      class: "omni-avatar",
      alt: "",
      hidden: true,
      onerror: () => {
        this.avatar.hidden = true;
        this.initial.hidden = !this.initial.textContent;
      },
    });
    this.initial = h("span", { class: "omni-avatar omni-initial", "aria-hidden": "true", hidden: true });
    this.heading = h("h1", { class: "omni-title", id: "omni-title" });
    this.subtitle = h("p", { class: "omni-subtitle" });
    this.endButton = h("button", { type: "button", class: "omni-end", hidden: true, onclick: () => this.confirmEnd() }, t.end);
    this.header = h(
      "header",
      { class: "omni-header" },
      this.logo,
      this.avatar,
      this.initial,
      h("div", { class: "omni-heading" }, this.heading, this.subtitle),
      this.endButton,
    );
    this.status = h("p", { class: "omni-status", role: "status", "aria-live": "polite" });
    this.banner = h("p", { class: "omni-banner", role: "alert", hidden: true });
    this.main = h("main", { class: "omni-main", "aria-labelledby": "omni-title" });
    this.root.replaceChildren(this.header, this.banner, this.status, this.main);
  }

  setConfig(config) {
    this.config = config;
    const image = config.avatar && config.avatar.image;
    this.avatar.hidden = !image;
    if (image) this.avatar.src = image;
    // Without a picture, the avatar's initial (the name is said by the heading).
    const name = (config.avatar && config.avatar.name) || config.name || "";
    this.initial.hidden = !!image || !name;
    fill(this.initial, [...name][0] || "");
    this.logo.hidden = !config.logo;
    if (config.logo) this.logo.src = config.logo;
    fill(this.heading, config.name);
  }

  // -- one entry point: draw the state ----------------------------------------------------------

  render(state) {
    const t = this.t;
    this.banner.hidden = state.connection !== "offline";
    if (state.connection === "offline") fill(this.banner, t.offline);
    // The form stays while it is sent (and comes back with a refusal): what was typed stays.
    // The bot's conversation goes on into the queue on the same screen: nothing is redrawn at
    // the hand-off (what the visitor was typing stays).
    const screen = state.phase === "starting" ? "form" : state.phase === "bot" ? "queued" : state.phase;
    if (screen !== this.phase) {
      this.phase = screen;
      this.rendered.clear();
      this.screen(state);
    }
    this.update(state);
  }

  screen(state) {
    const t = this.t;
    // What belonged to the screen being replaced.
    this.log = this.typingLine = this.warning = this.sideName = this.sideTicket = null;
    this.formError = this.startButton = this.transcriptStatus = this.surveyError = null;
    this.composerInput = this.attachButton = null;
    this.questions.clear();
    switch (state.phase) {
      case "form":
      case "starting":
        fill(this.main, this.form(state));
        this.focusFirst(this.main);
        return;
      case "bot":
      case "queued":
      case "active":
      case "out_of_hours":
      case "ended":
        fill(this.main, this.conversation(state));
        if (state.phase !== "ended") this.composerInput.focus();
        return;
      case "survey":
        fill(this.main, this.conversation(state, false), this.surveyForm(state));
        this.surveyHeading.focus();
        return;
      case "closed":
        fill(this.main, this.conversation(state, false), this.closing(state));
        this.closingHeading.focus();
        return;
      case "resuming":
        fill(this.main, h("p", { class: "omni-wait" }, t.starting));
        return;
      case "unavailable":
        fill(this.main, h("p", { class: "omni-error" }, state.error && state.error.code === "superseded" ? t.superseded : t.unavailable));
        return;
      default:
        fill(this.main);
    }
  }

  update(state) {
    const t = this.t;
    fill(this.subtitle, state.operator ? t.operator_is(state.operator.name) : state.phase === "bot" ? t.bot_is : "");
    this.endButton.hidden = !["bot", "queued", "active"].includes(state.phase);
    this.setStatus(this.statusLine(state));
    if (this.formError) {
      fill(this.formError, state.error ? this.errorText(state.error) : "");
      this.startButton.disabled = state.phase === "starting";
      fill(this.startButton, state.phase === "starting" ? t.starting : t.start);
    }
    if (this.log) {
      this.updateLog(state);
      this.updateQuestion(state);
    }
    if (this.typingLine) {
      const typing = state.typingUntil > 0 && state.operator;
      fill(this.typingLine, typing ? t.typing(state.operator.name) : "");
    }
    if (this.sideName) {
      fill(this.sideName, state.visitorName || "");
      fill(this.sideTicket, state.ticket || "");
    }
    if (this.warning) {
      this.warning.hidden = !state.idleWarning;
      if (state.idleWarning) fill(this.warning, t.idle_warning(state.idleWarning.closesIn));
    }
    if (this.transcriptStatus) {
      const { sent, error } = state.transcript;
      fill(this.transcriptStatus, error ? t.transcript_error[error] || t.error_generic : sent.length ? t.transcript_sent(sent[sent.length - 1]) : "");
    }
    if (this.surveyError) fill(this.surveyError, state.error && state.error.code === "invalid_survey" ? state.error.message : "");
  }

  statusLine(state) {
    const t = this.t;
    if (state.phase === "queued") {
      const parts = [state.position ? t.queued(state.position) : t.queued_waiting];
      if (state.estimatedWait !== null && state.estimatedWait !== undefined) parts.push(t.estimated_wait(state.estimatedWait));
      return parts.join(" ");
    }
    return "";
  }

  setStatus(text) {
    if (text !== this.statusText) {
      this.statusText = text;
      fill(this.status, text);
    }
  }

  errorText(error) {
    const t = this.t;
    if (error.code === "rate_limited") return t.error_rate_limited;
    if (error.code.startsWith("captcha")) return t.error_captcha;
    if (error.code === "message_limit") return t.message_limit;
    return error.message || t.error_generic;
  }

  // -- the identification form (F7, F8, F19) ------------------------------------------------------

  form(state) {
    const t = this.t;
    const config = state.config;
    const required = config.required_fields || {};
    const field = (name, label, type, isRequired, autocomplete) => {
      const input = h("input", { id: `omni-${name}`, name, type, required: isRequired, autocomplete, maxlength: name === "name" ? 200 : 320, "aria-describedby": `omni-${name}-error` });
      const error = h("span", { class: "omni-field-error", id: `omni-${name}-error` });
      return {
        input,
        error,
        el: h(
          "p",
          { class: "omni-field" },
          h("label", { for: `omni-${name}` }, label, isRequired ? "" : h("span", { class: "omni-optional" }, ` (${t.optional})`)),
          input,
          error,
        ),
      };
    };
    const name = field("name", t.name, "text", true, "name");
    const email = field("email", t.email, "email", !!required.email, "email");
    const phone = field("phone", t.phone, "tel", !!required.phone, "tel");
    this.captchaBox = h("div", { class: "omni-captcha" });
    this.formError = h("p", { class: "omni-error", role: "alert" });
    this.startButton = h("button", { type: "submit", class: "omni-primary" }, t.start);
    const form = h(
      "form",
      {
        class: "omni-form",
        "aria-describedby": "omni-form-intro",
        novalidate: true,
        onsubmit: (event) => {
          event.preventDefault();
          const problems = [
            [name, name.input.value.trim() ? "" : t.required],
            [email, email.input.value.trim() ? (EMAIL.test(email.input.value.trim()) ? "" : t.invalid_email) : required.email ? t.required : ""],
            [phone, phone.input.value.trim() || !required.phone ? "" : t.required],
          ];
          let first = null;
          for (const [f, problem] of problems) {
            fill(f.error, problem);
            f.input.setAttribute("aria-invalid", problem ? "true" : "false");
            if (problem && !first) first = f.input;
          }
          if (first) {
            first.focus();
            return;
          }
          this.actions.start({
            name: name.input.value.trim(),
            email: email.input.value.trim() || null,
            phone: phone.input.value.trim() || null,
          });
        },
      },
      h("p", { class: "omni-intro", id: "omni-form-intro" }, t.form_intro),
      name.el,
      email.el,
      phone.el,
      this.captchaBox,
      this.formError,
      this.startButton,
    );
    this.actions.formShown(this.captchaBox);
    return form;
  }

  // -- the conversation -----------------------------------------------------------------------------

  conversation(state, composer = true) {
    const t = this.t;
    this.sideName = h("span", { class: "omni-visitor-name" });
    this.sideTicket = h("span", { class: "omni-ticket-number" });
    // The guide's side panel: who the visitor is and their ticket number.
    const side = h(
      "aside",
      { class: "omni-side", "aria-label": t.ticket },
      h("dl", {}, h("div", {}, h("dt", {}, t.you), h("dd", {}, this.sideName)), h("div", {}, h("dt", {}, t.ticket), h("dd", {}, this.sideTicket))),
    );
    // The live region is a box around the list: `role="log"` on the list itself would take
    // its list semantics away (and its items would be orphans to a screen reader).
    this.log = h("ol", { class: "omni-items" });
    const region = h("div", { class: "omni-log", role: "log", "aria-live": "polite", "aria-label": t.title, tabindex: "0" }, this.log);
    if (composer && this.config && this.config.attachments) {
      // Files dropped on the conversation are sent like picked ones.
      region.addEventListener("dragover", (event) => event.preventDefault());
      region.addEventListener("drop", (event) => {
        event.preventDefault();
        for (const f of event.dataTransfer ? event.dataTransfer.files : []) this.actions.attach(f);
      });
    }
    this.typingLine = h("p", { class: "omni-typing", "aria-live": "off" });
    this.warning = h("p", { class: "omni-warning", role: "alert", hidden: true });
    const parts = [];
    if (state.phase === "out_of_hours") {
      parts.push(
        h(
          "section",
          { class: "omni-closed-notice" },
          h("h2", {}, t.out_of_hours_title),
          h("p", {}, state.outOfHoursMessage || ""),
          state.opensAt ? h("p", {}, t.opens_at(when(state.opensAt, this.lang))) : null,
          h("p", {}, t.leave_message),
        ),
      );
    }
    parts.push(region, this.typingLine, this.warning);
    if (composer && state.phase !== "ended") parts.push(this.composer());
    else this.composerInput = null;
    return h("div", { class: "omni-conversation" }, side, h("div", { class: "omni-thread" }, ...parts));
  }

  updateLog(state) {
    syncLog(this.log, this.rendered, state.messages, (m) => this.messageElement(m), (el, m) => this.setMessageStatus(el, m));
  }


  /** The options of the bot's open question, and nobody else's; the composer asks for its kind
   * of answer; no files while the bot talks. */
  updateQuestion(state) {
    const open = openQuestion(state);
    for (const [key, el] of this.questions) {
      const shown = !!open && open.key === key;
      if (shown === !el.options.hidden) continue;
      el.options.hidden = !shown;
      // The buttons take room under the question: the whole of it in view.
      if (shown) el.scrollIntoView({ block: "end" });
    }
    if (this.attachButton) this.attachButton.hidden = state.phase === "bot";
    if (!this.composerInput) return;
    const kind = state.phase !== "bot" ? "message" : COMPOSER[open && open.bot.input] ? open.bot.input : "answer";
    if (kind === this.composerKind) return;
    this.composerKind = kind;
    const how = COMPOSER[kind];
    const input = this.composerInput;
    input.placeholder = this.t[how.label];
    input.setAttribute("aria-label", this.t[how.label]);
    input.maxLength = how.max;
    for (const [name, value] of [["inputmode", how.mode], ["autocomplete", how.autocomplete]]) {
      if (value) input.setAttribute(name, value);
      else input.removeAttribute(name);
    }
  }

  messageElement(message) {
    const t = this.t;
    if (message.bot) return this.botElement(message);
    if (message.notice) {
      const text = typeof t[message.notice] === "function" ? t[message.notice](message.name || "") : t[message.notice] || "";
      return h("li", { class: "omni-notice", "data-seq": message.seq, "data-status": message.status }, text);
    }
    const mine = message.author.kind === "visitor";
    const who = mine ? t.you_said : message.author.name || "";
    const meta = h("span", { class: "omni-meta" });
    let fileBox = null;
    const el = h(
      "li",
      { class: `omni-message ${mine ? "omni-mine" : "omni-theirs"}`, "data-seq": message.seq ?? "" },
      h("span", { class: "omni-author" }, who),
      message.attachment ? (fileBox = h("div", { class: "omni-text" })) : h("p", { class: "omni-text" }, message.text),
      meta,
    );
    el.meta = meta;
    el.file = fileBox;
    this.setMessageStatus(el, message);
    return el;
  }

  /** What the bot says: a bubble from the service, with the time a closed group opens and the
   * options of a question (shown while it waits: updateQuestion). */
  botElement(message) {
    const t = this.t;
    const bot = message.bot;
    const textId = `omni-bot-${message.seq}`;
    const meta = h("span", { class: "omni-meta" });
    const options = bot.options.length
      ? h(
          "div",
          { class: "omni-bot-options", role: "group", "aria-labelledby": textId, hidden: true },
          bot.options.map((option) =>
            h("button", { type: "button", class: option.id === PERSON ? "omni-bot-option omni-person" : "omni-bot-option", onclick: () => this.choose(option) }, option.label),
          ),
        )
      : null;
    const el = h(
      "li",
      { class: "omni-message omni-theirs omni-bot", "data-seq": message.seq, "data-node": bot.node },
      h("span", { class: "omni-author" }, message.author.name || t.assistant),
      h("p", { class: "omni-text", id: textId }, message.text),
      bot.opensAt ? h("p", { class: "omni-opens" }, t.bot_opens_at(when(bot.opensAt, this.lang))) : null,
      meta,
      options,
    );
    el.meta = meta;
    el.file = null;
    el.options = options;
    if (options) this.questions.set(message.key, el);
    this.setMessageStatus(el, message);
    return el;
  }

  choose(option) {
    // The buttons go once the answer is on its way: the focus goes on to the composer.
    if (this.composerInput) this.composerInput.focus();
    this.actions.choose(option);
  }

  setMessageStatus(el, message) {
    const t = this.t;
    el.dataset.status = message.status;
    if (!el.meta) return;
    if (message.seq) el.dataset.seq = message.seq;
    showStatus(el, message, t, this.lang, () => this.actions.fileToken());
  }

  composer() {
    const t = this.t;
    this.composerKind = "message";
    this.composerInput = h("textarea", {
      id: "omni-compose",
      class: "omni-input",
      rows: 1,
      maxlength: 8000,
      "aria-label": t.message_label,
      placeholder: t.message_label,
      onkeydown: (event) => {
        if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          submit();
        }
      },
      oninput: () => this.actions.typing(),
    });
    const submit = () => {
      const text = this.composerInput.value.trim();
      if (!text) return;
      this.composerInput.value = "";
      this.actions.send(text);
      this.composerInput.focus();
    };
    this.emojiButton = h("button", { type: "button", class: "omni-emoji-button", "aria-label": t.emoji, "aria-expanded": "false", "aria-haspopup": "dialog", onclick: () => this.toggleEmoji() }, "🙂");
    this.emojiPanel = h("div", { class: "omni-emoji-panel", role: "dialog", "aria-label": t.emoji, hidden: true });
    const files = this.config && this.config.attachments;
    let attach = null;
    if (files) {
      // A file: by the button, dropped on the conversation, or pasted into the message box.
      const picker = h("input", { type: "file", class: "omni-file-input", accept: files.types.join(","), tabindex: "-1", "aria-hidden": "true", onchange: () => { for (const f of picker.files) this.actions.attach(f); picker.value = ""; } });
      this.attachButton = h("button", { type: "button", class: "omni-attach", "aria-label": t.attach, title: t.attach, onclick: () => picker.click() }, "📎");
      attach = [picker, this.attachButton];
      this.composerInput.addEventListener("paste", (event) => {
        const pasted = [...(event.clipboardData ? event.clipboardData.files : [])];
        if (pasted.length) {
          event.preventDefault();
          for (const f of pasted) this.actions.attach(f);
        }
      });
    }
    return h(
      "form",
      {
        class: "omni-composer",
        onsubmit: (event) => {
          event.preventDefault();
          submit();
        },
      },
      this.emojiPanel,
      this.emojiButton,
      attach,
      this.composerInput,
      h("button", { type: "submit", class: "omni-primary omni-send" }, t.send),
    );
  }

  async toggleEmoji() {
    const open = this.emojiPanel.hidden;
    this.emojiPanel.hidden = !open;
    this.emojiButton.setAttribute("aria-expanded", String(open));
    if (!open) {
      this.emojiButton.focus();
      return;
    }
    if (!this.emojiPanel.firstChild) {
      // The picker's data is loaded the first time it opens: not part of the first load.
      const { picker } = await import("./emoji.js");
      append(this.emojiPanel, [picker(this.lang, (emoji) => this.insert(emoji), () => this.toggleEmoji())]);
    }
    // Straight into the grid (Shift+Tab reaches the categories).
    const first = this.emojiPanel.querySelector('.omni-emoji[tabindex="0"]');
    if (first) first.focus();
  }

  insert(text) {
    const input = this.composerInput;
    if (!input) return;
    const start = input.selectionStart ?? input.value.length;
    const end = input.selectionEnd ?? input.value.length;
    input.value = input.value.slice(0, start) + text + input.value.slice(end);
    input.selectionStart = input.selectionEnd = start + text.length;
    this.toggleEmoji();
    input.focus();
  }

  confirmEnd() {
    const t = this.t;
    const box = confirmAfter(this.endButton, { question: t.end_confirm, yesLabel: t.end_yes, noLabel: t.end_no, className: "omni-confirm", yesClass: "omni-primary" }, () => this.actions.end());
    if (!box) return;
    this.header.after(box);
    box.querySelector("button:last-child").focus();
  }


  // -- the survey and the closing page ----------------------------------------------------------------

  surveyForm(state) {
    const { form, heading, error } = surveyForm({
      questions: state.survey.questions,
      t: this.t,
      builtIn: state.config.survey === "default",
      onSend: (answers) => this.actions.survey(answers),
      onSkip: () => this.actions.skipSurvey(),
    });
    this.surveyHeading = heading;
    this.surveyError = error;
    return form;
  }

  closing(state) {
    const t = this.t;
    this.closingHeading = h("h2", { tabindex: "-1" }, t.closed_title);
    const parts = [this.closingHeading];
    if (state.closingMessage) parts.push(h("p", { class: "omni-closing-message" }, state.closingMessage));
    // The transcript is for a conversation an operator answered (docs/protocol.md §4.8).
    if (state.config.transcript && state.operator) {
      const input = h("input", { id: "omni-transcript-email", type: "email", autocomplete: "email", maxlength: 320 });
      this.transcriptStatus = h("p", { class: "omni-transcript-status", role: "status" });
      parts.push(
        h(
          "form",
          {
            class: "omni-transcript",
            onsubmit: (event) => {
              event.preventDefault();
              const email = input.value.trim();
              if (email) this.actions.transcript(email);
            },
          },
          h("label", { for: "omni-transcript-email" }, t.transcript_offer),
          h("span", { class: "omni-inline" }, input, h("button", { type: "submit" }, t.transcript_send)),
          this.transcriptStatus,
        ),
      );
    } else {
      this.transcriptStatus = null;
    }
    parts.push(h("button", { type: "button", class: "omni-primary", onclick: () => this.actions.newConversation() }, t.new_chat));
    return h("section", { class: "omni-closing" }, parts);
  }

  // -- the list of services (/webchat with no service) --------------------------------------------------

  services(list, link) {
    const t = this.t;
    fill(this.heading, t.title);
    const items = list.map((s) =>
      h(
        "li",
        {},
        h(
          "a",
          { href: link(s.id), class: "omni-service" },
          s.avatar && s.avatar.image ? h("img", { src: s.avatar.image, alt: "", onerror: (e) => e.target.remove() }) : null,
          h("span", { class: "omni-service-name" }, s.name),
          h("span", { class: `omni-service-state${s.open ? " omni-open" : ""}` }, s.open ? t.service_open : t.service_closed),
        ),
      ),
    );
    fill(this.main, h("h2", {}, t.choose_service), items.length ? h("ul", { class: "omni-services" }, items) : h("p", {}, t.no_services));
  }

  message(text) {
    fill(this.main, h("p", { class: "omni-error", role: "alert" }, text));
  }

  focusFirst(el) {
    const first = el.querySelector("input, textarea, button");
    if (first) first.focus();
  }
}
