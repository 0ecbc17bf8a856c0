-- wrk script of rest-load.sh's second phase: the plain request of the command
-- line, and one "wrk ..." line of figures at the end.

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "wrk requests=%d duration_s=%.3f rps=%.1f bytes=%d non2xx=%d connect=%d read=%d write=%d " ..
    "timeout=%d p50_ms=%.2f p99_ms=%.2f max_ms=%.2f\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3))
end
