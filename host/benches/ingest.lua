-- wrk script of the ingest bench (host/benches/ingest.rs): sends pre-signed Flux events
-- that the bench wrote to files, one per line: <path> TAB <X-Signature> TAB <body>.
-- Thread i of wrk reads <prefix>.<i> (the prefix is the script's argument), a line per
-- request, so no body is ever inlined in a script (LuaJIT refuses more than 65,536
-- constants) nor held in memory. At the end of its file a thread starts it again and
-- counts the wrap: the bench reports wraps where every body must be new.
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  events = assert(io.open(args[1] .. "." .. id, "r"))
  wrapped = 0
end

function request()
  local line = events:read("*l")
  if not line then
    wrapped = wrapped + 1
    events:seek("set", 0)
    line = assert(events:read("*l"), "empty events file")
  end
  local a = line:find("\t", 1, true)
  local b = line:find("\t", a + 1, true)
  local headers = {
    ["Content-Type"] = "application/json",
    ["X-Signature"] = line:sub(a + 1, b - 1),
  }
  return wrk.format("POST", line:sub(1, a - 1), headers, line:sub(b + 1))
end

-- One machine-readable line after wrk's own report: the bench parses it. Latencies in
-- microseconds; non2xx counts answers with a status of 400 or more (wrk's "Non-2xx or
-- 3xx responses").
function done(summary, latency, requests)
  local wraps = 0
  for _, t in ipairs(threads) do
    wraps = wraps + t:get("wrapped")
  end
  local e = summary.errors
  io.write(string.format(
    "bench-result requests=%.0f duration_us=%.0f p50_us=%.0f p99_us=%.0f max_us=%.0f " ..
    "non2xx=%.0f connect=%.0f read=%.0f write=%.0f timeout=%.0f wrapped=%.0f\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.status, e.connect, e.read, e.write, e.timeout, wraps))
end
