// The battle page's own script (issue 9): a character counter under the prompt, the prompt
// checks a browser can make before sending (the server makes them again), and voting from the
// keyboard. Listeners sit on the document in the capture phase, so they work whatever Gradio
// re-renders, and run before Gradio's own handlers.
(() => {
  // Digits, not letters: a follow-up typed while the focus was elsewhere must not vote.
  const VOTE_KEYS = { 1: "vote-a", 2: "vote-b", 3: "vote-tie", 4: "vote-both-bad" };
  // Characters the server does not count as text (arena.battles.check_text): spaces, controls,
  // zero-width and bidi marks, combining marks alone, blank letters.
  const BLANK = /^[\s\p{Cc}\p{Cf}\p{Cn}\p{Cs}\p{Mn}\p{Me}\u115f\u1160\u3164\uffa0\u2800]*$/u;
  // What Python's str.strip() removes (not U+FEFF, which JavaScript's trim() also removes).
  const EDGES = /^[\t\n\v\f\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+|[\t\n\v\f\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$/g;

  const meter = () => document.getElementById("prompt-meter");
  const limit = () => Number(meter()?.dataset.max) || Infinity;
  // Code points, as the server counts, after the NULs it drops and the trim it makes.
  const length = (text) => [...text.replaceAll("\0", "").replace(EDGES, "")].length;
  const inPrompt = (el) => el instanceof Element && el.closest("#prompt") !== null;
  const shown = (el) => el !== null && el.offsetParent !== null && !el.disabled;

  function problem(text) {
    if (BLANK.test(text)) return "Type a message first.";
    const n = length(text);
    const max = limit();
    if (n > max) {
      return `Too long to send: ${n.toLocaleString("en-US")} characters; the limit is ` +
        `${max.toLocaleString("en-US")}. Shorten it, and press Enter again.`;
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
    box.textContent = why || (n ? `${n.toLocaleString("en-US")} / ${max.toLocaleString("en-US")}` : "");
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
        if (event.key === "Escape" && type === "keydown") target.blur();  // then 1 to 4 vote
        return;
      }
      if (type !== "keydown" || event.ctrlKey || event.metaKey || event.altKey) return;
      if (target instanceof Element && target.closest("input, textarea, select, [contenteditable]")) {
        return;
      }
      const id = VOTE_KEYS[event.key];
      const button = id ? document.getElementById(id) : null;
      if (shown(button)) {
        event.preventDefault();
        button.click();
      }
    }, true);
  }

  // One vote per press: a second vote (key or click) within two seconds of the first is
  // dropped here, so the vote stored is the first the voter gave, not whichever of two events
  // the server happened to finish first (it would refuse the second one anyway).
  let lastVote = -Infinity;
  document.addEventListener("click", (event) => {
    if (!(event.target instanceof Element) || !event.target.closest("#vote-row button")) return;
    const now = performance.now();
    if (now - lastVote < 2000) {
      event.preventDefault();
      event.stopImmediatePropagation();
      return;
    }
    lastVote = now;
  }, true);

  document.addEventListener("click", (event) => {
    if (!(event.target instanceof Element) || !event.target.closest("#send")) return;
    const textarea = document.querySelector("#prompt textarea");
    if (textarea) guard(event, textarea);
  }, true);

  // A new battle or a sent prompt empties the box: the counter follows. And when the box is
  // usable again after the answers (it is disabled while they stream, which drops the focus),
  // typing goes back into it: a follow-up typed straight away must not land on the vote keys.
  // Only where there is a real keyboard: on a phone, focusing the box would pop up the
  // on-screen keyboard, and there are no vote keys to land on anyway. The box's first
  // appearance counts as becoming usable, for a page just (re)loaded.
  const keyboard = window.matchMedia("(pointer: fine)").matches;
  let wasDisabled = true;
  new MutationObserver(() => {
    const textarea = document.querySelector("#prompt textarea");
    const box = meter();
    if (textarea && box && !textarea.value && !box.classList.contains("refused")) count("", null);
    if (!textarea) return;
    if (keyboard && wasDisabled && !textarea.disabled) {
      const focus = document.activeElement;
      if (!focus || focus === document.body) textarea.focus({ preventScroll: true });
    }
    wasDisabled = textarea.disabled;
  }).observe(document.documentElement, {
    subtree: true, childList: true, attributes: true, attributeFilter: ["disabled"],
  });
})();
