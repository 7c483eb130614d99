-- Shared by the pinhive wrk scripts: the bearer token, and unique CIDs made without hashing.
--
-- A CID here is a CIDv1 with the raw codec and the identity multihash of a short unique text
-- ("<thread>-<counter>"), base32 lower case: valid for any CID parser, unique per request,
-- and cheap to make in Lua. pinhive treats it like any other CID (the simulated IPFS nodes
-- "pin" it; a real node would find the content inside the CID itself).

local token = os.getenv("PINHIVE_TOKEN")
if token == nil or token == "" then
  error("set PINHIVE_TOKEN to a pins:read,pins:write token of the service under test")
end
auth_header = "Bearer " .. token

local alphabet = "abcdefghijklmnopqrstuvwxyz234567"

-- Plain arithmetic, no bit operators: wrk runs LuaJIT (Lua 5.1).
local function base32(bytes)
  local out, bits, value = {}, 0, 0
  for i = 1, #bytes do
    value = value * 256 + bytes:byte(i)
    bits = bits + 8
    while bits >= 5 do
      bits = bits - 5
      local index = math.floor(value / 2 ^ bits) % 32
      out[#out + 1] = alphabet:sub(index + 1, index + 1)
    end
    value = value % 2 ^ bits
  end
  if bits > 0 then
    local index = (value * 2 ^ (5 - bits)) % 32
    out[#out + 1] = alphabet:sub(index + 1, index + 1)
  end
  return table.concat(out)
end

-- CIDv1 (0x01), raw (0x55), identity multihash (0x00), length, payload; multibase "b".
function identity_cid(text)
  return "b" .. base32(string.char(0x01, 0x55, 0x00, #text) .. text)
end

-- A per-thread prefix so that threads never make the same CID (wrk gives each thread its own
-- Lua state; setup() numbers them).
thread_tag = thread_tag or tostring(math.random(1, 1e9))
counter = 0

function next_pin_body()
  counter = counter + 1
  return '{"cid":"' .. identity_cid(thread_tag .. "-" .. counter) .. '"}'
end
