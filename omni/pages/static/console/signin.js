// Signing in to the console and to the supervisor's view: the form, and the exchange of a user
// name and a password for a session (POST /api/v1/session, docs/admin-api.md), kept for the tab
// in sessionStorage (a reload stays signed in; a closed tab does not).

import { fill, h } from "../webchat/dom.js";

/** The sign-in form in `root`; `submit(username, password)` when it is sent. */
export class SigninScreen {
  constructor(root, t, title, submit) {
    this.t = t;
    this.user = h("input", { id: "c-username", name: "username", autocomplete: "username", required: true, maxlength: 200 });
    this.password = h("input", { id: "c-password", name: "password", type: "password", autocomplete: "current-password", required: true, maxlength: 256 });
    this.error = h("p", { class: "c-error", role: "alert" });
    this.button = h("button", { type: "submit", class: "c-primary" }, t.signin);
    const form = h(
      "form",
      {
        class: "c-signin",
        novalidate: true,
        onsubmit: (event) => {
          event.preventDefault();
          const username = this.user.value.trim();
          const password = this.password.value;
          if (!username) return this.user.focus();
          if (!password) return this.password.focus();
          submit(username, password);
        },
      },
      h("h1", {}, title),
      h("h2", {}, t.signin_title),
      h("p", { class: "c-field" }, h("label", { for: "c-username" }, t.username), this.user),
      h("p", { class: "c-field" }, h("label", { for: "c-password" }, t.password), this.password),
      this.error,
      this.button,
    );
    root.replaceChildren(h("main", { class: "c-signin-page" }, form));
    this.user.focus();
  }

  /** Show `error` ({code, retryAfter}) and whether a sign-in is under way. */
  update(error, busy) {
    const t = this.t;
    const text = !error
      ? ""
      : error.code === "wrong_credentials"
        ? t.wrong_credentials
        : error.code === "too_many_attempts"
          ? t.too_many_attempts(error.retryAfter || 1)
          : error.code === "wrong_role"
            ? t.wrong_role
            : error.code === "session_over"
              ? t.session_over
              : t.signin_failed;
    fill(this.error, text);
    this.button.disabled = !!busy;
    fill(this.button, busy ? t.signing_in : t.signin);
    if (text && !busy) this.password.value = "";
  }
}

/** Exchange a user name and a password for a session of one of `roles`: {session} or {error}. */
export async function signIn(username, password, roles) {
  let reply;
  try {
    reply = await fetch("/api/v1/session", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username, password }),
    });
  } catch {
    return { error: { code: "network" } };
  }
  if (reply.status === 401) return { error: { code: "wrong_credentials" } };
  if (reply.status === 429) return { error: { code: "too_many_attempts", retryAfter: Number(reply.headers.get("Retry-After")) || 1 } };
  if (!reply.ok) return { error: { code: "failed" } };
  const body = await reply.json();
  if (!body.user || !roles.includes(body.user.role)) {
    await signOut(body.token);
    return { error: { code: "wrong_role" } };
  }
  return { session: { token: body.token, expires_at: body.expires_at, user: body.user } };
}

/** End every session of the person (the server's rule for signing out). */
export async function signOut(token) {
  if (token) await fetch("/api/v1/session", { method: "DELETE", headers: { Authorization: `Bearer ${token}` } }).catch(() => {});
}

/** The session this tab keeps under `key`, if it has not expired. */
export function loadSession(key) {
  try {
    const saved = JSON.parse(sessionStorage.getItem(key) || "null");
    if (saved && saved.token && (!saved.expires_at || new Date(saved.expires_at) > new Date())) return saved;
  } catch {
    // no storage: sign in at each load
  }
  return null;
}

export function saveSession(key, value) {
  try {
    if (value) sessionStorage.setItem(key, JSON.stringify(value));
    else sessionStorage.removeItem(key);
  } catch {
    // no storage
  }
}
