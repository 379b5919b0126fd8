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
