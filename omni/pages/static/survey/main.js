// The survey page of a link (/survey/<token>): a conversation's survey, answered once, for a
// visitor who talked to us on a channel with no survey of its own (docs/pages.md).
//
// Rules of this module:
// - What to show comes with the page: `data-survey` on <body> (the state of the survey, the
//   service's name and colours, the conversation's ticket, the questions); the page's language
//   is <html lang>, chosen by the server.
// - The questions are the WebChat's form (../webchat/survey.js); answers go to this page's own
//   URL as JSON (`{"answers": {...}}`, or `{"skip": true}`), and the server's answer decides
//   what follows: thanks, already answered, closed, or the refusal in the form's alert line.
// - Text stays text (dom.js); colours are the palette's custom properties, set through the
//   CSSOM (the page's CSP allows no inline style).
// - Focus goes to the heading of each new screen, so a screen reader reads it.

import { fill, h } from "../webchat/dom.js";
import { surveyForm } from "../webchat/survey.js";
import { strings } from "./i18n.js";

const STATES = ["answered", "expired", "none", "invalid"];
// A refused answer's `code` (docs/pages.md) -> the screen it leads to.
const REFUSED = { survey_answered: "answered", survey_expired: "expired", no_survey: "none", invalid_link: "invalid" };

function read() {
  try {
    return JSON.parse(document.body.dataset.survey || "{}");
  } catch {
    return { state: "invalid" };
  }
}

function paint(palette) {
  const names = { button: "--omni-button", header: "--omni-header", panels: "--omni-panels" };
  for (const [key, property] of Object.entries(names)) {
    if (palette && palette[key]) document.documentElement.style.setProperty(property, palette[key]);
  }
}

function main() {
  const data = read();
  const lang = document.documentElement.lang;
  const t = strings(lang);
  const root = document.getElementById("omni");
  document.title = t.page_title;
  const service = data.service || null;
  if (service) paint(service.palette);

  const logo = service && service.logo ? h("img", { class: "omni-logo", src: service.logo, alt: "", onerror: (e) => (e.target.hidden = true) }) : null;
  const header = h("header", { class: "omni-header" }, logo, h("div", { class: "omni-heading" }, h("h1", { class: "omni-title" }, service ? service.name : t.page_title)));
  const main = h("main", { class: "omni-main" });
  fill(root, header, main);

  const screen = (title, text) => {
    const heading = h("h2", { tabindex: "-1" }, title);
    fill(main, h("section", { class: "omni-closing omni-survey-done", "aria-live": "polite" }, heading, h("p", {}, text)));
    heading.focus();
  };
  const done = (state) => screen(t[`${state}_title`], t[state]);

  if (data.state !== "open") {
    done(STATES.includes(data.state) ? data.state : "invalid");
    return;
  }

  let busy = false;
  const { form, heading, error } = surveyForm({
    questions: data.questions || [],
    t,
    builtIn: service && service.survey === "default",
    onSend: (answers) => send({ answers }, "thanks"),
    onSkip: () => send({ skip: true }, "skipped"),
  });
  const buttons = () => form.querySelectorAll("button");

  async function send(body, after) {
    if (busy) return;
    busy = true;
    for (const button of buttons()) button.disabled = true;
    fill(error, "");
    form.setAttribute("aria-busy", "true");
    try {
      const response = await fetch(location.pathname, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
        credentials: "omit",
        cache: "no-store",
      });
      if (response.ok) return done(after);
      const problem = await response.json().catch(() => ({}));
      if (REFUSED[problem.code]) return done(REFUSED[problem.code]);
      // The questions refused an answer (the browser checks them first), or something failed.
      fill(error, problem.code === "invalid_survey" ? t.invalid_answers : t.error);
    } catch {
      fill(error, t.error);
    } finally {
      busy = false;
      form.removeAttribute("aria-busy");
      for (const button of buttons()) button.disabled = false;
    }
  }

  const intro = data.ticket ? h("p", { class: "omni-intro" }, t.about(data.ticket)) : null;
  fill(main, intro, form);
  heading.focus();
}

main();
