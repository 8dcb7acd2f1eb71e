-- wrk script of the HTTP benchmarks (benchmarks/harness.py, `load`): every connection repeats
-- one request, every answer is checked, each thread stops after BENCH_MAX_PER_THREAD answers,
-- and the run ends with one line "BENCH_RESULT {json}" that the Python side parses.
--
-- The request: BENCH_METHOD (default POST), BENCH_BODY, and BENCH_HEADERS, one "Name: value"
-- a line (Authorization, Content-Type, Cookie, ...).
-- An answer is good ("ok") when its status is one of BENCH_EXPECT_STATUS (comma-separated,
-- default 200), its body matches the Lua pattern BENCH_EXPECT (string.find; empty: any body)
-- and, when BENCH_EXPECT_LOCATION is set, its Location header is exactly that. An expected
-- status with another body or Location counts as "bad_body", any other status as "non200" (by
-- status). "responses" counts all answers the script saw, "sent" the requests it built:
-- sent - responses bounds the requests still in flight when wrk stopped, which the server may
-- or may not have served; it is one too many, as wrk builds one request in the first thread to
-- check the script and never sends it.
--
--   BENCH_HEADERS=$'Authorization: Basic ...\nContent-Type: application/x-www-form-urlencoded' \
--   BENCH_BODY="grant_type=..." BENCH_EXPECT='"access_token"' BENCH_MAX_PER_THREAD=100000 \
--   wrk -t1 -c32 -d10s -s benchmarks/wrk_checked.lua http://127.0.0.1:PORT/token

wrk.method = os.getenv("BENCH_METHOD") or "POST"
wrk.body = os.getenv("BENCH_BODY")
for name, value in string.gmatch(os.getenv("BENCH_HEADERS") or "", "([^:\n]+): ([^\n]*)") do
  wrk.headers[name] = value
end

local max_per_thread = tonumber(os.getenv("BENCH_MAX_PER_THREAD") or "0")
local expect = os.getenv("BENCH_EXPECT") or ""
local expect_location = os.getenv("BENCH_EXPECT_LOCATION")
local expect_status = {}
for code in string.gmatch(os.getenv("BENCH_EXPECT_STATUS") or "200", "%d+") do
  expect_status[tonumber(code)] = true
end
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  sent = 0
  responses = 0
  ok = 0
  non200 = 0
  bad_body = 0
  by_status = {}
  prepared = wrk.format()
end

-- Defining request() makes wrk ask for every request, which is how the sent ones are counted.
function request()
  sent = sent + 1
  return prepared
end

function response(status, headers, body)
  responses = responses + 1
  if not expect_status[status] then
    non200 = non200 + 1
    local key = tostring(status)
    by_status[key] = (by_status[key] or 0) + 1
  elseif expect ~= "" and (body == nil or not string.find(body, expect)) then
    bad_body = bad_body + 1
  elseif expect_location and (headers["Location"] or headers["location"]) ~= expect_location then
    bad_body = bad_body + 1
  else
    ok = ok + 1
  end
  if max_per_thread > 0 and responses >= max_per_thread then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local totals = { sent = 0, responses = 0, ok = 0, non200 = 0, bad_body = 0 }
  local merged = {}
  for _, thread in ipairs(threads) do
    for key, _ in pairs(totals) do
      totals[key] = totals[key] + thread:get(key)
    end
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
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "sent": %d, "responses": %d, "ok": %d, '
      .. '"non200": %d, "non200_by_status": {%s}, "bad_body": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, totals.sent, totals.responses, totals.ok,
    totals.non200, table.concat(statuses, ", "), totals.bad_body,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean
  ))
end
