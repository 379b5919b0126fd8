// Files in a conversation (F11), for the WebChat and the console alike: uploading one with its
// progress, and showing one that a message carries — an image as a thumbnail, anything else as
// a link — through a short-lived signed link (docs/admin-api.md, "Attachments": an <img> or an
// <a> cannot send a bearer token, and a token in a URL would leak).

import { fill, h } from "./dom.js";

/**
 * Upload `file` to conversation `conversationId` with `token` (the visitor's resume token, or
 * the operator's session). `progress(fraction)` as it goes. Resolves to the server's answer
 * ({upload_id, name, size, type, url}) or {error: {status, code, detail}}.
 */
export function upload(conversationId, token, file, progress) {
  return new Promise((resolve) => {
    const request = new XMLHttpRequest();
    const name = encodeURIComponent(file.name || "file");
    request.open("POST", `/api/v1/conversations/${encodeURIComponent(conversationId)}/attachments?name=${name}`);
    request.setRequestHeader("Authorization", `Bearer ${token}`);
    request.upload.onprogress = (event) => event.lengthComputable && progress(event.loaded / event.total);
    request.onload = () => {
      let body = {};
      try {
        body = JSON.parse(request.responseText || "{}");
      } catch {
        // not JSON: a proxy's page
      }
      if (request.status === 201) resolve(body);
      else resolve({ error: { status: request.status, code: (body.type || "").split("/").pop(), detail: body.detail || "" } });
    };
    request.onerror = () => resolve({ error: { status: 0, code: "network", detail: "" } });
    request.send(file);
  });
}

/** A signed download link for attachment `id` (or null). */
export async function link(id, token) {
  const reply = await fetch(`/api/v1/attachments/${encodeURIComponent(id)}/link`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}` },
  }).catch(() => null);
  if (!reply || !reply.ok) return null;
  return (await reply.json()).url;
}

/** The words of files, in English and Brazilian Portuguese: both pages' i18n take them. */
export const FILE_WORDS = {
  en: {
    attach: "Attach a file",
    image: "Image",
    uploading: (p) => `uploading… ${p}%`,
    file_errors: {
      "attachment-too-large": "too large",
      "attachment-type-not-allowed": "this kind of file is not accepted",
      "attachment-type-unknown": "this kind of file is not accepted",
      "attachment-type-mismatch": "the file is not what its name says",
      "attachment-too-many-pixels": "image too large",
      "attachment-image-unreadable": "image unreadable",
      "attachment-quota-exceeded": "no more files in this conversation",
      "attachments-disabled": "files are not accepted",
      network: "not sent (connection)",
    },
  },
  "pt-BR": {
    attach: "Anexar arquivo",
    image: "Imagem",
    uploading: (p) => `enviando… ${p}%`,
    file_errors: {
      "attachment-too-large": "grande demais",
      "attachment-type-not-allowed": "este tipo de arquivo não é aceito",
      "attachment-type-unknown": "este tipo de arquivo não é aceito",
      "attachment-type-mismatch": "o arquivo não é o que o nome diz",
      "attachment-too-many-pixels": "imagem grande demais",
      "attachment-image-unreadable": "imagem ilegível",
      "attachment-quota-exceeded": "não cabem mais arquivos nesta conversa",
      "attachments-disabled": "arquivos não são aceitos",
      network: "não enviado (conexão)",
    },
  },
};

const INLINE = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);

/** "48 kB", "1.2 MB". */
export function size(bytes, lang) {
  const units = [["MB", 1e6], ["kB", 1e3]];
  for (const [unit, scale] of units) {
    if (bytes >= scale) return `${(bytes / scale).toLocaleString(lang, { maximumFractionDigits: 1 })} ${unit}`;
  }
  return `${bytes} B`;
}

/**
 * What a message carrying `attachment` ({id, name, size, type}) shows: a thumbnail for an
 * image Omni serves inline, else a link "📎 name (size)"; `token()` gives the credential to
 * ask for its link with. Text only: the name is a text node, the URL is Omni's own.
 */
export function attachmentElement(attachment, token, lang, labels) {
  const caption = `${attachment.name} (${size(attachment.size, lang)})`;
  const anchor = h("a", { class: "omni-file", href: "#", "data-attachment": attachment.id }, "📎 ", caption);
  anchor.addEventListener("click", async (event) => {
    event.preventDefault();
    const url = await link(attachment.id, token());
    if (url) window.location.assign(url); // served as a download (Content-Disposition)
  });
  if (!INLINE.has(attachment.type)) return anchor;
  const image = h("img", { class: "omni-thumbnail", alt: `${labels.image}: ${attachment.name}`, loading: "lazy" });
  link(attachment.id, token()).then((url) => url && (image.src = url));
  return h("span", { class: "omni-file-box" }, image, anchor);
}

/**
 * Bring a message's bubble up to date (the WebChat's and the console's alike): its file — a
 * link or thumbnail once stored (`token()` to mint its link), its name while it uploads — and
 * its meta line: upload progress, "sending…", why it failed, or the time.
 */
export function showStatus(el, message, t, lang, token) {
  if (el.file && el.fileId !== (message.attachment.id || null)) {
    el.fileId = message.attachment.id || null;
    fill(el.file, el.fileId ? attachmentElement(message.attachment, token, lang, t) : h("span", { class: "omni-file" }, "📎 ", message.attachment.name));
  }
  const time = message.at ? new Date(message.at).toLocaleTimeString(lang, { hour: "2-digit", minute: "2-digit" }) : "";
  const uploading = message.attachment && message.status === "sending" && (message.progress ?? 1) < 1;
  const failed = message.status === "failed" ? (message.failure && t.file_errors[message.failure]) || t.failed : null;
  fill(el.meta, uploading ? t.uploading(Math.round(message.progress * 100)) : message.status === "sending" ? t.sending : failed || time);
}
