// The segment form's live size: after the marketer stops editing a filter for a moment, the
// form's current (unsaved) values are posted to the segment admin's live-size endpoint and the
// count, a few members (masked as the server decides) and any field errors are shown.
// Loaded as a static file: the Content-Security-Policy allows no inline handlers.
(function () {
  "use strict";
  const DEBOUNCE_MS = 400;

  function init() {
    const box = document.getElementById("segment-members");
    const form = document.getElementById("segment_form");
    if (!box || !form || !box.dataset.liveSizeUrl) return;
    const count = document.getElementById("segment-live-count");
    const note = document.getElementById("segment-live-note");
    const errors = document.getElementById("segment-live-errors");
    const sample = document.getElementById("segment-sample");
    let timer = null;
    let inFlight = null;

    function showErrors(fieldErrors) {
      errors.replaceChildren();
      for (const [field, messages] of Object.entries(fieldErrors)) {
        for (const message of messages) {
          const item = document.createElement("li");
          const label = form.querySelector(`label[for="id_${field}"]`);
          item.textContent = `${label ? label.textContent.replace(/:$/, "") : field}: ${message}`;
          errors.append(item);
        }
      }
      errors.hidden = errors.childElementCount === 0;
    }

    function showSample(rows) {
      const body = sample.tBodies[0];
      body.replaceChildren();
      for (const row of rows) {
        const tr = document.createElement("tr");
        const first = document.createElement("td");
        const link = document.createElement("a");
        link.href = row.url;
        link.textContent = row.external_id;
        first.append(link);
        tr.append(first);
        for (const value of [row.name, row.email, row.phone, row.lifecycle, row.total_spent]) {
          const cell = document.createElement("td");
          cell.textContent = value;
          tr.append(cell);
        }
        body.append(tr);
      }
      sample.hidden = rows.length === 0;
    }

    function show(result) {
      count.textContent = result.label;
      note.textContent = result.exact
        ? (result.count === 1 ? "customer matches" : "customers match") + " these filters (as edited, not saved yet)."
        : "customers match these filters (an estimate: counting them all took too long).";
      showErrors({});
      showSample(result.sample);
    }

    function refresh() {
      if (inFlight) inFlight.abort();
      inFlight = new AbortController();
      const mine = inFlight;
      count.textContent = "counting…";
      fetch(box.dataset.liveSizeUrl, {
        method: "POST",
        body: new FormData(form),
        credentials: "same-origin",
        headers: {"X-Requested-With": "XMLHttpRequest"},
        signal: mine.signal,
      }).then((response) => response.json().then((body) => {
        if (mine !== inFlight) return;
        if (response.ok) {
          show(body);
        } else {
          count.textContent = "—";
          note.textContent = "Fix the filters below to see how many customers match.";
          showErrors(body.errors || {"": ["The size could not be computed."]});
        }
      })).catch((error) => {
        if (error.name === "AbortError" || mine !== inFlight) return;
        count.textContent = "—";
        note.textContent = "The size could not be computed just now.";
      });
    }

    function schedule(event) {
      if (event.target && ["name", "description"].includes(event.target.name)) return;
      clearTimeout(timer);
      timer = setTimeout(refresh, DEBOUNCE_MS);
    }

    form.addEventListener("input", schedule);
    form.addEventListener("change", schedule);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
