-- One call of a fixed-window limit, atomically: count it if it fits.
-- KEYS[1]: the descriptor's key prefix; ARGV: requests allowed, window (s), hits.
-- Returns {allowed (0/1), previous (always 0), current, elapsed_ms}.
-- Redis's clock, not the caller's: every rate limit service instance agrees on
-- where a window starts.
local limit = tonumber(ARGV[1])
local window_ms = tonumber(ARGV[2]) * 1000
local hits = tonumber(ARGV[3])
local now = redis.call("TIME")
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local index = math.floor(now_ms / window_ms)
local key = KEYS[1] .. ":" .. index
local current = tonumber(redis.call("GET", key) or "0")
local allowed = 0
-- A refused call is not counted: a client that keeps trying after the limit
-- is refused until the window ends, not longer.
if current + hits <= limit then
  current = redis.call("INCRBY", key, hits)
  redis.call("PEXPIRE", key, window_ms)
  allowed = 1
end
return {allowed, 0, current, now_ms - index * window_ms}
