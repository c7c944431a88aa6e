// ductal: branching logic and calc fields evaluated live in the browser.
// The expressions arrive as the JSON syntax trees of ductal.protocols.logic (Expression.to_json);
// this evaluator follows the same rules (blank, loose comparison, blank on error). The server
// evaluates them again on save: this is only for the person entering data.
(function () {
  "use strict";

  function isBlank(v) {
    if (v === null || v === undefined) return true;
    if (typeof v === "string") return v.trim() === "";
    if (typeof v === "number") return Number.isNaN(v);
    if (Array.isArray(v)) return v.length === 0;
    return false;
  }
  var NUMERIC = /^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$/;
  var DATE = /^\d{4}-\d{2}-\d{2}$/;
  function num(v) {
    if (typeof v === "boolean") return v ? 1 : 0;
    if (typeof v === "number") return Number.isNaN(v) ? null : v;
    if (typeof v === "string" && NUMERIC.test(v)) return parseFloat(v);
    return null;
  }
  function moment(v) {
    if (v instanceof Date) return v.getTime();
    if (typeof v === "string" && (DATE.test(v.trim()) || /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}/.test(v.trim()))) {
      var s = v.trim(); if (DATE.test(s)) s += "T00:00:00Z"; else if (!/(Z|[+-]\d{2}:?\d{2})$/.test(s)) s += "Z";
      var t = Date.parse(s.replace(" ", "T")); return Number.isNaN(t) ? null : t;
    }
    return null;
  }
  function text(v) {
    if (typeof v === "boolean") return v ? "1" : "0";
    if (typeof v === "number" && Number.isInteger(v)) return String(v);
    return String(v);
  }
  function truthy(v) {
    if (isBlank(v)) return false;
    if (typeof v === "boolean") return v;
    var n = num(v); if (n !== null) return n !== 0;
    return true;
  }
  function compare(op, a, b) {
    var x, y, na = num(a), nb = num(b);
    if (na !== null && nb !== null) { x = na; y = nb; }
    else { var ma = moment(a), mb = moment(b);
      if (ma !== null && mb !== null) { x = ma; y = mb; } else { x = text(a); y = text(b); } }
    switch (op) { case "=": return x === y; case "<>": return x !== y; case "<": return x < y;
      case "<=": return x <= y; case ">": return x > y; default: return x >= y; }
  }
  function arith(op, a, b) {
    var x = num(a), y = num(b); if (x === null || y === null) return null;
    var r; if (op === "+") r = x + y; else if (op === "-") r = x - y; else if (op === "*") r = x * y;
    else { if (y === 0) return null; r = x / y; }
    return Number.isFinite(r) ? r : null;
  }
  function nums(args) { return args.map(num).filter(function (n) { return n !== null; }); }
  var DAYS = { d: 1, w: 7, m: 30.44, y: 365.2425, h: 1 / 24 };
  var FN = {
    datediff: function (a, b, u) { u = u === undefined ? "d" : u; var s = moment(a), e = moment(b);
      if (s === null || e === null || !(u in DAYS)) return null; return (e - s) / 86400000 / DAYS[u]; },
    isblank: function (x) { return isBlank(x); },
    sum: function () { var n = nums([].slice.call(arguments)); return n.length ? n.reduce(function (p, c) { return p + c; }, 0) : null; },
    min: function () { var n = nums([].slice.call(arguments)); return n.length ? Math.min.apply(null, n) : null; },
    max: function () { var n = nums([].slice.call(arguments)); return n.length ? Math.max.apply(null, n) : null; },
    mean: function () { var n = nums([].slice.call(arguments)); return n.length ? n.reduce(function (p, c) { return p + c; }, 0) / n.length : null; },
    round: function (x, d) { var n = num(x), p = num(d === undefined ? 0 : d); if (n === null || p === null) return null; var f = Math.pow(10, p); return Math.round(n * f) / f; },
    abs: function (x) { var n = num(x); return n === null ? null : Math.abs(n); }
  };
  function ev(node, values) {
    switch (node.type) {
      case "number": case "string": return node.value;
      case "field": {
        var v = values[node.name];
        if (node.code === null || node.code === undefined) { if (Array.isArray(v)) return v.length ? v.slice().sort().join(",") : null; return v; }
        if (typeof v === "string") v = v.split(",").map(function (s) { return s.trim(); });
        return Array.isArray(v) && v.indexOf(node.code) >= 0 ? "1" : "0";
      }
      case "unary": { var o = ev(node.operand, values);
        if (node.op === "not") return !truthy(o); var n = num(o); if (n === null) return null; return node.op === "-" ? -n : n; }
      case "binary": {
        var op = node.op;
        if (op === "and") return truthy(ev(node.left, values)) && truthy(ev(node.right, values));
        if (op === "or") return truthy(ev(node.left, values)) || truthy(ev(node.right, values));
        if (["=", "<>", "<", "<=", ">", ">="].indexOf(op) >= 0) {
          if (op === "=" || op === "<>") {
            if (node.right.type === "string" && node.right.value === "") return isBlank(ev(node.left, values)) === (op === "=");
            if (node.left.type === "string" && node.left.value === "") return isBlank(ev(node.right, values)) === (op === "=");
          }
          var l = ev(node.left, values), r = ev(node.right, values);
          if (isBlank(l) || isBlank(r)) return false;
          return compare(op, l, r);
        }
        return arith(op, ev(node.left, values), ev(node.right, values));
      }
      case "call": {
        if (node.name === "if") return truthy(ev(node.args[0], values)) ? ev(node.args[1], values) : ev(node.args[2], values);
        if (node.name === "today") return new Date().toISOString().slice(0, 10);
        var f = FN[node.name]; if (!f) return null;
        return f.apply(null, node.args.map(function (a) { return ev(a, values); }));
      }
    }
    return null;
  }
  function evaluate(node, values) { try { return ev(node, values); } catch (e) { return null; } }

  function readValues(form, shown) {
    var values = {};
    form.querySelectorAll(".field[data-key]").forEach(function (box) {
      var key = box.dataset.key, type = box.dataset.type;
      if (shown && !shown[key]) return;
      if (type === "multi_choice") {
        values[key] = [].map.call(box.querySelectorAll("input:checked"), function (i) { return i.value; });
      } else if (type === "calc") {
        values[key] = box.dataset.value === undefined || box.dataset.value === "" ? null : box.dataset.value;
      } else {
        var checked = box.querySelector("input[type=radio]:checked");
        var input = box.querySelector("input:not([type=radio]):not([type=checkbox]), select, textarea");
        values[key] = checked ? checked.value : input ? input.value : null;
      }
    });
    return values;
  }
  function refresh(form) {
    var context = {};
    try { context = JSON.parse(form.dataset.context || "{}"); } catch (e) { context = {}; }
    var boxes = form.querySelectorAll(".field[data-key]");
    var shown = {};
    boxes.forEach(function (b) { shown[b.dataset.key] = true; });
    for (var pass = 0; pass <= boxes.length; pass++) {
      var values = Object.assign({}, context, readValues(form, shown));
      var changed = false;
      boxes.forEach(function (b) {
        if (b.dataset.calc) {
          var r = evaluate(JSON.parse(b.dataset.calc), values), d = b.dataset.decimals;
          var out = isBlank(r) ? "" : (typeof r === "number" && d !== "" ? r.toFixed(parseInt(d, 10)) : String(r));
          b.dataset.value = out; var o = b.querySelector("output"); if (o) o.textContent = out || "—";
        }
        if (!b.dataset.showIf) return;
        var now = truthy(evaluate(JSON.parse(b.dataset.showIf), values));
        if (now !== shown[b.dataset.key]) { shown[b.dataset.key] = now; changed = true; }
      });
      if (!changed) break;
    }
    boxes.forEach(function (b) { b.classList.toggle("hidden-by-logic", !shown[b.dataset.key]); });
  }
  function markChanged(form) {
    var reason = document.getElementById("field-reason");
    if (reason) reason.classList.add("changed");
  }
  // Sessions end after a period of inactivity on the server. While someone is typing, the page
  // tells the server they are still there; after a real idle period it goes to the sign-in page,
  // and the entries of an unsaved form come back from this tab's storage afterwards.
  function watchIdle() {
    var minutes = parseInt(document.body.dataset.idleMinutes || "", 10);
    if (!minutes) return;
    var last = Date.now(), pinged = Date.now();
    function active() {
      last = Date.now();
      if (last - pinged > 60000) { pinged = last; fetch("/api/v1/me", { credentials: "same-origin" }); }
    }
    ["keydown", "pointerdown", "input"].forEach(function (e) { document.addEventListener(e, active, true); });
    setInterval(function () {
      if (Date.now() - last > minutes * 60000) {
        window.location.href = "/login?expired=1&next=" + encodeURIComponent(window.location.pathname + window.location.search.replace(/[?&]msg=[^&]*/, ""));
      }
    }, 30000);
  }
  function draftKey() {
    var m = window.location.search.match(/[?&]instance=(\d+)/);
    return "ductal-draft:" + window.location.pathname + (m ? "?instance=" + m[1] : "");
  }
  function keepDraft(form) {
    var values = {};
    form.querySelectorAll("input[name^=f_], select[name^=f_], textarea[name^=f_], textarea[name=reason]").forEach(function (el) {
      if ((el.type === "radio" || el.type === "checkbox") && !el.checked) return;
      (values[el.name] = values[el.name] || []).push(el.value);
    });
    try { sessionStorage.setItem(draftKey(), JSON.stringify(values)); } catch (e) { /* storage full or off */ }
  }
  function restoreDraft(form) {
    if (document.getElementById("flash")) {  // just saved: the draft is stored for real
      try { sessionStorage.removeItem(draftKey()); sessionStorage.removeItem("ductal-draft:" + window.location.pathname); } catch (e) { /* ignore */ }
      return;
    }
    if (document.getElementById("form-error")) return;  // the server sent the entries back itself
    var raw = null;
    try { raw = sessionStorage.getItem(draftKey()); } catch (e) { raw = null; }
    if (!raw) return;
    var values = JSON.parse(raw);
    form.querySelectorAll("input[name^=f_], select[name^=f_], textarea[name^=f_], textarea[name=reason]").forEach(function (el) {
      var mine = values[el.name];
      if (el.type === "radio" || el.type === "checkbox") el.checked = !!mine && mine.indexOf(el.value) >= 0;
      else el.value = mine ? mine[0] : "";
    });
    var note = document.getElementById("draft-restored");
    if (note) note.hidden = false;
  }
  document.addEventListener("DOMContentLoaded", function () {
    watchIdle();
    var form = document.getElementById("entry-form");
    if (!form) return;
    if (form.dataset.draft !== undefined) restoreDraft(form);
    var cancel = document.getElementById("cancel");
    if (cancel) cancel.addEventListener("click", function () { try { sessionStorage.removeItem(draftKey()); } catch (e) { /* ignore */ } });
    refresh(form);
    form.addEventListener("input", function () { refresh(form); markChanged(form); if (form.dataset.draft !== undefined) keepDraft(form); });
    form.addEventListener("change", function () { refresh(form); markChanged(form); if (form.dataset.draft !== undefined) keepDraft(form); });
  });
  window.ductalLogic = { evaluate: evaluate, truthy: truthy };
})();
