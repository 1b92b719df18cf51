/* The counters dashboard: polls its data URL and redraws three uPlot charts and two
   tables. Each chart's figure carries data-points and data-latest (its last value), and
   the root data-polls, so what the page shows can be checked from outside. */
(function () {
  "use strict";

  const MIN_SPAN_S = 600; // the x axis spans at least ten minutes, at most the data's hour
  const HEIGHT_PX = 180;
  const COLOURS = { views: "#2f5bd3", pending: "#c2410c", lag_s: "#047857" };

  const root = document.querySelector("[data-dashboard]");
  if (!root) return;
  const status = document.querySelector("[data-status]");
  const charts = {};
  let polls = 0;

  function utc(ms) {
    return new Date(ms).toISOString().slice(11, 19);
  }

  function seconds(s) {
    if (s === null || s === undefined) return "caught up";
    return s < 10 ? s.toFixed(2) + " s" : Math.round(s) + " s";
  }

  function chart(figure, key) {
    const box = figure.querySelector(".plot");
    const opts = {
      width: box.clientWidth,
      height: HEIGHT_PX,
      legend: { show: false },
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
      axes: [
        { space: 70, values: (u, splits) => splits.map((s) => utc(s * 1000).slice(0, 5)) },
        { size: 56 },
      ],
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: { time: true, range: (u, lo, hi) => [Math.min(lo, hi - MIN_SPAN_S), hi] },
        y: { range: (u, lo, hi) => [0, Math.max(1, hi * 1.1)] },
      },
      series: [
        {},
        {
          label: figure.dataset.label,
          stroke: COLOURS[key],
          fill: COLOURS[key] + "22",
          width: 2,
          spanGaps: true,
          points: { show: true, size: 4 },
        },
      ],
    };
    return new uPlot(opts, [[], []], box);
  }

  function draw(series) {
    const now = Date.now() / 1000;
    for (const figure of root.querySelectorAll("[data-chart]")) {
      const key = figure.dataset.chart;
      charts[key] = charts[key] || chart(figure, key);
      const values = series[key];
      charts[key].setData([series.t.length ? series.t : [now], series.t.length ? values : [null]]);
      figure.dataset.points = String(values.filter((v) => v !== null).length);
      figure.dataset.latest = values.length ? String(values[values.length - 1]) : "";
    }
  }

  function cells(tbody, rows, empty) {
    const span = tbody.closest("table").querySelectorAll("th").length;
    tbody.replaceChildren();
    if (!rows.length) rows = [[{ text: empty, span }]];
    for (const row of rows) {
      const tr = document.createElement("tr");
      for (const cell of row) {
        const td = document.createElement("td");
        td.textContent = typeof cell === "object" && cell !== null ? cell.text : String(cell);
        if (cell && cell.span) {
          td.colSpan = cell.span;
          td.className = "empty";
        }
        tr.append(td);
      }
      tbody.append(tr);
    }
  }

  function tables(data) {
    const flushes = data.flushes.map((f) => [
      utc(f.at_ms),
      f.flushed,
      f.batches,
      f.rows,
      f.max_lag_s,
      f.duration_s,
      f.errors.length ? f.errors.join("; ") : "",
    ]);
    const reconciles = data.reconciles.map((r) => [
      utc(r.at_ms),
      r.checked,
      r.fixed,
      r.fixes.map((x) => `${x.counter} #${x.id}: ${x.was} → ${x.now}`).join(", "),
    ]);
    cells(root.querySelector('[data-runs="flushes"] tbody'), flushes, "no busy flush yet");
    cells(root.querySelector('[data-runs="reconciles"] tbody'), reconciles, "no reconcile yet");
  }

  function tiles(data) {
    const set = (name, text) => (root.querySelector(`[data-now="${name}"]`).textContent = text);
    set("pending", data.pending.toLocaleString("en"));
    set("lag", seconds(data.oldest_pending_age_s));
    set("last_flush", data.last_flush ? seconds(data.last_flush.age_s) + " ago" : "none");
    set("applied", data.totals.counters_applied.toLocaleString("en"));
  }

  async function poll() {
    try {
      const response = await fetch(root.dataset.url, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (response.status === 401 || response.status === 404) {
        window.location.reload(); // signed out, or a new token: the form again
        return;
      }
      if (!response.ok) throw new Error(`data unavailable (${response.status})`);
      const data = await response.json();
      draw(data.series);
      tables(data);
      tiles(data);
      polls += 1;
      root.dataset.polls = String(polls);
      status.textContent = `updated ${utc(Date.now())} UTC`;
      status.classList.remove("error");
    } catch (err) {
      status.textContent = err.message;
      status.classList.add("error");
    } finally {
      window.setTimeout(poll, Number(root.dataset.pollMs));
    }
  }

  window.addEventListener("resize", () => {
    for (const figure of root.querySelectorAll("[data-chart]")) {
      const c = charts[figure.dataset.chart];
      if (c) c.setSize({ width: figure.querySelector(".plot").clientWidth, height: HEIGHT_PX });
    }
  });

  poll();
})();
