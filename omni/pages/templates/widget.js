/* Omni's embed script: <script async src="https://chat.example/widget.js" data-service="25">.
   Adds a floating chat button (with an unread badge) that opens the WebChat in an iframe.
   It lives in a shadow root (no CSS leaks in or out), defines no global but `Omni`
   (Omni.identify(jwt), Omni.open(), Omni.close()), and never throws into the host page.
   While the visitor has a conversation going, the next page of the site loads the chat hidden
   at once, so that it resumes and the badge counts the operator's messages. */
(function () {
  try {
    var me = document.currentScript;
    if (!me || window.Omni && window.Omni.service) return;
    var origin = "{{ public_url }}"; // the server fills in its public origin when it starts
    var service = me.getAttribute("data-service");
    var lang = (navigator.language || "en").toLowerCase().indexOf("pt") === 0;
    var label = lang ? "Abrir o chat" : "Open chat";
    var closeLabel = lang ? "Fechar o chat" : "Close chat";
    var identity = null, frame = null, open = false, unread = 0;
    var host = document.createElement("div");
    var root = host.attachShadow({ mode: "open" }); // open: styles are isolated either way
    var key = "omni.widget." + service; // set while a conversation is going (the host's storage)
    var remember = function (going) {
      try {
        if (going) localStorage.setItem(key, "1");
        else localStorage.removeItem(key);
      } catch (error) {} // storage refused: the chat loads when opened, as the first time
    };
    // The chat's own storage, kept here for it: a browser may give a cross-site frame none.
    var prefix = "omni.chat." + service + ":";
    var kept = function () {
      var items = {};
      try {
        for (var i = 0; i < localStorage.length; i++) {
          var name = localStorage.key(i);
          if (name && name.indexOf(prefix) === 0) items[name.slice(prefix.length)] = localStorage.getItem(name);
        }
      } catch (error) {}
      return items;
    };
    var keep = function (name, value) {
      try {
        if (value === null) localStorage.removeItem(prefix + name);
        else localStorage.setItem(prefix + name, value);
      } catch (error) {}
    };
    var going = false;
    try { going = localStorage.getItem(key) === "1"; } catch (error) {}
    var css =
      ":host{all:initial}" +
      "button{position:fixed;right:20px;bottom:20px;width:60px;height:60px;border:0;border-radius:50%;background:#0b5fff;color:#fff;cursor:pointer;box-shadow:0 4px 16px rgba(0,0,0,.3);z-index:2147483646;font:600 26px/1 system-ui,sans-serif}" +
      "button:focus-visible{outline:3px solid #1a1a1a;outline-offset:3px}" +
      "span{position:absolute;top:-4px;right:-4px;min-width:22px;height:22px;padding:0 6px;border-radius:11px;background:#c4161c;color:#fff;font:700 13px/22px system-ui,sans-serif;box-sizing:border-box}" +
      "span[hidden]{display:none}" +
      "iframe{position:fixed;right:20px;bottom:92px;width:380px;height:min(620px,calc(100vh - 112px));border:0;border-radius:14px;box-shadow:0 8px 32px rgba(0,0,0,.3);background:#fff;z-index:2147483647}" +
      "iframe[hidden]{display:none}" +
      "@media (max-width:480px){iframe{right:0;bottom:0;width:100vw;height:100vh;border-radius:0}}";
    if (root.adoptedStyleSheets && window.CSSStyleSheet && CSSStyleSheet.prototype.replaceSync) {
      // A constructed sheet: not an inline <style>, so the host page's CSP does not refuse it.
      var sheet = new CSSStyleSheet();
      sheet.replaceSync(css);
      root.adoptedStyleSheets = [sheet];
    } else {
      var style = document.createElement("style");
      style.textContent = css;
      root.appendChild(style);
    }
    var button = document.createElement("button");
    button.type = "button";
    button.setAttribute("aria-label", label);
    button.setAttribute("aria-expanded", "false");
    button.textContent = "\u{1F4AC}";
    var badge = document.createElement("span");
    badge.hidden = true;
    button.appendChild(badge);
    root.appendChild(button);

    var post = function (message) {
      if (frame && frame.contentWindow) frame.contentWindow.postMessage(message, origin);
    };
    var show = function (value) {
      open = value;
      if ((open || going) && !frame) {
        frame = document.createElement("iframe");
        frame.title = label;
        frame.src = origin + "/webchat?service=" + encodeURIComponent(service) + "&embed=1";
        root.appendChild(frame);
      }
      if (frame) frame.hidden = !open;
      button.setAttribute("aria-expanded", String(open));
      button.setAttribute("aria-label", open ? closeLabel : label);
      if (open) {
        unread = 0;
        badge.hidden = true;
      }
      post({ omni: open ? "opened" : "closed" });
    };
    button.addEventListener("click", function () { show(!open); });

    window.addEventListener("message", function (event) {
      if (!frame || event.origin !== origin || event.source !== frame.contentWindow) return;
      var data = event.data || {};
      if (data.omni === "ready") {
        post({ omni: "hello", identity: identity, open: open, storage: kept() });
      } else if (data.omni === "store" && /^omni\.[\w.-]{1,64}$/.test(data.key)) {
        keep(data.key, typeof data.value === "string" && data.value.length < 65536 ? data.value : null);
      } else if (data.omni === "going") {
        going = data.value === true;
        remember(going);
      } else if (data.omni === "unread" && !open) {
        unread = data.count;
        badge.hidden = !unread;
        badge.textContent = unread > 9 ? "9+" : String(unread);
        button.setAttribute("aria-label", label + " (" + unread + ")");
      }
    });

    fetch(origin + "/api/public/services/" + encodeURIComponent(service))
      .then(function (reply) { return reply.ok ? reply.json() : null; })
      .then(function (config) {
        if (config && config.palette && /^#[0-9a-fA-F]{3,8}$/.test(config.palette.button)) button.style.background = config.palette.button;
      })
      .catch(function () {});

    window.Omni = {
      service: service,
      identify: function (token) { identity = token; post({ omni: "identify", token: token }); },
      open: function () { show(true); },
      close: function () { show(false); },
    };
    (document.body || document.documentElement).appendChild(host);
    if (going) show(false); // resume the conversation, hidden, for the badge
  } catch (error) {
    if (window.console) console.warn("Omni widget:", error);
  }
})();
