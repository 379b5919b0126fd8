// The survey's questions as a form: the WebChat's survey screen (view.js) and the survey page
// of a link (survey/main.js) both draw it here, so a question of each kind looks, reads and
// answers the same in both.
//
// Rules of this module:
// - Each kind its own control: a row of numbers for `rating` and `scale` (radio buttons drawn
//   as buttons, each labelled "n of max" for a screen reader), a list of options for `choice`,
//   a text box for `text` (limited to the question's `max_length`). A group is a <fieldset>
//   named by its question (<legend>); a text box has its <label>.
// - A question the visitor leaves out is simply not answered; a `required` one says so in its
//   name, and its controls are `required` for the browser (the server checks again:
//   docs/protocol.md §4.6).
// - The default survey's questions are Omni's own: asked in the page's language.
// - Text stays text (dom.js); nothing here talks to the server.

import { h } from "./dom.js";

/**
 * The survey form: `{ form, heading, error }` — the <form>, its heading (focus it to bring a
 * screen reader there) and its error line (role="alert"; fill it with the server's refusal).
 *
 * `questions`: as the server sends them; `t`: the page's words (survey_title, survey_send,
 * survey_skip, rating_of, default_survey); `builtIn`: the questions are the default survey's;
 * `onSend(answers)` gets `{question id: value}` of the questions answered; `onSkip()`.
 */
export function surveyForm({ questions, t, builtIn, onSend, onSkip }) {
  const answers = {};
  const heading = h("h2", { tabindex: "-1" }, t.survey_title);
  const error = h("p", { class: "omni-error", role: "alert" });
  // A required question says so in its name (its controls are `required` for the browser).
  const label = (q) => [(builtIn && t.default_survey[q.id]) || q.label, q.required ? h("span", { class: "omni-optional" }, ` (${t.survey_required})`) : null];
  const group = (q, values, text, className) => {
    const choices = values.map((value, n) => {
      const id = `omni-q-${q.id}-${typeof value === "number" ? value : n}`;
      return h(
        "span",
        { class: "omni-choice" },
        h("input", { type: "radio", id, name: `omni-q-${q.id}`, value: String(value), required: q.required, onchange: () => (answers[q.id] = value) }),
        h("label", { for: id, title: text(value) }, String(value)),
      );
    });
    return h("fieldset", { class: className }, h("legend", {}, label(q)), h("div", { class: `${className}-choices` }, choices));
  };
  const controls = questions.map((q) => {
    if (q.kind === "rating" || q.kind === "scale") {
      const values = [];
      for (let n = q.min; n <= q.max; n += 1) values.push(n);
      return group(q, values, (n) => t.rating_of(n, q.max), "omni-rating");
    }
    if (q.kind === "choice") return group(q, q.options || [], (option) => option, "omni-options");
    const id = `omni-q-${q.id}`;
    return h(
      "p",
      { class: "omni-field" },
      h("label", { for: id }, label(q)),
      h("textarea", { id, maxlength: q.max_length || 2000, rows: 3, required: q.required, oninput: (e) => (answers[q.id] = e.target.value.trim() || null) }),
    );
  });
  const form = h(
    "form",
    {
      class: "omni-survey",
      onsubmit: (event) => {
        event.preventDefault();
        onSend({ ...answers });
      },
    },
    heading,
    controls,
    error,
    h("p", { class: "omni-buttons" }, h("button", { type: "submit", class: "omni-primary" }, t.survey_send), h("button", { type: "button", onclick: () => onSkip() }, t.survey_skip)),
  );
  return { form, heading, error };
}
