-- GET /pins?limit=10 (the owner's newest pinned pins: one bounded listing read). Load some
-- pins first (post_pins.lua). Usage:
--   PINHIVE_TOKEN=… wrk -t2 -c64 -d10s -s bench/wrk/list_pins.lua http://127.0.0.1:8080
package.path = "bench/wrk/?.lua;" .. package.path
require("common")

function request()
  return wrk.format("GET", "/pins?limit=10", { ["Authorization"] = auth_header })
end
