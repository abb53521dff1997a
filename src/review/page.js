// The review page's behaviour: filters, sorting and keyboard navigation over cards that are
// already in the page. No network, no storage: the page works from a file.
(() => {
  const grid = document.getElementById("cards");
  const cards = Array.from(grid.querySelectorAll(".card"));
  const buttons = Array.from(document.querySelectorAll("[data-filter]"));
  const sort = document.getElementById("sort");
  let current = null;

  // Cards in the order shown (sorting moves them), without those filtered out.
  const visible = () => Array.from(grid.children).filter((c) => !c.hidden);

  function filter(name) {
    for (const card of cards) card.hidden = !card.dataset.f.includes(" " + name + " ");
    for (const b of buttons) b.setAttribute("aria-pressed", String(b.dataset.filter === name));
    const first = visible()[0];
    if (current && current.hidden) focus(first, false);
  }

  function score(card) {
    return card.dataset.score === "" ? null : Number(card.dataset.score);
  }

  function order(how) {
    const byInput = (a, b) => a.dataset.order - b.dataset.order;
    const byScore = (sign) => (a, b) => {
      const [x, y] = [score(a), score(b)];
      if (x === null || y === null) return (x === null) - (y === null) || byInput(a, b);
      return sign * (y - x) || byInput(a, b);
    };
    const compare = how === "order" ? byInput : byScore(how === "score-asc" ? -1 : 1);
    grid.append(...cards.slice().sort(compare));
  }

  function focus(card, scroll = true) {
    if (!card) return;
    if (current) current.tabIndex = -1;
    current = card;
    card.tabIndex = 0;
    card.focus({ preventScroll: !scroll });
    if (scroll) card.scrollIntoView({ block: "nearest" });
  }

  // Cards in one row share their top edge: the number of columns, for up and down.
  function columns(list) {
    const top = list[0] ? list[0].offsetTop : 0;
    const n = list.findIndex((c) => c.offsetTop !== top);
    return n === -1 ? list.length : n;
  }

  function move(step) {
    const list = visible();
    if (!list.length) return;
    const at = list.indexOf(current);
    const next = at === -1 ? 0 : Math.min(list.length - 1, Math.max(0, at + step));
    focus(list[next]);
  }

  buttons.forEach((b) => b.addEventListener("click", () => filter(b.dataset.filter)));
  sort.addEventListener("change", () => order(sort.value));
  grid.addEventListener("click", (e) => {
    const card = e.target.closest(".card");
    if (card) focus(card, false);
  });

  document.addEventListener("keydown", (e) => {
    if (e.altKey || e.ctrlKey || e.metaKey || e.target === sort) return;
    const keys = {
      ArrowRight: () => move(1), l: () => move(1), j: () => move(1),
      ArrowLeft: () => move(-1), h: () => move(-1), k: () => move(-1),
      ArrowDown: () => move(columns(visible())), ArrowUp: () => move(-columns(visible())),
      Home: () => focus(visible()[0]), End: () => focus(visible().slice(-1)[0]),
      Enter: () => current && current.classList.toggle("big"),
      " ": () => current && current.classList.toggle("big"),
      Escape: () => current && current.classList.remove("big"),
      s: () => {
        sort.selectedIndex = (sort.selectedIndex + 1) % sort.options.length;
        order(sort.value);
      },
    };
    const digit = Number(e.key);
    if (Number.isInteger(digit) && digit >= 1 && digit <= buttons.length) {
      filter(buttons[digit - 1].dataset.filter);
    } else if (keys[e.key]) {
      keys[e.key]();
    } else {
      return;
    }
    e.preventDefault();
  });

  order(sort.value);
  filter("all");
  focus(visible()[0], false);
})();
