-- wrk script for benchmarks/token_endpoint.py: every connection sends the same
-- client_credentials POST, each thread stops after BENCH_MAX_PER_THREAD responses, and the
-- run ends with one line "BENCH_RESULT {json}" that the Python side parses.
--
--   BENCH_AUTHORIZATION="Basic ..." BENCH_BODY="grant_type=..." BENCH_MAX_PER_THREAD=100000 \
--   wrk -t1 -c32 -d10s -s benchmarks/wrk_token.lua http://127.0.0.1:PORT/token

wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Authorization"] = os.getenv("BENCH_AUTHORIZATION")
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"

local max_per_thread = tonumber(os.getenv("BENCH_MAX_PER_THREAD") or "0")
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  responses = 0
  non200 = 0
  by_status = {}
end

function response(status, headers, body)
  responses = responses + 1
  if status ~= 200 then
    non200 = non200 + 1
    local key = tostring(status)
    by_status[key] = (by_status[key] or 0) + 1
  end
  if max_per_thread > 0 and responses >= max_per_thread then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local not_ok = 0
  local merged = {}
  for _, thread in ipairs(threads) do
    not_ok = not_ok + thread:get("non200")
    for key, count in pairs(thread:get("by_status")) do
      merged[key] = (merged[key] or 0) + count
    end
  end
  local statuses = {}
  for key, count in pairs(merged) do
    table.insert(statuses, string.format('"%s": %d', key, count))
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "non200": %d, "non200_by_status": {%s}, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, not_ok, table.concat(statuses, ", "),
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean
  ))
end
