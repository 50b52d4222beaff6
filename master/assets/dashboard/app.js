// Lobster's dashboard: the fleet, the live run (Server-Sent Events from the master's merged
// one-second stream), controls through the same API as the CLI, and the run history.
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var palette = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];
  var live = null; // {id, es, points, charts}
  // Whole seconds on the x axes.
  var SECONDS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600];

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function api(method, path, body) {
    var opts = { method: method, headers: {}, credentials: "same-origin" };
    if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
    return fetch(path, opts).then(function (r) {
      if (r.status === 401) { $("login").hidden = false; throw new Error("the master wants its API token"); }
      if (r.status === 204) { return null; }
      return r.json().then(function (j) {
        if (!r.ok) { throw new Error(j.error || ("HTTP " + r.status)); }
        return j;
      });
    });
  }
  function badge(status) { return '<span class="badge ' + esc(status) + '">' + esc(status) + "</span>"; }
  function f(v, d) { return (v === undefined || v === null) ? "" : Number(v).toFixed(d); }

  // --- fleet ---------------------------------------------------------------------------
  // A slave's resources over its last heartbeat: its CPU (the busier of its CPUs' share and
  // its own process'), the host's memory in use, network in + out, sockets.
  function resources(r) {
    if (!r) { return '<td></td><td></td><td></td><td></td>'; }
    var cpu = Math.max(r.cpu_percent, r.process_cpu_percent);
    return '<td class="num' + (cpu > 90 ? ' bad' : '') + '">' + f(cpu, 0) + '</td><td class="num">' + f(r.memory_used_bytes / 1048576, 0) +
      '</td><td class="num">' + f((r.net_rx_bytes_per_s + r.net_tx_bytes_per_s) / 1024, 0) + '</td><td class="num">' + r.sockets + "</td>";
  }
  function fleet() {
    api("GET", "/api/slaves").then(function (slaves) {
      var instances = {};
      var rows = slaves.map(function (s) {
        instances[s.instance_id] = true;
        return "<tr><td><code>" + esc(s.id) + "</code></td><td><code>" + esc(s.instance_id) + "</code></td><td>" +
          esc(s.instance_type) + '</td><td class="num">' + s.slave_index + "</td><td>" +
          esc(s.connected ? (s.draining ? "draining" : s.state) : "disconnected") + "</td><td>" + esc(s.run_id || "") +
          '</td><td class="num">' + s.active_users + '</td><td class="num">' + s.in_flight + '</td>' + resources(s.resources) +
          '<td class="num">' + f(s.idle_ms / 1000, 0) + '</td><td class="num">' + s.last_seen_ms + "</td><td>" + esc(s.expires_at || "") +
          "</td><td>" + esc(s.draining ? (s.drain_reason || "draining") : "") + "</td></tr>";
      });
      $("slaves").tBodies[0].innerHTML = rows.join("");
      var free = slaves.filter(function (s) { return s.connected && !s.draining; }).length;
      $("fleet-summary").textContent = Object.keys(instances).length + " instance(s), " + slaves.length + " slave(s), " + free + " connected";
      if (!$("quorum").dataset.touched) { $("quorum").value = Math.max(1, free); }
    }).catch(function () {});
  }

  // --- live run ------------------------------------------------------------------------
  function chart(id, labels, opts) {
    var el = $(id);
    el.innerHTML = "";
    var series = [{ label: "second" }].concat(labels.map(function (l, i) {
      return { label: l, stroke: palette[i % palette.length], width: 1.5 };
    }));
    var w = Math.max(320, Math.min(el.clientWidth || 560, 700));
    return new uPlot({ width: w, height: 200, series: series, scales: { x: { time: false } },
      axes: [{ incrs: SECONDS }, { label: opts.unit }] }, [[]].concat(labels.map(function () { return []; })), el);
  }
  function draw() {
    var p = live.points, xs = p.map(function (x) { return x.index + 1; });
    var col = function (fn) { return p.map(fn); };
    var kinds = {};
    p.forEach(function (x) { Object.keys(x.errors || {}).forEach(function (k) { kinds[k] = true; }); });
    var names = Object.keys(kinds).sort();
    if (names.join() !== live.kinds.join()) {
      live.kinds = names;
      live.charts.errors = chart("chart-errors", names.length ? names : ["none"], { unit: "per second" });
    }
    live.charts.rps.setData([xs, col(function (x) { return x.requests; }), col(function (x) { return x.failures; })]);
    live.charts.latency.setData([xs].concat(["p50", "p95", "p99"].map(function (k) {
      return col(function (x) { return x.latency_ms[k]; });
    })));
    live.charts.errors.setData([xs].concat((names.length ? names : ["none"]).map(function (k) {
      return col(function (x) { return (x.errors || {})[k] || 0; });
    })));
    live.charts.slaves.setData([xs, col(function (x) { return x.load === undefined ? null : x.load; }), col(function (x) { return x.slaves; })]);
    document.body.dataset.points = String(p.length);
  }
  function endpoints(list, id) {
    var table = $(id || "endpoints");
    if (id) { table.hidden = !list.length; }
    table.tBodies[0].innerHTML = list.map(function (e) {
      var l = e.latency_ms;
      return "<tr><td>" + esc(e.name) + '</td><td class="num">' + e.requests + '</td><td class="num">' + e.failures +
        '</td><td class="num">' + f(e.rps, 1) + '</td><td class="num">' + f(l.p50, 2) + '</td><td class="num">' +
        f(l.p95, 2) + '</td><td class="num">' + f(l.p99, 2) + '</td><td class="num">' + f(l.max, 2) + "</td></tr>";
    }).join("");
  }
  function status(v) {
    var left = Math.max(0, v.duration_s - v.load_elapsed_s);
    $("run-status").innerHTML = "run <code>" + esc(v.id) + "</code> " + esc(v.name) + " " + badge(v.phase) + " · " +
      f(v.load_elapsed_s, 0) + " of " + f(v.duration_s, 0) + " s of load · " + f(left, 0) + " s left · " +
      v.active_slaves + " of " + v.slaves + " slave(s)";
    $("progress").value = v.duration_s > 0 ? Math.min(1, v.load_elapsed_s / v.duration_s) : 0;
    var running = !v.report;
    $("stop").disabled = !running; $("suspend").disabled = v.phase !== "running"; $("resume").disabled = v.phase !== "suspended";
    $("load").disabled = !(v.phase === "running" || v.phase === "suspended");
    live.model = v.model;
    $("load-unit").textContent = v.model === "open" ? "rate/s" : "users";
  }
  // Injectors above 90 % CPU for 5 s or more: their queueing may read as the server's latency.
  function saturated(list) {
    $("saturated").innerHTML = list.map(function (x) {
      return "<p>injector <code>" + esc(x.slave_id) + "</code> " + (x.ongoing ? "is" : "was") + " above 90 % CPU for " +
        x.seconds + " s from second " + x.from_s + " (peak " + f(x.peak_cpu_percent, 0) +
        " %): its own queueing may read as the server's latency</p>";
    }).join("");
  }
  function slaTable(rules, running) {
    $("sla").innerHTML = rules.length ? "<h3>SLA rules" + (running ? " so far" : "") + "</h3><table><tbody>" + rules.map(function (s) {
      var state = s.verdict === "not_judged" && running ? "not judged yet" : s.verdict;
      var cls = s.verdict === "passed" ? "good" : (s.verdict === "failed" ? "bad" : "");
      return "<tr><td><code>" + esc(s.rule) + '</code></td><td class="' + cls + '">' + esc(state) + '</td><td class="num">' +
        (s.worst === null || s.worst === undefined ? "" : "worst " + f(s.worst, 2)) + "</td><td>" +
        (s.violated_at_s === null || s.violated_at_s === undefined ? "" : "violated in second " + s.violated_at_s) + "</td></tr>";
    }).join("") + "</tbody></table>" : "";
  }
  function verdict(r) {
    $("verdict").innerHTML = "<h3>" + badge(r.status) + " " + esc(r.stop.reason) + "</h3>" +
      (r.reasons.length ? "<ul>" + r.reasons.map(function (x) { return "<li>" + esc(x) + "</li>"; }).join("") + "</ul>" : "");
    slaTable(r.sla, false);
    endpoints(r.endpoints);
    endpoints(r.targets || [], "targets");
  }
  function open(id) {
    if (live && live.es) { live.es.close(); }
    $("current").hidden = false;
    $("verdict").innerHTML = ""; $("sla").innerHTML = ""; $("saturated").innerHTML = ""; $("act-error").textContent = "";
    endpoints([], "targets");
    live = { id: id, points: [], kinds: [], charts: {} };
    live.charts.rps = chart("chart-rps", ["requests/s", "failures/s"], { unit: "per second" });
    live.charts.latency = chart("chart-latency", ["p50", "p95", "p99"], { unit: "ms" });
    live.charts.errors = chart("chart-errors", ["none"], { unit: "per second" });
    live.charts.slaves = chart("chart-slaves", ["load asked", "slaves"], { unit: "users or arrivals/s" });
    var es = new EventSource("/api/runs/" + encodeURIComponent(id) + "/events");
    live.es = es;
    es.addEventListener("view", function (m) {
      var v = JSON.parse(m.data);
      live.points = live.points.concat(v.points);
      status(v);
      draw();
      if (v.endpoints && v.endpoints.length) { endpoints(v.endpoints); }
      if (v.targets && v.targets.length) { endpoints(v.targets, "targets"); }
      if (v.sla && v.sla.length) { slaTable(v.sla, true); }
      saturated(v.saturated || (v.report ? v.report.saturated_injectors || [] : []));
      if (v.report) { es.close(); verdict(v.report); history(); }
    });
    es.onerror = function () { if (es.readyState === EventSource.CLOSED) { $("act-error").textContent = "the master closed the stream"; } };
  }
  function changeLoad() {
    var v = Number($("load-value").value), body = { ramp_ms: Math.round(1000 * (Number($("load-ramp").value) || 0)) };
    if ($("load-value").value === "" || !(v >= 0)) { $("act-error").textContent = "give a load of 0 or more"; return; }
    if (live.model === "open") { body.rate = v; } else { body.users = Math.round(v); }
    $("act-error").textContent = "";
    api("POST", "/api/runs/" + encodeURIComponent(live.id) + "/load", body)
      .catch(function (e) { $("act-error").textContent = e.message; });
  }
  function act(action) {
    var body = action === "stop" ? { reason: "stopped from the dashboard" } : undefined;
    api("POST", "/api/runs/" + encodeURIComponent(live.id) + "/" + action, body)
      .catch(function (e) { $("act-error").textContent = e.message; });
  }

  // --- history -------------------------------------------------------------------------
  function history() {
    return api("GET", "/api/runs").then(function (runs) {
      $("runs").tBodies[0].innerHTML = runs.map(function (r) {
        return '<tr><td><input type="checkbox" value="' + esc(r.id) + '"></td><td><a href="#run" data-run="' + esc(r.id) +
          '"><code>' + esc(r.id) + "</code></a></td><td>" + esc(r.name) + "</td><td>" + badge(r.status) + "</td><td>" +
          esc(new Date(r.created_unix_ms).toISOString()) + "</td></tr>";
      }).join("");
      return runs;
    });
  }
  function compare() {
    var ticked = Array.prototype.map.call(document.querySelectorAll("#runs input:checked"), function (x) { return x.value; });
    $("compare-error").textContent = "";
    if (ticked.length !== 2) { $("compare-error").textContent = "tick two runs (the older is the baseline)"; return; }
    api("GET", "/api/compare?base=" + encodeURIComponent(ticked[1]) + "&run=" + encodeURIComponent(ticked[0])).then(function (c) {
      $("comparison").innerHTML = "<h3>" + esc(c.run) + " against " + esc(c.base) + " " +
        (c.regressions.length ? '<span class="badge failed">regressed</span>' : '<span class="badge passed">no regression</span>') +
        '</h3><table><thead><tr><th>endpoint</th><th class="num">p50 ms</th><th class="num">p95 ms</th><th class="num">p99 ms</th><th class="num">req/s</th><th class="num">errors %</th></tr></thead><tbody>' +
        c.rows.map(function (r) {
          var b = r.base, x = r.run || {};
          var cell = function (k, d) { return '<td class="num">' + f(b[k], d) + " → " + f(x[k], d) + "</td>"; };
          return "<tr><td>" + esc(r.name) + "</td>" + cell("p50_ms", 1) + cell("p95_ms", 1) + cell("p99_ms", 1) + cell("rps", 1) + cell("error_rate_percent", 2) + "</tr>";
        }).join("") + "</tbody></table>" +
        (c.regressions.length ? "<ul>" + c.regressions.map(function (x) { return "<li>" + esc(x) + "</li>"; }).join("") + "</ul>" : "");
    }).catch(function (e) { $("compare-error").textContent = e.message; });
  }

  // --- wiring --------------------------------------------------------------------------
  $("login").addEventListener("submit", function (e) {
    e.preventDefault();
    document.cookie = "lobster_token=" + encodeURIComponent($("token").value) + "; path=/; SameSite=Strict";
    location.reload();
  });
  $("quorum").addEventListener("input", function () { $("quorum").dataset.touched = "1"; });
  $("scenario-file").addEventListener("change", function () {
    var file = this.files[0];
    if (file) { file.text().then(function (t) { $("scenario").value = t; $("scenario").dataset.source = file.name; }); }
  });
  $("start").addEventListener("click", function () {
    $("start-error").textContent = "";
    var source = $("scenario").dataset.source || "scenario.yaml";
    api("POST", "/api/runs", { scenario: { source: source, text: $("scenario").value }, quorum: Number($("quorum").value) || 1 })
      .then(function (c) { if (c && c.run_id) { open(c.run_id); history(); } else if (c && c.error) { $("start-error").textContent = c.error; } })
      .catch(function (e) { $("start-error").textContent = e.message; });
  });
  $("stop").addEventListener("click", function () { act("stop"); });
  $("load").addEventListener("click", changeLoad);
  $("suspend").addEventListener("click", function () { act("suspend"); });
  $("resume").addEventListener("click", function () { act("resume"); });
  $("compare").addEventListener("click", compare);
  $("runs").addEventListener("click", function (e) {
    var a = e.target.closest("a[data-run]");
    if (a) { open(a.dataset.run); }
  });

  api("GET", "/api/health").then(function (h) {
    $("master").textContent = "master " + h.version + " · slaves dial " + h.grpc;
    fleet();
    setInterval(fleet, 2000);
    return history();
  }).then(function (runs) {
    var active = (runs || []).filter(function (r) { return ["init", "running", "suspended", "stopping"].indexOf(r.status) >= 0; });
    if (active.length) { open(active[0].id); }
    document.body.dataset.ready = "1";
  }).catch(function (e) { $("master").textContent = e.message; });
})();
