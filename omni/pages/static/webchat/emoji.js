// The emoji picker: tabs of categories and a grid of buttons, usable with the keyboard
// (Tab into the grid, arrows move, Enter or Space picks, Escape closes). Loaded on first use.

import { h } from "./dom.js";
import { EMOJI } from "./emoji-data.js";

const CATEGORIES = {
  en: { smileys: "Smileys", people: "People", hearts: "Hearts", nature: "Nature", food: "Food", activities: "Activities", travel: "Travel", objects: "Objects", symbols: "Symbols" },
  "pt-BR": { smileys: "Carinhas", people: "Pessoas", hearts: "Corações", nature: "Natureza", food: "Comida", activities: "Atividades", travel: "Viagem", objects: "Objetos", symbols: "Símbolos" },
};
const COLUMNS = 8;

export function picker(lang, choose, close) {
  const names = CATEGORIES[lang] || CATEGORIES.en;
  const grid = h("div", { class: "omni-emoji-grid", role: "grid" });
  const tabs = h("div", { class: "omni-emoji-tabs", role: "tablist" });
  const show = (category) => {
    for (const tab of tabs.children) {
      const selected = tab.dataset.category === category;
      tab.setAttribute("aria-selected", String(selected));
      tab.tabIndex = selected ? 0 : -1; // one stop in the Tab order; arrows move between tabs
    }
    const rows = [];
    const list = EMOJI[category];
    for (let i = 0; i < list.length; i += COLUMNS) {
      rows.push(
        h(
          "div",
          { role: "row" },
          list.slice(i, i + COLUMNS).map((emoji, j) =>
            h("button", { type: "button", role: "gridcell", class: "omni-emoji", tabindex: i + j === 0 ? "0" : "-1", onclick: () => choose(emoji) }, emoji),
          ),
        ),
      );
    }
    grid.replaceChildren(...rows);
  };
  for (const category of Object.keys(EMOJI)) {
    tabs.append(
      h("button", { type: "button", role: "tab", "data-category": category, "aria-label": names[category], title: names[category], onclick: () => show(category) }, EMOJI[category][0]),
    );
  }
  tabs.addEventListener("keydown", (event) => {
    const all = [...tabs.children];
    const at = all.indexOf(document.activeElement);
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (step && at >= 0) {
      event.preventDefault();
      const next = all[(at + step + all.length) % all.length];
      show(next.dataset.category);
      next.focus();
    }
  });
  grid.addEventListener("keydown", (event) => {
    const cells = [...grid.querySelectorAll("button")];
    const at = cells.indexOf(document.activeElement);
    const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: COLUMNS, ArrowUp: -COLUMNS, Home: -at, End: cells.length - 1 - at };
    if (event.key in moves && at >= 0) {
      event.preventDefault();
      const next = cells[Math.min(cells.length - 1, Math.max(0, at + moves[event.key]))];
      cells[at].tabIndex = -1;
      next.tabIndex = 0;
      next.focus();
    }
  });
  const panel = h("div", { class: "omni-emoji-picker", onkeydown: (event) => event.key === "Escape" && (event.preventDefault(), close()) }, tabs, grid);
  show(Object.keys(EMOJI)[0]);
  return panel;
}
