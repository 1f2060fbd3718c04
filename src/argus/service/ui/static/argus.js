// Argus console: the little the pages need beyond htmx (no inline scripts: the CSP forbids them).
// A followed log keeps its end in view while new lines arrive over server-sent events.
document.addEventListener("htmx:sseMessage", function (event) {
  var log = document.getElementById("log");
  if (log && log.contains(event.target)) {
    log.scrollTop = log.scrollHeight;
  }
});
