// Lockgate run page: follows each unfinished job's log over server-sent events, renders ANSI colours and
// ##[group] folds like the server does, filters lines by a search box, and reloads when the job ends.
(function () {
  "use strict";
  function escapeHtml(text) {
    return text.replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function ansiToHtml(text) {
    var out = "", open = 0, parts = text.split("\u001b[");
    out += escapeHtml(parts[0]);
    for (var i = 1; i < parts.length; i++) {
      var m = /^([0-9;]*)m/.exec(parts[i]);
      if (!m) { out += escapeHtml(parts[i].replace(/^[0-9;]*[A-Za-z]?/, "")); continue; }
      m[1].split(";").forEach(function (code) {
        var c = parseInt(code || "0", 10);
        if (c === 0) { out += "</span>".repeat(open); open = 0; }
        else if (c === 1) { out += '<span class="b">'; open++; }
        else if ((c >= 30 && c <= 37) || (c >= 90 && c <= 97)) { out += '<span class="c' + c + '">'; open++; }
      });
      out += escapeHtml(parts[i].slice(m[0].length));
    }
    return out + "</span>".repeat(open);
  }
  function follow(panel) {
    var pre = panel.querySelector("pre.log");
    var job = panel.dataset.job, run = panel.dataset.run;
    var count = parseInt(panel.dataset.lines, 10) || 0;
    var group = pre.querySelector("details.group:last-of-type");
    var openGroup = null;
    var source = new EventSource("/api/v1/runs/" + run + "/jobs/" + job + "/logs/stream?after=" + count);
    source.addEventListener("lines", function (event) {
      var data = JSON.parse(event.data);
      var atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 20;
      data.lines.forEach(function (line, i) {
        var n = data.first + i;
        if (n <= count) return;
        count = n;
        var text = line.text;
        if (text.indexOf("##[group]") === 0) {
          openGroup = document.createElement("details");
          openGroup.className = "group"; openGroup.open = true;
          openGroup.innerHTML = "<summary>" + escapeHtml(text.slice(9)) + "</summary>";
          pre.appendChild(openGroup);
          return;
        }
        if (text.indexOf("##[endgroup]") === 0) { openGroup = null; return; }
        var span = document.createElement("span");
        span.className = "l" + (text.indexOf("##[error]") === 0 ? " err" : text.indexOf("##[warning]") === 0 ? " warn" : "");
        span.id = "L" + job + "-" + n;
        span.innerHTML = '<a class="n" href="#L' + job + "-" + n + '">' + n + "</a>" + ansiToHtml(text);
        (openGroup || pre).appendChild(span);
      });
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    });
    source.addEventListener("end", function () { source.close(); setTimeout(function () { location.reload(); }, 300); });
    source.addEventListener("reload", function () { source.close(); location.reload(); });
    void group;
  }
  document.querySelectorAll("section.jobpanel").forEach(function (panel) {
    if (panel.dataset.status !== "completed" && window.EventSource) follow(panel);
    var search = panel.querySelector("input.logsearch");
    if (search) search.addEventListener("input", function () {
      var needle = search.value.toLowerCase();
      panel.querySelectorAll("pre.log .l").forEach(function (line) {
        line.classList.toggle("hidden", needle !== "" && line.textContent.toLowerCase().indexOf(needle) < 0);
      });
    });
  });
  // Waiting jobs have no stream yet: while no job is streaming, refresh the page until one starts
  // (a streaming job's end reloads the page anyway).
  var waiting = document.querySelector("section.jobpanel[data-status='pending'], section.jobpanel[data-status='queued']");
  var streaming = document.querySelector("section.jobpanel[data-status='running']");
  if (waiting && !streaming) {
    setTimeout(function () { if (!document.querySelector("input.logsearch:focus")) location.reload(); }, 3000);
  }
})();
