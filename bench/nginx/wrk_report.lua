-- wrk -s bench/nginx/wrk_report.lua: after wrk's own report, one line for
-- run_nginx.sh to read:
--   wrk-result requests=N seconds=S rps=R p50_ms=A p99_ms=B max_ms=C failed=F
-- failed counts non-2xx/3xx answers, socket errors and timeouts (a request
-- that timed out has no latency in wrk's histogram: it must count here).
done = function(summary, latency, requests)
  local e = summary.errors
  local seconds = summary.duration / 1e6
  local failed = e.connect + e.read + e.write + e.status + e.timeout
  io.write(string.format(
    "wrk-result requests=%d seconds=%.3f rps=%.1f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f failed=%d\n",
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000, failed))
end
