-- One call of a sliding-window limit, atomically: count it if it fits.
-- KEYS[1]: the descriptor's key prefix; ARGV: requests allowed, window (s), hits.
-- Returns {allowed (0/1), previous, current, elapsed_ms}.
-- The estimate of the last window's calls is the previous window's count weighted
-- by how much of it overlaps the last `window` seconds, plus the current count
-- (Redis's clock, shared by every rate limit service instance).
local limit = tonumber(ARGV[1])
local window_ms = tonumber(ARGV[2]) * 1000
local hits = tonumber(ARGV[3])
local now = redis.call("TIME")
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local index = math.floor(now_ms / window_ms)
local elapsed = now_ms - index * window_ms
local key = KEYS[1] .. ":" .. index
local previous = tonumber(redis.call("GET", KEYS[1] .. ":" .. (index - 1)) or "0")
local current = tonumber(redis.call("GET", key) or "0")
local estimate = previous * (window_ms - elapsed) / window_ms + current
local allowed = 0
if estimate + hits <= limit then
  current = redis.call("INCRBY", key, hits)
  -- Kept while it is the current or the previous window.
  redis.call("PEXPIRE", key, 2 * window_ms)
  allowed = 1
end
return {allowed, previous, current, elapsed}
