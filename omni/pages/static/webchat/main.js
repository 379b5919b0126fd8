// The WebChat page: wires the service's public configuration, the protocol client, the state
// and the view together. Everything it knows of the page's URL: `?service=ID` (which service)
// and `embed=1` (it runs in the widget's iframe, and talks to the widget with postMessage).

import { language, strings } from "./i18n.js";
import { Connection } from "./protocol.js";
import { initial, reduce } from "./state.js";
import { View } from "./view.js";
import { upload } from "./files.js";

const PALETTE = ["button", "header", "panels", "visitor_bubble", "operator_bubble"];
const CAPTCHA_GLOBALS = { turnstile: "turnstile", hcaptcha: "hcaptcha", recaptcha: "grecaptcha" };
// The phases in which a conversation is going (the widget keeps the chat loaded across pages).
const GOING = ["starting", "resuming", "bot", "queued", "active", "out_of_hours", "ended", "survey"];

const root = document.getElementById("omni");
const params = new URLSearchParams(location.search);
const serviceId = params.get("service");
const embedded = params.get("embed") === "1" && window.parent !== window;

main().catch((error) => {
  console.error(error);
  root.textContent = strings(language("auto", navigator.languages)).unavailable;
});

async function main() {
  if (!serviceId) {
    await chooseService();
    return;
  }
  const reply = await fetch(`/api/public/services/${encodeURIComponent(serviceId)}`);
  const lang0 = language("auto", navigator.languages);
  if (!reply.ok) {
    const view = new View(root, strings(lang0), lang0, {});
    view.message(reply.status === 404 ? strings(lang0).unknown_service : strings(lang0).unavailable);
    return;
  }
  const config = await reply.json();
  const lang = language(config.language, navigator.languages);
  if (config.captcha && !config.captcha.provider) {
    // The service asks for a CAPTCHA this server cannot show: nobody could start.
    new View(root, strings(lang), lang, {}).message(strings(lang).unavailable);
    return;
  }
  document.documentElement.lang = lang;
  document.title = config.name;
  paint(config.palette);
  const t = strings(lang);
  let state = initial(config);
  let captchaToken = null;
  let captchaWidget = null;
  let lastNotified = 0;

  const view = new View(root, t, lang, {});
  view.setConfig(config);

  let lastGoing = null;
  // Embedded, the widget first says what it holds: the signed identity, whether the chat is
  // open, and — where the browser gives a cross-site frame no storage of its own — the
  // conversation kept in the site's storage for it.
  const hello = embedded ? await greetWidget() : null;
  let identity = hello ? hello.identity : null;
  let widgetOpen = hello ? hello.open : false; // embedded: whether the widget shows the chat
  const saved = storage() || (hello ? widgetStorage(hello.storage) : null);
  const SEEN = "omni.seen"; // the last message the visitor saw, for the widget's badge

  // The visitor sees what arrives while the page is visible (and, embedded, the widget open).
  const watching = () => document.visibilityState === "visible" && (!embedded || widgetOpen);
  const markSeen = () => {
    dispatch({ action: "seen" });
    if (saved && state.seenSeq) saved.setItem(SEEN, String(state.seenSeq));
  };

  const dispatch = (event) => {
    state = reduce(state, event);
    view.render(state);
    if (!embedded) return;
    if (state.unread !== lastNotified) {
      lastNotified = state.unread;
      window.parent.postMessage({ omni: "unread", count: state.unread }, parentOrigin());
    }
    // Whether a conversation is going: the widget then loads the chat on the site's next page.
    const going = GOING.includes(state.phase);
    if (going !== lastGoing) {
      lastGoing = going;
      window.parent.postMessage({ omni: "going", value: going }, parentOrigin());
    }
  };

  const connection = new Connection({
    url: config.ws_url,
    service: config.id,
    storage: saved,
    onFrame: (frame) => {
      dispatch(frame.type === "typing" ? { ...frame, now: Date.now() } : frame);
      if ((frame.type === "message" || frame.type === "bot") && watching()) markSeen();
      if (frame.type === "error" && frame.code.startsWith("captcha")) resetCaptcha();
    },
    onStatus: (status) => dispatch({ action: "status", status }),
  });

  view.actions = {
    start(visitor) {
      if (config.captcha && !captchaToken) {
        dispatch({ action: "captcha_missing" });
        return;
      }
      dispatch({ action: "starting", name: visitor.name });
      connection.start(startFrame(config, visitor, null, captchaToken));
    },
    /** A file the visitor picked, dropped or pasted: uploaded (with its progress shown), then
     * sent as `attachment`; the server decides its type from its content. */
    async attach(file) {
      const limits = config.attachments;
      // The bot takes no files (the server would refuse them: invalid_state).
      if (!limits || !state.conversationId || !connection.token || state.phase === "bot") return;
      const clientId = connection.newClientId();
      const attachment = { name: file.name || "file", size: file.size, type: file.type };
      dispatch({ action: "send", clientId, text: attachment.name, attachment, progress: 0, at: new Date().toISOString() });
      if (file.size > limits.max_bytes) return dispatch({ action: "upload_failed", clientId, code: "attachment-too-large" });
      const answer = await upload(state.conversationId, connection.token, file, (fraction) => dispatch({ action: "progress", clientId, fraction }));
      if (answer.error) return dispatch({ action: "upload_failed", clientId, code: answer.error.code || "network" });
      // Stored: now it has an id (links), its real name and type (decided by the server).
      dispatch({ action: "progress", clientId, fraction: 1, attachment: { id: answer.upload_id, name: answer.name, size: answer.size, type: answer.type } });
      connection.attachment(clientId, answer.upload_id, answer.name);
    },
    fileToken: () => connection.token,
    send(text) {
      // While the bot talks, what the visitor types answers its question.
      const clientId = state.phase === "bot" ? connection.botReply({ text }) : connection.message(text);
      dispatch({ action: "send", clientId, text, at: new Date().toISOString() });
    },
    /** One of the bot's options ({id, label}): sent as `bot_reply`, shown as the visitor's. */
    choose(option) {
      const clientId = connection.botReply({ option: option.id, label: option.label });
      dispatch({ action: "send", clientId, text: option.label, at: new Date().toISOString() });
    },
    typing() {
      if (state.phase === "active") connection.typing();
    },
    end() {
      connection.send({ type: "end" });
    },
    survey(answers) {
      dispatch({ action: "survey_sent" });
      connection.send({ type: "survey", answers });
    },
    skipSurvey() {
      dispatch({ action: "survey_sent" });
      connection.send({ type: "survey_skip" });
    },
    transcript(email) {
      connection.send({ type: "transcript", email });
    },
    newConversation() {
      if (saved) saved.removeItem(SEEN);
      connection.forget();
      connection.close();
      dispatch({ action: "new_conversation" });
      connection.open();
    },
    formShown(box) {
      captchaWidget = null;
      captchaToken = null;
      if (config.captcha && config.captcha.provider) renderCaptcha(config.captcha, box);
    },
  };

  function startIdentified() {
    // A logged-in visitor (F8): who they are is signed; no form.
    dispatch({ action: "starting", name: null });
    connection.start(startFrame(config, null, identity, null));
  }

  async function renderCaptcha(captcha, box) {
    const name = CAPTCHA_GLOBALS[captcha.provider];
    await loadScript(captcha.script_url);
    const api = await until(() => window[name]);
    const options = { sitekey: captcha.site_key, callback: (token) => (captchaToken = token), "expired-callback": () => (captchaToken = null) };
    captchaWidget = { api, id: api.render(box, options) };
  }

  function resetCaptcha() {
    captchaToken = null;
    if (captchaWidget && captchaWidget.api.reset) captchaWidget.api.reset(captchaWidget.id);
  }

  if (embedded) {
    window.addEventListener("message", (event) => {
      if (event.source !== window.parent || !event.data || typeof event.data !== "object") return;
      if (event.data.omni === "opened") {
        widgetOpen = true;
        markSeen();
      }
      if (event.data.omni === "closed") widgetOpen = false;
      if (event.data.omni === "identify" && typeof event.data.token === "string") {
        identity = event.data.token;
        // Identified after the form was shown (Omni.identify called late): no form after all.
        if (state.phase === "form" && config.identity && !connection.hasConversation) startIdentified();
      }
    });
  }
  document.addEventListener("visibilitychange", () => watching() && markSeen());
  setInterval(() => dispatch({ action: "tick", now: Date.now() }), 1000);

  if (connection.hasConversation) {
    dispatch({ action: "resuming" }); // a reload: resume, no form
    const seen = Number(saved && saved.getItem(SEEN));
    if (seen > 0) dispatch({ action: "seen", seq: seen });
    for (const [clientId, what] of connection.unacknowledged) {
      if (typeof what === "string") dispatch({ action: "send", clientId, text: what });
      else if (what.bot) dispatch({ action: "send", clientId, text: what.label });
      else dispatch({ action: "send", clientId, text: what.name, attachment: { name: what.name }, progress: 1 });
    }
  } else if (identity && config.identity) {
    startIdentified();
  } else {
    view.render(state);
  }
  connection.open();
  window.addEventListener("pagehide", () => connection.close());
}

/** The embedding page's origin, where it is known (else any: frame-ancestors chose it). */
function parentOrigin() {
  const ancestors = location.ancestorOrigins;
  return ancestors && ancestors.length ? ancestors[0] : "*";
}

/** Tell the widget the chat is ready; its `hello` (or, after a while, nothing from it). */
function greetWidget() {
  const nothing = { identity: null, open: false, storage: {} };
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(nothing), 2000);
    const listen = (event) => {
      if (event.source !== window.parent || !event.data || event.data.omni !== "hello") return;
      window.removeEventListener("message", listen);
      clearTimeout(timer);
      const data = event.data;
      resolve({
        identity: typeof data.identity === "string" ? data.identity : null,
        open: data.open === true,
        storage: data.storage && typeof data.storage === "object" ? data.storage : {},
      });
    };
    window.addEventListener("message", listen);
    window.parent.postMessage({ omni: "ready" }, parentOrigin());
  });
}

/** Storage kept by the widget in the site's own storage (a cross-site frame may have none). */
function widgetStorage(items) {
  const data = new Map(Object.entries(items).filter(([, value]) => typeof value === "string"));
  const tell = (key, value) => window.parent.postMessage({ omni: "store", key, value }, parentOrigin());
  return {
    getItem: (key) => (data.has(key) ? data.get(key) : null),
    setItem(key, value) {
      data.set(key, String(value));
      tell(key, String(value));
    },
    removeItem(key) {
      data.delete(key);
      tell(key, null);
    },
  };
}

function startFrame(config, visitor, identity, captcha) {
  const frame = { service_id: config.id };
  if (visitor) {
    frame.visitor = { name: visitor.name };
    if (visitor.email) frame.visitor.email = visitor.email;
    if (visitor.phone) frame.visitor.phone = visitor.phone;
  }
  if (identity) frame.identity = identity;
  if (captcha) frame.captcha = captcha;
  return frame;
}

async function chooseService() {
  const lang = language("auto", navigator.languages);
  document.documentElement.lang = lang;
  const view = new View(root, strings(lang), lang, {});
  const reply = await fetch("/api/public/services");
  const { services } = reply.ok ? await reply.json() : { services: [] };
  view.services(services, (id) => `/webchat?service=${id}`);
}

function paint(palette) {
  for (const name of PALETTE) {
    if (palette && palette[name]) document.documentElement.style.setProperty(`--omni-${name.replace("_", "-")}`, palette[name]);
  }
}

function storage() {
  try {
    const probe = "omni.probe";
    localStorage.setItem(probe, "1");
    localStorage.removeItem(probe);
    return localStorage;
  } catch {
    return null;
  }
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    script.async = true;
    script.onload = resolve;
    script.onerror = reject;
    document.head.append(script);
  });
}

async function until(get, timeout = 10_000) {
  const started = Date.now();
  while (!get()) {
    if (Date.now() - started > timeout) throw new Error("timed out");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return get();
}
