// The console's only script: the segment builder's live preview and its condition helper.
(function () {
  "use strict";
  const rule = document.getElementById("segment-rule");
  const output = document.getElementById("segment-preview");
  if (!rule || !output) return;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  let timer = null;
  let asked = 0;

  function show(text) { output.textContent = text; }

  async function preview() {
    let parsed;
    try { parsed = JSON.parse(rule.value); } catch (e) { show("rule: not valid JSON yet"); return; }
    const mine = ++asked;
    show("counting…");
    const answer = await fetch("/console/segments/preview", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ rule: parsed }),
    });
    if (mine !== asked) return;  // a newer rule was typed meanwhile
    const body = await answer.json();
    if (!answer.ok) { show(body.message || "preview refused"); return; }
    const sample = body.sample.map(function (p) { return p.profile_id; }).join(", ");
    show("size " + body.size + " of " + body.profiles_scanned + " profiles; sample: " +
         (sample || "none"));
  }

  rule.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(preview, 300);
  });

  const add = document.getElementById("helper-add");
  if (add) {
    add.addEventListener("click", function () {
      const trait = document.getElementById("helper-trait").value.trim();
      const op = document.getElementById("helper-op").value;
      const raw = document.getElementById("helper-value").value;
      if (!trait) return;
      const condition = { trait: trait, op: op };
      if (op !== "exists") {
        const number = Number(raw);
        condition.value = raw !== "" && !isNaN(number) ? number : raw;
      }
      let current = null;
      try { current = JSON.parse(rule.value); } catch (e) { current = null; }
      const next = !current ? condition
        : current.and ? { and: current.and.concat([condition]) }
        : { and: [current, condition] };
      rule.value = JSON.stringify(next);
      preview();
    });
  }
  if (rule.value.trim()) preview();
})();
