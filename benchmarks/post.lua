-- wrk script: POST one pre-signed token per request, in file order (wrk -t1 keeps them distinct).
local bodies = {}
local i = 0
local headers = {["Content-Type"] = "application/jwt"}

init = function(args)
  for line in io.lines(args[1]) do
    if #line > 0 then bodies[#bodies + 1] = line end
  end
end

request = function()
  i = i + 1
  if i > #bodies then i = 1 end
  return wrk.format("POST", "/live-events", headers, bodies[i])
end

done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"pool":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, errors.connect, errors.read, errors.write, errors.status,
    errors.timeout, #bodies))
end
