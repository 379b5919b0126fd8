// The visitor's WebChat (placeholder: the real one replaces this file). A module: the page
// loads it with <script type="module">, and its imports are rewritten to hashed URLs.
console.info("omni webchat: placeholder", document.body.dataset.service ?? "(no service)");
