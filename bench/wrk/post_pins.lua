-- POST /pins, a new CID each request. Usage (from the repository root):
--   PINHIVE_TOKEN=… wrk -t2 -c64 -d10s -s bench/wrk/post_pins.lua http://127.0.0.1:8080
package.path = "bench/wrk/?.lua;" .. package.path
require("common")

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_tag", "w" .. threads .. "-" .. os.time())
end

function request()
  return wrk.format("POST", "/pins", {
    ["Authorization"] = auth_header,
    ["Content-Type"] = "application/json",
  }, next_pin_body())
end
