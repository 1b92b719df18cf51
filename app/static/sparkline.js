// The 7-day sparkline under a post or article: its views per hour, from
// GET /api/<kind>/<id>/stats?window=7d (unflushed views included), drawn as an SVG line.
// Fetched after the page, so the page itself stays one Redis round trip and one SQL
// statement.
"use strict";

(function () {
  var SVG = "http://www.w3.org/2000/svg";
  var WIDTH = 336, HEIGHT = 48, PAD = 2;  // viewBox units

  function svg(name, attrs) {
    var el = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (key) { el.setAttribute(key, attrs[key]); });
    return el;
  }

  // Oldest first; the highest count touches the top, zero lies on the bottom.
  function points(counts) {
    var peak = Math.max.apply(null, counts.concat([0]));
    var step = (WIDTH - 2 * PAD) / Math.max(counts.length - 1, 1);
    return counts.map(function (n, i) {
      var y = HEIGHT - PAD - (peak ? n / peak * (HEIGHT - 2 * PAD) : 0);
      return (PAD + i * step).toFixed(1) + "," + y.toFixed(1);
    }).join(" ");
  }

  function draw(figure, stats) {
    var counts = stats.series.map(function (b) { return b.views; });
    var chart = svg("svg", {
      viewBox: "0 0 " + WIDTH + " " + HEIGHT, preserveAspectRatio: "none", role: "img",
      "aria-label": "Views per hour over the last 7 days: " + stats.views + " in all"
    });
    chart.appendChild(svg("line", {
      x1: 0, y1: HEIGHT - PAD, x2: WIDTH, y2: HEIGHT - PAD, "class": "sparkline-line-axis"
    }));
    chart.appendChild(svg("polyline", {
      points: points(counts), "class": "sparkline-line", "vector-effect": "non-scaling-stroke"
    }));
    figure.insertBefore(chart, figure.firstChild);
    figure.querySelector("figcaption").textContent =
      stats.views.toLocaleString("en") + " views in the last 7 days, per hour";
    figure.setAttribute("data-total", stats.views);
    figure.setAttribute("data-state", "drawn");
  }

  function init() {
    document.querySelectorAll("[data-sparkline]").forEach(function (figure) {
      fetch(figure.getAttribute("data-stats-url"), {credentials: "same-origin"})
        .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
        .then(function (stats) { draw(figure, stats); })
        .catch(function () { figure.setAttribute("data-state", "failed"); });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
