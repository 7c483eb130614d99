-- Mixed: 9 of 10 requests GET /pins?limit=10, 1 of 10 POST /pins with a new CID. Usage:
--   PINHIVE_TOKEN=… wrk -t2 -c64 -d10s -s bench/wrk/mixed.lua http://127.0.0.1:8080
package.path = "bench/wrk/?.lua;" .. package.path
require("common")

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_tag", "m" .. threads .. "-" .. os.time())
end

local n = 0
function request()
  n = n + 1
  if n % 10 == 0 then
    return wrk.format("POST", "/pins", {
      ["Authorization"] = auth_header,
      ["Content-Type"] = "application/json",
    }, next_pin_body())
  end
  return wrk.format("GET", "/pins?limit=10", { ["Authorization"] = auth_header })
end
