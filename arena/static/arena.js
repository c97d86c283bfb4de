// The battle page's own script (issue 9): a character counter under the prompt, the prompt
// checks a browser can make before sending (the server makes them again), and voting from the
// keyboard. Listeners sit on the document in the capture phase, so they work whatever Gradio
// re-renders, and run before Gradio's own handlers.
(() => {
  const VOTE_KEYS = { a: "vote-a", b: "vote-b", t: "vote-tie", x: "vote-both-bad" };
  // Characters the server does not count as text (arena.battles.check_text): spaces, controls,
  // zero-width and bidi marks, combining marks alone, blank letters.
  const BLANK = /^[\s\p{Cc}\p{Cf}\p{Mn}\p{Me}\u115f\u1160\u3164\uffa0\u2800]*$/u;

  const meter = () => document.getElementById("prompt-meter");
  const limit = () => Number(meter()?.dataset.max) || Infinity;
  // Code points, as the server counts, after the trim the server makes.
  const length = (text) => [...text.trim()].length;
  const inPrompt = (el) => el instanceof Element && el.closest("#prompt") !== null;
  const shown = (el) => el !== null && el.offsetParent !== null && !el.disabled;

  function problem(text) {
    if (BLANK.test(text)) return "Type a prompt first.";
    const n = length(text);
    const max = limit();
    if (n > max) {
      return `Too long to send: ${n.toLocaleString()} characters; the limit is ` +
        `${max.toLocaleString()}. Shorten it, and press Enter again.`;
    }
    return null;
  }

  function count(text, why) {
    const box = meter();
    if (!box) return;
    const n = length(text);
    const max = limit();
    box.classList.toggle("over", n > max);
    box.classList.toggle("refused", Boolean(why));
    box.textContent = why || (n ? `${n.toLocaleString()} / ${max.toLocaleString()}` : "");
  }

  function guard(event, textarea) {
    const why = problem(textarea.value);
    count(textarea.value, why);
    if (why) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }

  document.addEventListener("input", (event) => {
    if (inPrompt(event.target)) count(event.target.value, null);
  }, true);

  for (const type of ["keydown", "keypress"]) {
    document.addEventListener(type, (event) => {
      const target = event.target;
      if (inPrompt(target)) {
        if (event.key === "Enter" && !event.shiftKey && !event.isComposing) guard(event, target);
        return;
      }
      if (type !== "keydown" || event.ctrlKey || event.metaKey || event.altKey) return;
      if (target instanceof Element && target.closest("input, textarea, select, [contenteditable]")) {
        return;
      }
      const id = VOTE_KEYS[event.key.toLowerCase()];
      const button = id ? document.getElementById(id) : null;
      if (shown(button)) {
        event.preventDefault();
        button.click();
      }
    }, true);
  }

  document.addEventListener("click", (event) => {
    if (!(event.target instanceof Element) || !event.target.closest("#send")) return;
    const textarea = document.querySelector("#prompt textarea");
    if (textarea) guard(event, textarea);
  }, true);

  // A new battle or a sent prompt empties the box: the counter follows.
  new MutationObserver(() => {
    const textarea = document.querySelector("#prompt textarea");
    const box = meter();
    if (textarea && box && !textarea.value && !box.classList.contains("refused")) count("", null);
  }).observe(document.documentElement, { subtree: true, childList: true });
})();
