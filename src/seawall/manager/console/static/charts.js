/* Seawall console: a group's RPO and throughput history drawn with uPlot.
 *
 * Rules: no inline script anywhere (the CSP allows only files of this origin), so this
 * file finds its charts by their data attributes: a section [data-history-url] holds a
 * [data-chart="rpo"] and a [data-chart="throughput"] box and buttons [data-range]. The
 * points come from the console's copy of GET /api/v1/groups/{name}/history (same service,
 * same JSON), fetched again every REFRESH_MS and when another range is picked. A gap in
 * the data (the agent did not answer) stays a gap. Each chart's box gets data-points (how
 * many points it drew) for the tests and the screen reader's summary line.
 */
(function () {
  "use strict";
  var REFRESH_MS = 15000;
  var SERIES = {
    rpo: [{label: "RPO (worst, s)", key: "rpo_s", stroke: "#b3261e"}],
    throughput: [
      {label: "writes (B/s)", key: "write_bytes_per_s", stroke: "#0b5cad"},
      {label: "sent (B/s)", key: "sent_bytes_per_s", stroke: "#1b7f3a"},
      {label: "received (B/s)", key: "received_bytes_per_s", stroke: "#9a6100"}
    ]
  };

  function bytes(value) {
    if (value === null || value === undefined) { return "-"; }
    var units = ["B", "KiB", "MiB", "GiB", "TiB"];
    var i = 0;
    while (Math.abs(value) >= 1024 && i < units.length - 1) { value /= 1024; i += 1; }
    return value.toFixed(value < 10 && i > 0 ? 1 : 0) + " " + units[i];
  }

  function columns(answer, series) {
    var data = [answer.points.map(function (p) { return p.t; })];
    series.forEach(function (s) {
      data.push(answer.points.map(function (p) { return p[s.key]; }));
    });
    return data;
  }

  function options(kind, width) {
    var series = [{}].concat(SERIES[kind].map(function (s) {
      return {label: s.label, stroke: s.stroke, width: 2, spanGaps: false,
              value: kind === "rpo" ? function (u, v) { return v === null ? "-" : v.toFixed(1) + " s"; }
                                    : function (u, v) { return bytes(v) + "/s"; }};
    }));
    var axis = kind === "rpo"
      ? {values: function (u, ticks) { return ticks.map(function (v) { return v + " s"; }); }}
      : {size: 70, values: function (u, ticks) { return ticks.map(function (v) { return bytes(v) + "/s"; }); }};
    return {width: width, height: 220, series: series, axes: [{}, axis],
            scales: {y: {range: function (u, min, max) { return [0, Math.max(max || 0, kind === "rpo" ? 1 : 1024)]; }}}};
  }

  function setUp(section) {
    var url = section.getAttribute("data-history-url");
    var range = section.getAttribute("data-range") || "1h";
    var plots = {};
    var status = section.querySelector("[data-history-status]");

    function draw(answer) {
      section.querySelectorAll("[data-chart]").forEach(function (box) {
        var kind = box.getAttribute("data-chart");
        var data = columns(answer, SERIES[kind]);
        var width = Math.max(280, box.clientWidth || 600);
        if (plots[kind]) { plots[kind].setData(data); } else {
          plots[kind] = new uPlot(options(kind, width), data, box);
        }
        box.setAttribute("data-points", String(answer.points.length));
      });
      if (status) {
        status.textContent = answer.points.length + " points over " + answer.range +
          " (one per " + answer.resolution_s + " s)";
      }
    }

    function load() {
      fetch(url + "?range=" + encodeURIComponent(range), {credentials: "same-origin",
                                                          headers: {"Accept": "application/json"}})
        .then(function (r) {
          if (!r.ok) { throw new Error("the history answered HTTP " + r.status); }
          return r.json();
        })
        .then(draw)
        .catch(function (e) { if (status) { status.textContent = String(e.message || e); } });
    }

    section.querySelectorAll("button[data-range]").forEach(function (button) {
      button.addEventListener("click", function () {
        range = button.getAttribute("data-range");
        section.setAttribute("data-range", range);
        section.querySelectorAll("button[data-range]").forEach(function (b) {
          b.setAttribute("aria-pressed", String(b === button));
        });
        load();
      });
    });
    window.addEventListener("resize", function () {
      Object.keys(plots).forEach(function (kind) {
        var box = section.querySelector('[data-chart="' + kind + '"]');
        plots[kind].setSize({width: Math.max(280, box.clientWidth), height: 220});
      });
    });
    load();
    window.setInterval(load, REFRESH_MS);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-history-url]").forEach(setUp);
  });
}());
