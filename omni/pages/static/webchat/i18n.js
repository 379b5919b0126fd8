// The WebChat's words, in Brazilian Portuguese and English. Texts the service configures
// (greeting, out-of-hours and closing messages, survey questions) come from the server as the
// administrator wrote them.

import { FILE_WORDS } from "./files.js";

const STRINGS = {
  en: {
    title: "Chat",
    choose_service: "How can we help?",
    service_open: "Open now",
    service_closed: "Closed now: leave a message",
    no_services: "No chat service is available right now.",
    unknown_service: "This chat service does not exist.",
    form_intro: "To start, tell us who you are.",
    name: "Your name",
    email: "E-mail",
    phone: "Phone",
    optional: "optional",
    start: "Start chat",
    starting: "Connecting you…",
    required: "Please fill in this field.",
    invalid_email: "Please enter one e-mail address.",
    captcha_wait: "Please complete the check above.",
    queued: (p) => (p === 1 ? "You are next in line." : `You are number ${p} in line.`),
    queued_waiting: "Waiting for an operator…",
    estimated_wait: (s) => `Estimated wait: ${duration(s, "en")}.`,
    ticket: "Ticket",
    you: "You",
    operator_is: (name) => `You are talking to ${name}.`,
    assigned: (name) => `${name} joined the conversation.`,
    transferred_group: (name) => `You were transferred to ${name}. Please wait for the next operator.`,
    transferred_operator: (name) => `You were transferred to ${name}.`,
    ended_visitor: "You ended the conversation.",
    ended_operator: "The operator ended the conversation.",
    ended_queue_timeout: "Nobody could answer in time. Sorry!",
    ended_visitor_idle: "The conversation ended for lack of answer.",
    ended_visitor_gone: "The conversation ended while you were away.",
    ended_bot: "The assistant ended the conversation.",
    ended_bot_timeout: "The conversation ended for lack of answer.",
    bot_is: "Automated assistant",
    assistant: "Assistant",
    bot_opens_at: (when) => `It opens again ${when}.`,
    answer_label: "Your answer",
    email_answer: "Your e-mail address",
    phone_answer: "Your phone number",
    number_answer: "A number",
    typing: (name) => `${name} is typing…`,
    message_label: "Your message",
    send: "Send",
    emoji: "Emoji",
    end: "End chat",
    end_confirm: "End the conversation?",
    end_yes: "Yes, end it",
    end_no: "Keep chatting",
    sending: "sending…",
    failed: "not sent",
    offline: "Offline — reconnecting…",
    reconnected: "Connected again.",
    idle_warning: (s) => (s === null ? "Are you still there?" : `Are you still there? The conversation ends in ${duration(s, "en")} without an answer.`),
    survey_title: "How was it?",
    default_survey: { rating: "How would you rate this conversation?", comment: "Anything you would like to tell us?" },
    survey_send: "Send",
    survey_skip: "Skip",
    survey_required: "required",
    rating_of: (n, max) => `${n} of ${max}`,
    transcript_offer: "Get this conversation by e-mail",
    transcript_send: "Send",
    transcript_sent: (email) => `We will send it to ${email}.`,
    transcript_error: {
      invalid_email: "Please enter one e-mail address.",
      too_many_transcripts: "It already went to the most addresses allowed.",
      transcript_unavailable: "E-mail is not available.",
      transcript_disabled: "E-mail is not available for this service.",
    },
    new_chat: "Start a new chat",
    closed_title: "Conversation closed",
    out_of_hours_title: "We are closed",
    opens_at: (when) => `We open again ${when}.`,
    leave_message: "You can leave a message; we will answer when we are back.",
    superseded: "This conversation was opened in another window.",
    unavailable: "The chat is not available right now. Please try again later.",
    error_rate_limited: "Too many attempts. Please wait a moment and try again.",
    error_captcha: "The check could not be completed. Please try again.",
    error_generic: "Something went wrong. Please try again.",
    message_limit: "You have left as many messages as we can take until we are back.",
    new_messages: (n) => (n === 1 ? "1 new message" : `${n} new messages`),
    you_said: "You",
  },
  "pt-BR": {
    title: "Chat",
    choose_service: "Como podemos ajudar?",
    service_open: "Atendendo agora",
    service_closed: "Fora do horário: deixe uma mensagem",
    no_services: "Nenhum serviço de chat está disponível agora.",
    unknown_service: "Este serviço de chat não existe.",
    form_intro: "Para começar, diga quem você é.",
    name: "Seu nome",
    email: "E-mail",
    phone: "Telefone",
    optional: "opcional",
    start: "Iniciar conversa",
    starting: "Conectando você…",
    required: "Preencha este campo.",
    invalid_email: "Informe um endereço de e-mail.",
    captcha_wait: "Conclua a verificação acima.",
    queued: (p) => (p === 1 ? "Você é o próximo da fila." : `Você é o número ${p} da fila.`),
    queued_waiting: "Aguardando um atendente…",
    estimated_wait: (s) => `Espera estimada: ${duration(s, "pt-BR")}.`,
    ticket: "Chamado",
    you: "Você",
    operator_is: (name) => `Você está falando com ${name}.`,
    assigned: (name) => `${name} entrou na conversa.`,
    transferred_group: (name) => `Você foi transferido para ${name}. Aguarde o próximo atendente.`,
    transferred_operator: (name) => `Você foi transferido para ${name}.`,
    ended_visitor: "Você encerrou a conversa.",
    ended_operator: "O atendente encerrou a conversa.",
    ended_queue_timeout: "Ninguém pôde atender a tempo. Desculpe!",
    ended_visitor_idle: "A conversa foi encerrada por falta de resposta.",
    ended_visitor_gone: "A conversa foi encerrada enquanto você estava ausente.",
    ended_bot: "O assistente encerrou a conversa.",
    ended_bot_timeout: "A conversa foi encerrada por falta de resposta.",
    bot_is: "Assistente automático",
    assistant: "Assistente",
    bot_opens_at: (when) => `Volta a atender ${when}.`,
    answer_label: "Sua resposta",
    email_answer: "Seu endereço de e-mail",
    phone_answer: "Seu telefone",
    number_answer: "Um número",
    typing: (name) => `${name} está digitando…`,
    message_label: "Sua mensagem",
    send: "Enviar",
    emoji: "Emoji",
    end: "Encerrar conversa",
    end_confirm: "Encerrar a conversa?",
    end_yes: "Sim, encerrar",
    end_no: "Continuar",
    sending: "enviando…",
    failed: "não enviada",
    offline: "Sem conexão — reconectando…",
    reconnected: "Conectado novamente.",
    idle_warning: (s) => (s === null ? "Você ainda está aí?" : `Você ainda está aí? A conversa será encerrada em ${duration(s, "pt-BR")} sem resposta.`),
    survey_title: "Como foi o atendimento?",
    default_survey: { rating: "Como você avalia esta conversa?", comment: "Quer nos dizer algo mais?" },
    survey_send: "Enviar",
    survey_skip: "Não responder",
    survey_required: "obrigatória",
    rating_of: (n, max) => `${n} de ${max}`,
    transcript_offer: "Receber esta conversa por e-mail",
    transcript_send: "Enviar",
    transcript_sent: (email) => `Vamos enviá-la para ${email}.`,
    transcript_error: {
      invalid_email: "Informe um endereço de e-mail.",
      too_many_transcripts: "A conversa já foi enviada ao número máximo de endereços.",
      transcript_unavailable: "O envio por e-mail não está disponível.",
      transcript_disabled: "O envio por e-mail não está disponível para este serviço.",
    },
    new_chat: "Iniciar nova conversa",
    closed_title: "Conversa encerrada",
    out_of_hours_title: "Estamos fora do horário",
    opens_at: (when) => `Voltamos a atender ${when}.`,
    leave_message: "Você pode deixar uma mensagem; responderemos quando voltarmos.",
    superseded: "Esta conversa foi aberta em outra janela.",
    unavailable: "O chat não está disponível agora. Tente novamente mais tarde.",
    error_rate_limited: "Muitas tentativas. Aguarde um momento e tente novamente.",
    error_captcha: "Não foi possível concluir a verificação. Tente novamente.",
    error_generic: "Algo deu errado. Tente novamente.",
    message_limit: "Você já deixou o máximo de mensagens que podemos receber até voltarmos.",
    new_messages: (n) => (n === 1 ? "1 nova mensagem" : `${n} novas mensagens`),
    you_said: "Você",
  },
};

/** The page's language: the service's setting, else the browser's first supported one. */
export function language(setting, preferred) {
  if (setting && setting !== "auto" && STRINGS[setting]) return setting;
  for (const tag of preferred || []) {
    if (tag.toLowerCase().startsWith("pt")) return "pt-BR";
    if (tag.toLowerCase().startsWith("en")) return "en";
  }
  return "en";
}

export function strings(lang) {
  return { ...(STRINGS[lang] || STRINGS.en), ...(FILE_WORDS[lang] || FILE_WORDS.en) };
}

function duration(seconds, lang) {
  const minutes = Math.max(1, Math.round(seconds / 60));
  if (seconds < 60) return lang === "pt-BR" ? "menos de 1 minuto" : "under a minute";
  if (minutes < 60) return lang === "pt-BR" ? `${minutes} min` : `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  const rest = minutes % 60;
  return rest ? `${hours} h ${rest} min` : `${hours} h`;
}

/** A time the visitor reads: "today at 13:00", "tomorrow at 08:00", or a date. */
export function when(iso, lang, now = new Date()) {
  const at = new Date(iso);
  const time = at.toLocaleTimeString(lang, { hour: "2-digit", minute: "2-digit" });
  const day = (d) => new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
  const days = Math.round((day(at) - day(now)) / 86_400_000);
  if (days === 0) return lang === "pt-BR" ? `hoje às ${time}` : `today at ${time}`;
  if (days === 1) return lang === "pt-BR" ? `amanhã às ${time}` : `tomorrow at ${time}`;
  const date = at.toLocaleDateString(lang, { weekday: "long", day: "numeric", month: "long" });
  return lang === "pt-BR" ? `${date}, às ${time}` : `on ${date} at ${time}`;
}
