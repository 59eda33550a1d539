/* The campaign page: channels put in order with up/down buttons, the audience estimate kept
   up to date as the marketer edits, a confirmation before launching or cancelling, and the
   crontab fields shown only for a recurring schedule. Loaded as a static file (the
   Content-Security-Policy runs no inline handler). Without it the page still works: the
   channel rows keep their order numbers, the crontab fields stay shown, the buttons act at
   once and the estimate is not shown. */
(function () {
  "use strict";

  function channelWidget(widget, changed) {
    var list = widget.querySelector(".channel-order-rows");
    function renumber() {
      Array.prototype.forEach.call(list.children, function (row, index) {
        row.querySelector("input[type=number]").value = index + 1;
        row.querySelector(".channel-up").disabled = index === 0;
        row.querySelector(".channel-down").disabled = index === list.children.length - 1;
      });
      changed();
    }
    Array.prototype.forEach.call(list.children, function (row) {
      row.querySelector(".channel-order-number").hidden = true;
      row.querySelector(".channel-order-buttons").hidden = false;
    });
    widget.addEventListener("click", function (event) {
      var button = event.target.closest("button");
      if (!button || !widget.contains(button)) { return; }
      var row = button.closest(".channel-order-row");
      if (button.classList.contains("channel-up") && row.previousElementSibling) {
        list.insertBefore(row, row.previousElementSibling);
      } else if (button.classList.contains("channel-down") && row.nextElementSibling) {
        list.insertBefore(row.nextElementSibling, row);
      }
      renumber();
      button.focus();
    });
    renumber();
  }

  var FIELDS = ["segment", "email_template", "sms_template", "in_app_template", "sms_enabled", "is_marketing",
                "cap_exempt", "reentry_days", "holdout_percent"];

  function number(n) { return Number(n).toLocaleString("en-US"); }

  function estimateBox(box) {
    var form = box.closest("form");
    var timer = null;
    var latest = 0;

    function params() {
      var data = new FormData(form);
      var query = new URLSearchParams();
      data.forEach(function (value, name) {
        if (FIELDS.indexOf(name) >= 0 || name === "channels" || name.indexOf("channels_order_") === 0) {
          query.append(name, value);
        }
      });
      if (box.dataset.campaign) { query.append("campaign", box.dataset.campaign); }
      return query;
    }

    function line(list, label, value, className) {
      var item = document.createElement("li");
      if (className) { item.className = className; }
      var name = document.createElement("span"); name.textContent = label;
      var count = document.createElement("strong"); count.textContent = value;
      item.appendChild(name); item.appendChild(document.createTextNode(" ")); item.appendChild(count);
      list.appendChild(item);
    }

    function draw(data) {
      box.textContent = "";
      delete box.dataset.reachable;
      if (!data.ok) {
        var note = document.createElement("span"); note.className = "estimate-note"; note.textContent = data.error;
        box.appendChild(note);
        return;
      }
      var about = data.approximate ? "about " : "";
      var list = document.createElement("ul"); list.className = "estimate-funnel";
      line(list, "Customers in the segment:", number(data.segment));
      var on = data.usable_channels.length ? data.usable_channels.join(", ") : "no usable channel";
      line(list, "With consent and an address on " + on + ":", about + number(data.consent));
      line(list, "Suppressed (bounced, complained or blocked):", "−" + about + number(data.suppressed));
      line(list, "Already reached by this campaign (re-entry):", "−" + about + number(data.reentry));
      line(list, "Over a frequency cap:", "−" + about + number(data.capped));
      if (data.holdout) { line(list, "Holdout (gets nothing, measured against):", "−about " + number(data.holdout)); }
      line(list, "Estimated reachable:", (data.approximate || data.holdout ? "about " : "") + number(data.reachable),
           "estimate-total");
      box.appendChild(list);
      if (data.approximate) {
        var sample = document.createElement("span"); sample.className = "estimate-note";
        sample.textContent = "Counted on a sample of " + number(data.sampled) + " customers.";
        box.appendChild(sample);
      }
      // A ticked channel without its template sends nothing: say so beside the others' count.
      (data.missing || []).forEach(function (text) {
        var missing = document.createElement("div"); missing.className = "estimate-note estimate-missing";
        missing.textContent = text;
        box.appendChild(missing);
      });
      box.dataset.reachable = data.reachable;
    }

    function refresh() {
      var ticket = ++latest;
      box.classList.add("estimate-loading");
      fetch(box.dataset.url + "?" + params().toString(), {credentials: "same-origin"})
        .then(function (r) { return r.json(); })
        .then(function (data) { if (ticket === latest) { draw(data); } })
        .catch(function () { if (ticket === latest) { draw({ok: false, error: "The estimate is not available."}); } })
        .then(function () { if (ticket === latest) { box.classList.remove("estimate-loading"); } });
    }

    function later() { clearTimeout(timer); timer = setTimeout(refresh, 300); }

    form.addEventListener("change", function (event) {
      var name = event.target.name || "";
      if (FIELDS.indexOf(name) >= 0 || name === "channels" || name.indexOf("channels_order_") === 0) { later(); }
    });
    refresh();
    return later;
  }

  // "Send to about 89 customers now?" when the estimate knows, and what re-entry does when the
  // campaign ran before: a launch sends at once and cannot be undone.
  function launchQuestion(form, box) {
    var reachable = box && box.dataset.reachable !== undefined ? Number(box.dataset.reachable) : NaN;
    var question = isNaN(reachable) ? "Send this campaign now?"
      : "Send to about " + number(reachable) + " customer" + (reachable === 1 ? "" : "s") + " now?";
    return form.dataset.note ? question + " " + form.dataset.note : question;
  }

  // Minute, hour and day fields mean something only for a recurring schedule, the date only for
  // a one-off: each shows for its kind (a part holding an error stays shown).
  function scheduleKind(select) {
    var cron = document.querySelector("fieldset.cron-schedule");
    var once = document.querySelector(".form-row.field-scheduled_at");
    function show() {
      var recurring = select.value === "recurring";
      // style, not the hidden attribute: the admin's own display rules would override that
      if (cron && !cron.querySelector(".errorlist")) { cron.style.display = recurring ? "" : "none"; }
      if (once && !once.querySelector(".errorlist")) { once.style.display = recurring ? "none" : ""; }
    }
    select.addEventListener("change", show);
    show();
  }

  function init() {
    var box = document.getElementById("audience-estimate");
    var later = box ? estimateBox(box) : function () {};
    document.querySelectorAll(".channel-order").forEach(function (widget) { channelWidget(widget, later); });
    var kind = document.getElementById("id_schedule_kind");
    if (kind) { scheduleKind(kind); }
    document.querySelectorAll("form.campaign-control").forEach(function (form) {
      var launch = form.dataset.verb === "launch";
      if (!launch && !form.dataset.confirm) { return; }
      form.addEventListener("submit", function (event) {
        var question = launch ? launchQuestion(form, box) : form.dataset.confirm;
        if (!window.confirm(question)) { event.preventDefault(); }
      });
    });
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", init); } else { init(); }
})();
