// Building elements, the one way the WebChat makes DOM: text is always text.
//
// `h("p", {class: "x"}, "Hello ", name)` — string children become text nodes (never parsed as
// HTML); attributes are set one by one; `on*` keys add listeners. There is no innerHTML in the
// WebChat, so a name or a message like `<img src=x onerror=…>` shows as what it is.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key in el && typeof value !== "string") {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child)) : child);
  }
  return el;
}

/** Replace ``el``'s children. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/**
 * Make the conversation log `list` show `messages` in their order: each message's element is
 * made once (`make(message)`, kept in `rendered` by its `key`) and scrolled into view, a
 * message whose `status` changed is `restatus(el, message)`-ed, and elements of messages gone
 * from the state (a pending copy a replay showed stored) are removed. The WebChat's and the
 * console's logs alike: added to, never redrawn, so a screen reader reads each message once.
 */
export function syncLog(list, rendered, messages, make, restatus) {
  let previous = null;
  for (const message of messages) {
    let el = rendered.get(message.key);
    if (!el) {
      el = make(message);
      rendered.set(message.key, el);
      // In the state's order: a stored message goes before those still being sent.
      if (previous) previous.after(el);
      else list.prepend(el);
      el.scrollIntoView({ block: "end" });
    } else if (el.dataset.status !== message.status || el.shown !== message) {
      restatus(el, message);
    }
    el.shown = message; // the state's entries are replaced when they change: a cheap check
    previous = el;
  }
  if (rendered.size > messages.length) {
    const keys = new Set(messages.map((m) => m.key));
    for (const [key, el] of rendered) {
      if (!keys.has(key)) {
        el.remove();
        rendered.delete(key);
      }
    }
  }
}

/**
 * Ask a yes/no question right after `anchor`: an alertdialog whose "no" has the focus; "no"
 * or Escape closes it and gives the focus back to `anchor`, "yes" closes it and calls `yes`.
 * Returns null if `anchor` has one open already, else the dialog.
 */
export function confirmAfter(anchor, { question, yesLabel, noLabel, className, yesClass }, yes) {
  if (anchor.confirmBox) return null;
  const close = () => {
    box.remove();
    anchor.confirmBox = null;
  };
  const no = h("button", { type: "button", onclick: () => (close(), anchor.focus()) }, noLabel);
  const box = h(
    "div",
    { class: className, role: "alertdialog", "aria-label": question, onkeydown: (e) => e.key === "Escape" && (close(), anchor.focus()) },
    h("p", {}, question),
    h("button", { type: "button", class: yesClass, onclick: () => (close(), yes()) }, yesLabel),
    no,
  );
  anchor.confirmBox = box;
  return box;
}
