// Omni's embed script (placeholder: the real one replaces this file). Customers load it from
// a stable URL, /widget.js, with one <script> tag; it opens the WebChat in an iframe.
// The server fills in its public origin when it starts.
(function () {
  "use strict";
  var OMNI = "{{ public_url }}";
  console.info("omni widget: placeholder", OMNI + "/webchat");
})();
