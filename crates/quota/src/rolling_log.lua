-- Stanna quota: the exact rolling log (crates/quota/src/log.rs) for up to 4 windows of one
-- subject, checked and charged atomically in one call.
--
-- KEYS[1]  the subject's state, q:{subject}
-- ARGV     cost, now_ms ('' = Redis's own TIME), 'c' (consume) | 'p' (peek), n, then n pairs of
--          limit, period_ms
-- returns  {allowed 0|1, retry_after_ms (-1 if allowed), then per window remaining, reset_after_ms}
--
-- State: one binary string. Header '<ddI4': base_ms, expires_at_ms (when Redis drops the key), n. Then per window
-- '<I4I4' limit, head, and `limit` slots '<I4' holding admission times as offsets from base
-- (0 = never; time = base + v - 1). Slots are sorted oldest -> newest starting at head.
local cost = tonumber(ARGV[1])
local now
if ARGV[2] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[2])
end
local consume = ARGV[3] == 'c'
local n = tonumber(ARGV[4])
local limits, periods, longest = {}, {}, 0
for i = 1, n do
  limits[i] = tonumber(ARGV[3 + 2 * i])
  periods[i] = tonumber(ARGV[4 + 2 * i])
  if periods[i] > longest then longest = periods[i] end
end

local HEADER = 20
local state = redis.call('GET', KEYS[1])
-- Whether `state` was made or reshaped here (then it is written whole, else patched in place).
local rebuilt = false
local base, expires_at
local heads, pos = {}, {}

-- Positions of each window's slots in `state`, and whether the stored shape matches the request.
local function parse()
  local stored_n
  base, expires_at, stored_n = struct.unpack('<ddI4', state)
  local p, stored = HEADER + 1, {}
  for i = 1, stored_n do
    local limit, head = struct.unpack('<I4I4', state, p)
    stored[i] = {limit, head, p + 8}
    p = p + 8 + limit * 4
  end
  return stored_n, stored
end

-- Rebuilds the state for the requested shape, keeping each window's newest admissions.
local function reshape(stored)
  local parts = {struct.pack('<ddI4', base, expires_at, n)}
  for i = 1, n do
    local limit, s, ring = limits[i], stored[i], nil
    if s then
      local bytes = string.sub(state, s[3], s[3] + s[1] * 4 - 1)
      local logical = string.sub(bytes, s[2] * 4 + 1) .. string.sub(bytes, 1, s[2] * 4)
      if s[1] >= limit then
        ring = string.sub(logical, (s[1] - limit) * 4 + 1)
      else
        ring = string.rep('\0', (limit - s[1]) * 4) .. logical
      end
    else
      ring = string.rep('\0', limit * 4)
    end
    parts[#parts + 1] = struct.pack('<I4I4', limit, 0) .. ring
  end
  state = table.concat(parts)
end

local function locate()
  local p = HEADER + 1
  for i = 1, n do
    heads[i] = struct.unpack('<I4', state, p + 4)
    pos[i] = p + 8
    p = p + 8 + limits[i] * 4
  end
end

if not state then
  base, expires_at = now - longest, 0
  reshape({})
  rebuilt = true
else
  local stored_n, stored = parse()
  local same = stored_n == n
  for i = 1, n do
    if not stored[i] or stored[i][1] ~= limits[i] then same = false end
  end
  if not same then
    reshape(stored)
    rebuilt = true
  end
end
locate()

-- Offsets are 32-bit: every ~49 days of continuous use, move the base (times older than the
-- longest window become 'never', which they are for every decision).
if now - base + 1 > 4294967295 then
  local new_base, parts = now - longest, {struct.pack('<ddI4', now - longest, expires_at, n)}
  for i = 1, n do
    parts[#parts + 1] = struct.pack('<I4I4', limits[i], heads[i])
    for k = 0, limits[i] - 1 do
      local v = struct.unpack('<I4', state, pos[i] + k * 4)
      local t = base + v - 1
      if v == 0 or t < new_base then v = 0 else v = t - new_base + 1 end
      parts[#parts + 1] = struct.pack('<I4', v)
    end
  end
  state, base, rebuilt = table.concat(parts), new_base, true
end

-- The time of window i's k-th oldest admission (0-based), or nil for never.
local function slot_time(i, k)
  local v = struct.unpack('<I4', state, pos[i] + ((heads[i] + k) % limits[i]) * 4)
  if v == 0 then return nil end
  return base + v - 1
end

-- Each window's admissions inside (now - period, now] (a suffix of the sorted ring, found by
-- binary search) and its newest admission.
local counts, newest = {}, {}
for i = 1, n do
  local limit, period = limits[i], periods[i]
  local lo, hi = 0, limit
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local t = slot_time(i, mid)
    if t and t + period > now then hi = mid else lo = mid + 1 end
  end
  counts[i] = limit - lo
  newest[i] = slot_time(i, limit - 1)
end

local retry = -1
for i = 1, n do
  local t = slot_time(i, cost - 1)
  if t and t + periods[i] > now then
    local r = t + periods[i] - now
    if r > retry then retry = r end
  end
end
local allowed = retry < 0

if allowed and consume then
  local edits = {}
  for i = 1, n do
    local limit = limits[i]
    local at = now
    if newest[i] and newest[i] > at then at = newest[i] end
    local v, h = struct.pack('<I4', at - base + 1), heads[i]
    for _ = 1, cost do
      edits[#edits + 1] = {pos[i] + h * 4, v}
      h = (h + 1) % limit
    end
    edits[#edits + 1] = {pos[i] - 4, struct.pack('<I4', h)}
    -- The overwritten slots were outside the window (that is why the request was admitted).
    counts[i] = counts[i] + cost
    newest[i] = at
  end
  -- The key must outlive every admission by the longest window, also after a window grew:
  -- refresh when less than that is left, to 2 x longest, so the TTL is written about once per
  -- window instead of on every request.
  local refresh_ttl = rebuilt or expires_at - now < longest
  if refresh_ttl then
    edits[#edits + 1] = {9, struct.pack('<d', now + 2 * longest)}
  end
  -- A new or reshaped state is written whole. Otherwise only the changed bytes are patched:
  -- Redis's Lua hashes every byte of every string it creates (≈1.5 µs per KB here), so building a
  -- new 4.4 KB state string costs more than the few SETRANGE calls that patch it.
  if rebuilt then
    table.sort(edits, function(a, b) return a[1] < b[1] end)
    local parts, cursor = {}, 1
    for _, e in ipairs(edits) do
      parts[#parts + 1] = string.sub(state, cursor, e[1] - 1)
      parts[#parts + 1] = e[2]
      cursor = e[1] + #e[2]
    end
    parts[#parts + 1] = string.sub(state, cursor)
    if refresh_ttl then
      redis.call('SET', KEYS[1], table.concat(parts), 'PX', 2 * longest)
    else
      redis.call('SET', KEYS[1], table.concat(parts), 'KEEPTTL')
    end
  else
    -- Patch the few changed bytes in place: no copy of the whole state, whatever the limits.
    for _, e in ipairs(edits) do
      redis.call('SETRANGE', KEYS[1], e[1] - 1, e[2])
    end
    if refresh_ttl then
      redis.call('PEXPIRE', KEYS[1], 2 * longest)
    end
  end
end

local out = {allowed and 1 or 0, retry}
for i = 1, n do
  local reset = 0
  if counts[i] > 0 then reset = newest[i] + periods[i] - now end
  out[#out + 1] = limits[i] - counts[i]
  out[#out + 1] = reset
end
return out
