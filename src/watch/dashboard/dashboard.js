// floodwatch's dashboard: polls /api/top every second and /api/history every ten, and draws
// tables and SVG charts with nothing but the DOM. Every text that comes from the logs (keys,
// vhosts, rule and sink names) goes in as textContent, never as markup.
"use strict";

(function () {
  var SVG = "http://www.w3.org/2000/svg";
  var COLORS = ["#1565c0", "#c62828", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f", "#5d4037", "#757575"];
  var last = null;

  function $(id) { return document.getElementById(id); }

  function fail(what) {
    var t = $("trouble");
    t.hidden = false;
    t.textContent = what;
  }

  window.addEventListener("error", function (e) {
    document.body.setAttribute("data-error", String(e.message));
    fail("script error: " + e.message);
  });

  function rate(r) {
    if (r >= 999500) return (r / 1e6).toFixed(1) + "M";
    if (r >= 9999.5) return (r / 1e3).toFixed(1) + "k";
    if (r >= 99.5) return r.toFixed(0);
    return r.toFixed(1);
  }

  function span(s) {
    var d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    if (d > 0) return d + "d " + h + "h";
    if (h > 0) return h + "h " + m + "m";
    if (m > 0) return m + "m " + (s % 60) + "s";
    return s + "s";
  }

  function cell(tr, text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function fill(tbody, rows, build) {
    while (tbody.firstChild) tbody.removeChild(tbody.firstChild);
    rows.forEach(function (r) {
      var tr = document.createElement("tr");
      build(tr, r);
      tbody.appendChild(tr);
    });
  }

  function stateText(k, now) {
    if ((k.state === "banned" || k.state === "pardoned") && k.until) {
      var left = Math.max(0, Math.round((Date.parse(k.until) - now) / 1000));
      return k.state + " " + span(left);
    }
    return k.state;
  }

  function showTop(t) {
    last = t;
    $("version").textContent = t.version;
    $("pace").textContent = "up " + span(t.uptime_seconds) + " · lines/s " + rate(t.lines_per_second_1s) +
      " (10s " + rate(t.lines_per_second_10s) + ") · files " + t.files + " · read lag " + t.read_lag_seconds +
      " s · bans " + t.bans.active + " (" + t.bans.since_start + " since start, " + t.bans.pardoned +
      " pardoned) · keys tracked " + t.keys_tracked;
    var sinks = t.sinks.map(function (s) {
      return s.name + (s.failing_since ? " FAILING since " + s.failing_since : " ok") +
        (s.pending ? " (" + s.pending + " pending)" : "");
    });
    $("sinks").textContent = "sinks: " + (sinks.length ? sinks.join(" · ") : "none (events on stdout)");
    fill($("vhosts").tBodies[0], t.vhosts, function (tr, v) {
      cell(tr, v.vhost, "vhost");
      cell(tr, rate(v.rate_1s), "n");
      cell(tr, rate(v.rate_10s), "n");
      cell(tr, (v.share_4xx * 100).toFixed(0) + "%", "n");
      cell(tr, (v.share_5xx * 100).toFixed(0) + "%", "n");
      cell(tr, String(v.bans), "n");
    });
    var select = $("vhost"), chosen = select.value;
    while (select.options.length > 1) select.remove(1);
    t.vhosts.forEach(function (v) {
      var o = document.createElement("option");
      o.value = v.vhost;
      o.textContent = v.vhost;
      select.appendChild(o);
    });
    select.value = chosen;
    if (select.value !== chosen) select.value = "";
    showKeys();
  }

  function showKeys() {
    if (!last) return;
    var by = $("sort").value, vhost = $("vhost").value, now = Date.parse(last.now) || Date.now();
    var keys = last.keys.filter(function (k) { return !vhost || k.vhost === vhost; });
    keys.sort(function (a, b) {
      var r = b.rate_10s - a.rate_10s, f = b.fill - a.fill;
      return (by === "fill" ? (f || r) : (r || f)) || (a.key < b.key ? -1 : 1);
    });
    fill($("keys").tBodies[0], keys.slice(0, 30), function (tr, k) {
      tr.className = k.state;
      cell(tr, k.key, "key");
      cell(tr, k.vhost || "-", "vhost");
      cell(tr, k.rule);
      cell(tr, rate(k.rate_1s), "n");
      cell(tr, rate(k.rate_10s), "n");
      var td = cell(tr, "", "n");
      var bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = Math.round(Math.min(100, k.fill) / 3) + "px";
      td.appendChild(bar);
      td.appendChild(document.createTextNode(k.fill.toFixed(0) + "%"));
      cell(tr, stateText(k, now));
    });
  }

  function node(name, attrs, parent) {
    var n = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (a) { n.setAttribute(a, String(attrs[a])); });
    if (parent) parent.appendChild(n);
    return n;
  }

  // Draws series [{name, points: [[t, v]...]}] as lines (or bars) over the last 15 minutes.
  function chart(id, series, bars) {
    var box = $(id);
    while (box.firstChild) box.removeChild(box.firstChild);
    var W = 400, H = 170, L = 42, B = 18, T = 6;
    var svg = node("svg", { viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "none", role: "img" }, box);
    var end = Date.now(), start = end - 15 * 60 * 1000, max = 0;
    series.forEach(function (s) { s.points.forEach(function (p) { max = Math.max(max, p[1]); }); });
    max = max > 0 ? max * 1.1 : 1;
    var x = function (t) { return L + (W - L - 4) * (t - start) / (end - start); };
    var y = function (v) { return H - B - (H - B - T) * v / max; };
    node("line", { x1: L, y1: H - B, x2: W - 4, y2: H - B, stroke: "#d5dadf" }, svg);
    node("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#d5dadf" }, svg);
    [0, max / 2, max / 1.1].forEach(function (v) {
      var lbl = node("text", { x: L - 4, y: y(v) + 3, "text-anchor": "end" }, svg);
      lbl.textContent = rate(v);
    });
    ["-15m", "-10m", "-5m", "now"].forEach(function (txt, i) {
      var lbl = node("text", { x: L + (W - L - 4) * i / 3, y: H - 4, "text-anchor": i ? (i === 3 ? "end" : "middle") : "start" }, svg);
      lbl.textContent = txt;
    });
    var legend = document.createElement("div");
    legend.className = "legend";
    series.forEach(function (s, i) {
      var color = COLORS[i % COLORS.length];
      var pts = s.points.filter(function (p) { return p[0] >= start; });
      if (bars) {
        pts.forEach(function (p) {
          if (p[1] > 0) node("rect", { x: x(p[0]) - 3, y: y(p[1]), width: 5, height: H - B - y(p[1]), fill: color }, svg);
        });
      } else if (pts.length) {
        var d = pts.map(function (p, j) { return (j ? "L" : "M") + x(p[0]).toFixed(1) + " " + y(p[1]).toFixed(1); }).join(" ");
        node("path", { d: d, fill: "none", stroke: color, "stroke-width": 1.5 }, svg);
      }
      var item = document.createElement("span");
      var swatch = document.createElement("i");
      swatch.style.background = color;
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(s.name));
      legend.appendChild(item);
    });
    if (!series.length) {
      var empty = node("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, svg);
      empty.textContent = "no data yet (a point every 10 s)";
    }
    box.appendChild(legend);
  }

  // One series per name found in the points' lists (field `list`): the `most` with the
  // highest peak.
  function seriesOf(points, list, most) {
    var by = {}, peak = {}, order = [];
    points.forEach(function (p) {
      p[list].forEach(function (r) {
        if (!(r.name in by)) { by[r.name] = []; peak[r.name] = 0; order.push(r.name); }
        by[r.name].push([p.t, r.rate]);
        peak[r.name] = Math.max(peak[r.name], r.rate);
      });
    });
    order.sort(function (a, b) { return peak[b] - peak[a]; });
    return order.slice(0, most).map(function (name) { return { name: name, points: by[name] }; });
  }

  function showHistory(h) {
    var pts = h.points || [];
    var total = { name: "all", points: pts.map(function (p) { return [p.t, p.lines_per_second]; }) };
    chart("chart-lines", pts.length ? [total].concat(seriesOf(pts, "vhosts", 7)) : [], false);
    var perMinute = 60 / (h.step_seconds || 10);
    chart("chart-bans", pts.length ? [{ name: "bans/min", points: pts.map(function (p) { return [p.t, p.bans * perMinute]; }) }] : [], true);
    chart("chart-keys", seriesOf(pts, "keys", 8), false);
  }

  function get(path, then) {
    return fetch(path, { cache: "no-store" }).then(function (r) {
      if (!r.ok) throw new Error(path + ": HTTP " + r.status);
      return r.json();
    }).then(then);
  }

  function refresh() {
    get("/api/top?limit=100", function (t) {
      showTop(t);
      $("trouble").hidden = true;
      document.body.setAttribute("data-state", "ok");
    }).catch(function (e) {
      document.body.setAttribute("data-state", "unreachable");
      fail("cannot reach the watch: " + e.message);
    });
  }

  function refreshHistory() {
    get("/api/history", showHistory).catch(function (e) { fail("history: " + e.message); });
  }

  $("sort").addEventListener("change", showKeys);
  $("vhost").addEventListener("change", showKeys);
  showHistory({ points: [] });
  refresh();
  refreshHistory();
  setInterval(refresh, 1000);
  setInterval(refreshHistory, 10000);
})();
