/* Omni's embed script: <script async src="https://chat.example/widget.js" data-service="25">.
   Adds a floating chat button (with an unread badge) that opens the WebChat in an iframe.
   It lives in a closed shadow root (no CSS leaks in or out), defines no global but `Omni`
   (Omni.identify(jwt), Omni.open(), Omni.close()), and never throws into the host page. */
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
    var root = host.attachShadow({ mode: "closed" });
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
      if (open && !frame) {
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
        post({ omni: "opened" });
      }
    };
    button.addEventListener("click", function () { show(!open); });

    window.addEventListener("message", function (event) {
      if (!frame || event.origin !== origin || event.source !== frame.contentWindow) return;
      var data = event.data || {};
      if (data.omni === "ready") {
        if (identity) post({ omni: "identify", token: identity });
        if (open) post({ omni: "opened" });
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
  } catch (error) {
    if (window.console) console.warn("Omni widget:", error);
  }
})();
