// Lobster's HTML report: draws the per-second charts from the data embedded in the page
// (#lobster-data) with uPlot. No network access: everything is in this file's page.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("lobster-data").textContent);
  var series = data.series || [];
  var xs = series.map(function (p) { return p.index + 1; });
  var width = function (el) { return Math.max(320, Math.min(el.clientWidth || 900, 1100)); };
  var palette = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"];
  var drawn = 0;

  function chart(id, labels, columns, opts) {
    var el = document.getElementById(id);
    if (!el) { return; }
    if (xs.length === 0) {
      el.textContent = "no closed seconds";
      return;
    }
    var s = [{ label: "second" }];
    labels.forEach(function (label, i) {
      var extra = (opts && opts.series && opts.series[i]) || {};
      s.push(Object.assign({ label: label, stroke: palette[i % palette.length], width: 1.5 }, extra));
    });
    var axes = [{ label: "second of the run", incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600] }, { label: (opts && opts.unit) || "" }];
    var scales = { x: { time: false } };
    if (opts && opts.right) {
      axes.push({ side: 1, scale: "right", label: opts.right, grid: { show: false } });
      scales.right = {};
    }
    new uPlot({ width: width(el), height: 240, series: s, axes: axes, scales: scales, legend: { live: true } },
      [xs].concat(columns), el);
    drawn += 1;
  }

  chart("chart-rps", ["requests/s", "failures/s"], [
    series.map(function (p) { return p.requests; }),
    series.map(function (p) { return p.failures; })
  ], { unit: "per second" });

  chart("chart-latency", ["p50", "p95", "p99", "max"], ["p50", "p95", "p99", "max"].map(function (k) {
    return series.map(function (p) { return p.latency_ms[k]; });
  }), { unit: "ms" });

  var kinds = {};
  series.forEach(function (p) { Object.keys(p.errors || {}).forEach(function (k) { kinds[k] = true; }); });
  var kindNames = Object.keys(kinds).sort();
  if (kindNames.length === 0) { kindNames = ["none"]; }
  chart("chart-errors", kindNames, kindNames.map(function (k) {
    return series.map(function (p) { return (p.errors || {})[k] || 0; });
  }), { unit: "per second" });

  var loadLabel = data.model === "open" ? "arrival rate (/s)" : "virtual users";
  chart("chart-load", [loadLabel, "slaves"], [
    (data.load || []).map(function (v) { return v === null ? null : v; }),
    series.map(function (p) { return p.slaves; })
  ], { unit: loadLabel, right: "slaves", series: [{}, { scale: "right", dash: [4, 4] }] });

  document.body.setAttribute("data-charts", String(drawn));
})();
