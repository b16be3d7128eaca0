-- wrk script for scripts/bench-overhead: POST one JSON body (read from $BENCH_BODY) on every
-- request, and print one machine-readable line when the run ends.
--
--   BENCH_BODY=body.json wrk -t1 -c1 -d3s --latency -s bench/post.lua http://127.0.0.1:PORT/path
--
-- The line is `BENCH {json}`: requests, duration (µs), bytes read, socket errors by kind,
-- non-2xx/3xx responses, and latency percentiles in µs from wrk's histogram (request written →
-- response complete, i.e. the whole body, the whole SSE stream for streaming requests).

local path = os.getenv("BENCH_BODY")
if path == nil or path == "" then
  io.stderr:write("post.lua: BENCH_BODY is not set\n")
  os.exit(2)
end
local f = assert(io.open(path, "rb"))
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
-- A credential like a real SDK sends; cachet and nginx pass it through, the simulator ignores it.
wrk.headers["Authorization"] = "Bearer sk-bench-overhead"

function done(summary, latency, requests)
  local e = summary.errors
  local p = function(q) return latency:percentile(q) end
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_timeout":%d,"non2xx":%d,"lat_min_us":%d,"lat_mean_us":%.1f,' ..
    '"lat_p50_us":%d,"lat_p90_us":%d,"lat_p99_us":%d,"lat_p999_us":%d,"lat_max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.timeout,
    e.status, latency.min, latency.mean, p(50), p(90), p(99), p(99.9), latency.max))
end
