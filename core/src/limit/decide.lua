-- Decides rate-limit and quota requests atomically, at the Redis server's clock.
--
-- KEYS[i]  the counter key of decision i
-- ARGV     one group of arguments per key, in key order; every group is
--          #ARGV / #KEYS long, and a shorter one is padded at its end with empty
--          strings. A group is:
--   [1] algorithm: "gcra", "window" or "calendar"
--   [2] cost in units
--   gcra:     [3] emission interval (us), [4] tolerance (us), [5] burst
--   window:   [3] limit, [4] window length (us)
--   calendar: [3] limit, [4] period: "minute", "hour", "day" or "month"
--
-- With one key, returns {allowed (0 or 1), remaining, retry_after_us, reset_after_us}
-- or an error. With several keys, returns one entry per key: that array, or an error
-- reply when that key's decision failed (a key holding another type, an unknown
-- algorithm). A failed decision does not stop the ones after it. All decisions of
-- one call read the clock once and run in key order, so decisions on the same key
-- see each other's writes.
--
-- The arithmetic repeats gatehouse-core's `limit` module in integer microseconds. Lua
-- numbers are doubles, exact for integers below 2^53 (about 285 years of microseconds
-- since 1970), so results agree with the Rust code except for a sliding window whose
-- count times its length in microseconds exceeds 2^53, where rounding may differ by one.

-- TIME is nondeterministic; since Redis 5 scripts are replicated as effects, so
-- writes after TIME are allowed.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

local function ceil_div(a, b)
  return math.floor((a + b - 1) / b)
end

-- Returns the expiry of a key in whole milliseconds, at least 1, for PX and PEXPIRE.
-- Numbers are passed to redis.call as they are: Redis formats a number argument with
-- 17 significant digits (checked on Redis 7.0), exact for the integers below 2^53
-- used here, where Lua's tostring would round to 14.
local function expiry_millis(micros)
  return math.max(1, ceil_div(micros, 1000))
end

local function gcra(key, cost, emission, tolerance, burst)
  local stored = tonumber(redis.call('GET', key) or '0')
  local tat = math.max(stored, now)
  local new_tat = tat + emission * cost
  local allow_at = new_tat - tolerance
  if now < allow_at or cost > burst then
    local retry = allow_at - now
    if cost > burst then
      retry = tolerance
    end
    local remaining = math.floor(math.max(0, tolerance - (tat - now)) / emission)
    return {0, remaining, retry, tat - now}
  end
  redis.call('SET', key, new_tat, 'PX', expiry_millis(new_tat - now))
  local remaining = math.floor(math.max(0, tolerance - (new_tat - now)) / emission)
  return {1, remaining, 0, new_tat - now}
end

local function window(key, cost, limit, length)
  local state = redis.call('HMGET', key, 'start', 'current', 'previous')
  local start = tonumber(state[1] or '0')
  local current = tonumber(state[2] or '0')
  local previous = tonumber(state[3] or '0')
  -- A server clock that stepped back counts as the start of the stored window.
  local at = math.max(now, start)
  local window_start = at - at % length
  if window_start == start + length then
    previous = current
    current = 0
  elseif window_start ~= start then
    previous = 0
    current = 0
  end
  local elapsed = at - window_start
  local remaining_share = length - elapsed
  local weighted = ceil_div(previous * remaining_share, length)
  local estimate = weighted + current
  if estimate + cost > limit then
    local retry
    if cost > limit then
      retry = length
    elseif current + cost > limit then
      -- In the next window this window's count becomes the previous one.
      local spare = limit - cost
      local wait = 0
      if current > spare then
        wait = length - math.floor(spare * length / current)
      end
      retry = remaining_share + wait
    else
      local spare = limit - current - cost
      local admit_at = 0
      if previous > spare then
        admit_at = length - math.floor(spare * length / previous)
      end
      retry = math.max(admit_at - elapsed, 1)
    end
    return {0, math.max(0, limit - estimate), retry, remaining_share}
  end
  redis.call('HSET', key, 'start', window_start,
    'current', current + cost, 'previous', previous)
  redis.call('PEXPIRE', key, expiry_millis(window_start + 2 * length - at))
  return {1, limit - estimate - cost, 0, remaining_share}
end

local day = 86400000000

-- Days since 1970-01-01 to (year, month), by 400-year eras of 146097 days with
-- years starting in March; the same method as gatehouse-core's quota module.
local function civil_from_days(days)
  local shifted = days + 719468
  local era = math.floor(shifted / 146097)
  local doe = shifted - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400
  if month <= 2 then
    year = year + 1
  end
  return year, month
end

local function days_from_civil(year, month)
  if month <= 2 then
    year = year - 1
  end
  local era = math.floor(year / 400)
  local yoe = year - era * 400
  local mp = month > 2 and month - 3 or month + 9
  local doy = math.floor((153 * mp + 2) / 5)
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- Returns the start and end of the calendar `period` that contains `at`.
local function bounds(period, at)
  local length
  if period == 'minute' then
    length = 60000000
  elseif period == 'hour' then
    length = 3600000000
  elseif period == 'day' then
    length = day
  elseif period == 'month' then
    local year, month = civil_from_days(math.floor(at / day))
    local next_year, next_month = year, month + 1
    if month == 12 then
      next_year, next_month = year + 1, 1
    end
    return days_from_civil(year, month) * day, days_from_civil(next_year, next_month) * day
  else
    error('unknown calendar period ' .. tostring(period))
  end
  local start = at - at % length
  return start, start + length
end

local function calendar(key, cost, limit, period)
  local state = redis.call('HMGET', key, 'start', 'used')
  local stored_start = tonumber(state[1] or '0')
  local used = tonumber(state[2] or '0')
  local start, finish = bounds(period, now)
  if start > stored_start then
    used = 0
  elseif start < stored_start then
    -- The server clock stepped back: keep counting in the stored, later period.
    start, finish = bounds(period, stored_start)
  end
  local reset = math.max(0, finish - now)
  if used + cost > limit then
    return {0, math.max(0, limit - used), reset, reset}
  end
  used = used + cost
  redis.call('HSET', key, 'start', start, 'used', used)
  redis.call('PEXPIRE', key, expiry_millis(finish - now + 1000000))
  return {1, limit - used, 0, reset}
end

-- Converts argument text to a number once per call: the decisions of a batch often
-- share a policy, so their arguments repeat.
local numbers = {}
local function number(text)
  local value = numbers[text]
  if value == nil then
    value = tonumber(text)
    numbers[text] = value
  end
  return value
end

-- Runs the decision on `key` of the argument group that starts after ARGV[base].
local function decide(key, base, stride)
  local algorithm = ARGV[base + 1]
  local cost = number(ARGV[base + 2])
  if cost == nil then
    error('the cost ' .. tostring(ARGV[base + 2]) .. ' is not a number')
  end
  if algorithm == 'gcra' and stride >= 5 then
    return gcra(key, cost, number(ARGV[base + 3]), number(ARGV[base + 4]),
      number(ARGV[base + 5]))
  elseif algorithm == 'window' then
    return window(key, cost, number(ARGV[base + 3]), number(ARGV[base + 4]))
  elseif algorithm == 'calendar' then
    return calendar(key, cost, number(ARGV[base + 3]), ARGV[base + 4])
  end
  error('unknown algorithm ' .. tostring(algorithm) .. ' in a group of ' .. stride
    .. ' arguments')
end

local count = #KEYS
if count == 0 or #ARGV % count ~= 0 or #ARGV / count < 4 then
  return redis.error_reply('ERR expected at least 4 arguments per key, in groups of equal '
    .. 'length; got ' .. #ARGV .. ' arguments for ' .. count .. ' keys')
end
local stride = #ARGV / count

if count == 1 then
  return decide(KEYS[1], 0, stride)
end

local replies = {}
for index = 1, count do
  local ok, reply = pcall(decide, KEYS[index], (index - 1) * stride, stride)
  if ok then
    replies[index] = reply
  elseif type(reply) == 'table' and reply.err then
    -- An error of a Redis command, such as WRONGTYPE, is already an error reply.
    replies[index] = reply
  else
    replies[index] = redis.error_reply('ERR ' .. tostring(reply))
  end
end
return replies
