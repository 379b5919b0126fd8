// The survey page's words, in Brazilian Portuguese and English, on top of the WebChat's (whose
// survey words — title, Send, Skip, the default questions — the form shares).

import { strings as chatStrings } from "../webchat/i18n.js";

const PAGE = {
  en: {
    page_title: "Survey",
    about: (ticket) => `About your conversation ${ticket}.`,
    sending: "Sending…",
    thanks_title: "Thank you!",
    thanks: "Your answers were saved.",
    skipped_title: "No problem",
    skipped: "You chose not to answer. Thank you for talking to us.",
    answered_title: "This survey was answered already",
    answered: "Each conversation's survey can be answered once. Thank you!",
    expired_title: "This survey has closed",
    expired: "The time to answer it has passed.",
    none_title: "There is no survey to answer here",
    none: "This conversation has no survey waiting for an answer.",
    invalid_title: "This link does not work",
    invalid: "Check that you opened the whole link, as you received it.",
    invalid_answers: "Some answers are missing or not accepted. Please check them and send again.",
    error: "Your answers could not be sent. Please try again.",
  },
  "pt-BR": {
    page_title: "Pesquisa de satisfação",
    about: (ticket) => `Sobre a sua conversa ${ticket}.`,
    sending: "Enviando…",
    thanks_title: "Obrigado!",
    thanks: "Suas respostas foram registradas.",
    skipped_title: "Tudo bem",
    skipped: "Você preferiu não responder. Obrigado pelo contato.",
    answered_title: "Esta pesquisa já foi respondida",
    answered: "A pesquisa de cada conversa pode ser respondida uma vez. Obrigado!",
    expired_title: "Esta pesquisa foi encerrada",
    expired: "O prazo para respondê-la já passou.",
    none_title: "Não há pesquisa para responder aqui",
    none: "Esta conversa não tem uma pesquisa aguardando resposta.",
    invalid_title: "Este link não funciona",
    invalid: "Confira se você abriu o link inteiro, como o recebeu.",
    invalid_answers: "Há respostas faltando ou não aceitas. Confira e envie novamente.",
    error: "Não foi possível enviar suas respostas. Tente novamente.",
  },
};

export function strings(lang) {
  return { ...chatStrings(lang), ...(PAGE[lang] || PAGE.en) };
}
