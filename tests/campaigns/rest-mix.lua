-- wrk script of rest-load.sh: random draws mixed with key operations, in a
-- fixed cycle of ten requests per connection thread:
--   7 × GET /v1/random?bytes=32, 1 × sign (ML-DSA-65), 1 × verify of a known
--   good signature, 1 × encapsulate (ML-KEM-768).
-- The key routes carry the bearer token. Environment (set by rest-load.sh):
-- QKEYD_TOKEN, QKEYD_DSA_ID, QKEYD_KEM_ID, QKEYD_MSG_B64, QKEYD_SIG_B64.
-- Counts per kind, non-2xx answers by status, and verify answers that say
-- "valid": false are printed by done() as one "mix ..." line.

local token = os.getenv("QKEYD_TOKEN")
local dsa = os.getenv("QKEYD_DSA_ID")
local kem = os.getenv("QKEYD_KEM_ID")
local msg = os.getenv("QKEYD_MSG_B64")
local sig = os.getenv("QKEYD_SIG_B64")

local auth = {
  ["Authorization"] = "Bearer " .. token,
  ["Content-Type"] = "application/json",
}
local reqs = {}
local kinds = { "random", "random", "random", "sign", "random", "verify", "random", "random", "encapsulate", "random" }

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  reqs.random = wrk.format("GET", "/v1/random?bytes=32")
  reqs.sign = wrk.format("POST", "/v1/keys/" .. dsa .. "/sign", auth,
    '{"message":"' .. msg .. '"}')
  reqs.verify = wrk.format("POST", "/v1/keys/" .. dsa .. "/verify", auth,
    '{"message":"' .. msg .. '","signature":"' .. sig .. '"}')
  reqs.encapsulate = wrk.format("POST", "/v1/keys/" .. kem .. "/encapsulate", auth, '{}')
  n = 0
  sent_random, sent_sign, sent_verify, sent_encapsulate = 0, 0, 0, 0
  answers, non2xx, invalid = 0, 0, 0
  s4xx, s5xx, s503 = 0, 0, 0
end

function request()
  n = n + 1
  local kind = kinds[(n % #kinds) + 1]
  if kind == "random" then sent_random = sent_random + 1
  elseif kind == "sign" then sent_sign = sent_sign + 1
  elseif kind == "verify" then sent_verify = sent_verify + 1
  else sent_encapsulate = sent_encapsulate + 1 end
  return reqs[kind]
end

function response(status, headers, body)
  answers = answers + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if status == 503 then s503 = s503 + 1
    elseif status >= 500 then s5xx = s5xx + 1
    elseif status >= 400 then s4xx = s4xx + 1 end
  elseif string.find(body, '"valid":false', 1, true) then
    invalid = invalid + 1
  end
end

function done(summary, latency, requests)
  local t = { random = 0, sign = 0, verify = 0, encapsulate = 0, answers = 0, non2xx = 0,
    invalid = 0, s4xx = 0, s5xx = 0, s503 = 0 }
  for _, th in ipairs(threads) do
    t.random = t.random + th:get("sent_random")
    t.sign = t.sign + th:get("sent_sign")
    t.verify = t.verify + th:get("sent_verify")
    t.encapsulate = t.encapsulate + th:get("sent_encapsulate")
    t.answers = t.answers + th:get("answers")
    t.non2xx = t.non2xx + th:get("non2xx")
    t.invalid = t.invalid + th:get("invalid")
    t.s4xx = t.s4xx + th:get("s4xx")
    t.s5xx = t.s5xx + th:get("s5xx")
    t.s503 = t.s503 + th:get("s503")
  end
  io.write(string.format(
    "mix sent_random=%d sent_sign=%d sent_verify=%d sent_encapsulate=%d answers=%d " ..
    "non2xx=%d status_4xx=%d status_503=%d status_5xx_other=%d verify_false=%d\n",
    t.random, t.sign, t.verify, t.encapsulate, t.answers, t.non2xx, t.s4xx, t.s503, t.s5xx,
    t.invalid))
  local e = summary.errors
  io.write(string.format(
    "wrk requests=%d duration_s=%.3f rps=%.1f bytes=%d non2xx=%d connect=%d read=%d write=%d " ..
    "timeout=%d p50_ms=%.2f p99_ms=%.2f max_ms=%.2f\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3))
end
