-- Decides one rate-limit or quota request atomically, at the Redis server's clock.
--
-- KEYS[1]  the counter key
-- ARGV[1]  algorithm: "gcra", "window" or "calendar"
-- ARGV[2]  cost in units
-- gcra:     ARGV[3] emission interval (us), ARGV[4] tolerance (us), ARGV[5] burst
-- window:   ARGV[3] limit, ARGV[4] window length (us)
-- calendar: ARGV[3] limit, ARGV[4] period: "minute", "hour", "day" or "month"
--
-- Returns {allowed (0 or 1), remaining, retry_after_us, reset_after_us}.
--
-- The arithmetic repeats gatehouse-core's `limit` module in integer microseconds. Lua
-- numbers are doubles, exact for integers below 2^53 (about 285 years of microseconds
-- since 1970), so results agree with the Rust code except for a sliding window whose
-- count times its length in microseconds exceeds 2^53, where rounding may differ by one.

local key = KEYS[1]
local algorithm = ARGV[1]
local cost = tonumber(ARGV[2])

-- TIME is nondeterministic; since Redis 5 scripts are replicated as effects, so
-- writes after TIME are allowed.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

local function ceil_div(a, b)
  return math.floor((a + b - 1) / b)
end

local function expire_after(micros)
  redis.call('PEXPIRE', key, math.max(1, ceil_div(micros, 1000)))
end

if algorithm == 'gcra' then
  local emission = tonumber(ARGV[3])
  local tolerance = tonumber(ARGV[4])
  local burst = tonumber(ARGV[5])
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
  redis.call('SET', key, string.format('%.0f', new_tat))
  expire_after(new_tat - now)
  local remaining = math.floor(math.max(0, tolerance - (new_tat - now)) / emission)
  return {1, remaining, 0, new_tat - now}
end

if algorithm == 'window' then
  local limit = tonumber(ARGV[3])
  local window = tonumber(ARGV[4])
  local state = redis.call('HMGET', key, 'start', 'current', 'previous')
  local start = tonumber(state[1] or '0')
  local current = tonumber(state[2] or '0')
  local previous = tonumber(state[3] or '0')
  -- A server clock that stepped back counts as the start of the stored window.
  now = math.max(now, start)
  local window_start = now - now % window
  if window_start == start + window then
    previous = current
    current = 0
  elseif window_start ~= start then
    previous = 0
    current = 0
  end
  local elapsed = now - window_start
  local remaining_share = window - elapsed
  local weighted = ceil_div(previous * remaining_share, window)
  local estimate = weighted + current
  if estimate + cost > limit then
    local retry
    if cost > limit then
      retry = window
    elseif current + cost > limit then
      -- In the next window this window's count becomes the previous one.
      local spare = limit - cost
      local wait = 0
      if current > spare then
        wait = window - math.floor(spare * window / current)
      end
      retry = remaining_share + wait
    else
      local spare = limit - current - cost
      local at = 0
      if previous > spare then
        at = window - math.floor(spare * window / previous)
      end
      retry = math.max(at - elapsed, 1)
    end
    return {0, math.max(0, limit - estimate), retry, remaining_share}
  end
  redis.call('HSET', key, 'start', string.format('%.0f', window_start),
    'current', current + cost, 'previous', previous)
  expire_after(window_start + 2 * window - now)
  return {1, limit - estimate - cost, 0, remaining_share}
end

if algorithm == 'calendar' then
  local limit = tonumber(ARGV[3])
  local period = ARGV[4]
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

  local function bounds(at)
    local length
    if period == 'minute' then
      length = 60000000
    elseif period == 'hour' then
      length = 3600000000
    elseif period == 'day' then
      length = day
    else
      local year, month = civil_from_days(math.floor(at / day))
      local next_year, next_month = year, month + 1
      if month == 12 then
        next_year, next_month = year + 1, 1
      end
      return days_from_civil(year, month) * day, days_from_civil(next_year, next_month) * day
    end
    local start = at - at % length
    return start, start + length
  end

  local state = redis.call('HMGET', key, 'start', 'used')
  local stored_start = tonumber(state[1] or '0')
  local used = tonumber(state[2] or '0')
  local start, finish = bounds(now)
  if start > stored_start then
    used = 0
  elseif start < stored_start then
    -- The server clock stepped back: keep counting in the stored, later period.
    start, finish = bounds(stored_start)
  end
  local reset = math.max(0, finish - now)
  if used + cost > limit then
    return {0, math.max(0, limit - used), reset, reset}
  end
  used = used + cost
  redis.call('HSET', key, 'start', string.format('%.0f', start), 'used', used)
  expire_after(finish - now + 1000000)
  return {1, limit - used, 0, reset}
end

return redis.error_reply('unknown algorithm ' .. tostring(algorithm))
