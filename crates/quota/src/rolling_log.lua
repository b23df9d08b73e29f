-- Stanna quota: the exact rolling log (crates/quota/src/log.rs) for up to 4 windows of one
-- subject, checked and charged atomically in one call.
--
-- KEYS[1]  the subject's state, q:{subject}
-- ARGV     cost, now_ms ('' = Redis's own TIME), 'c' (consume) | 'p' (peek), n, then n pairs of
--          limit, period_ms
-- returns  {allowed 0|1, retry_after_ms (-1 if allowed), then per window remaining, reset_after_ms}
--
-- State: one binary string, little-endian.
--   header   '<ddI4'  base_ms, expires_at_ms (when Redis drops the key), n
--   n x      '<I4I4I4I4I4'  limit, head, count, newest, oldest
--   n rings  `limit` x '<I4' admission times
-- Times are offsets from base (0 = never; time = base + v - 1). A ring is sorted oldest -> newest
-- starting at head; the newest `count` slots are inside the window as of the last write, `oldest`
-- is the first of them and `newest` the last. A decision reads only the header and the few slots
-- that left the window since (GETRANGE), and writes only what changed (SETRANGE): its cost does
-- not grow with the limits. (Redis's Lua hashes every byte of every string it creates, so reading
-- a whole 4.4 KB state into Lua costs more than the decision itself.)
local key = KEYS[1]
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

local GLOBAL, WIN = 20, 20
local HEADER = GLOBAL + WIN * n
local base, expires_at
local win = {}          -- per window {head, count, newest, oldest}
local ring_at = {}      -- 0-based byte offset of each ring
local state = nil       -- the whole state, only when it was (re)built here
local p = HEADER
for i = 1, n do
  ring_at[i] = p
  p = p + limits[i] * 4
end

local function unpack_header(s, count)
  local b, e, stored_n = struct.unpack('<ddI4', s)
  local w = {}
  for i = 1, count do
    local limit, head, c, newest, oldest = struct.unpack('<I4I4I4I4I4', s, GLOBAL + (i - 1) * WIN + 1)
    w[i] = {limit = limit, head = head, count = c, newest = newest, oldest = oldest}
  end
  return b, e, stored_n, w
end

-- Fast path: the stored shape matches the request.
local head_bytes = redis.call('GETRANGE', key, 0, HEADER - 1)
local fits = #head_bytes == HEADER
if fits then
  local stored_n
  base, expires_at, stored_n, win = unpack_header(head_bytes, n)
  fits = stored_n == n and now - base + 1 <= 4294967295
  for i = 1, n do
    if not fits or win[i].limit ~= limits[i] then fits = false end
  end
end

-- Slow path (a new subject, changed limits, or a rebase every ~49 days of continuous use):
-- rebuild the whole state here, keeping each window's newest admissions.
if not fits then
  local old = redis.call('GET', key)
  local new_base = now - longest
  local times = {}   -- per new window: its admission times, oldest first
  if old then
    local old_base, old_expires, old_n = struct.unpack('<ddI4', old)
    expires_at = old_expires
    local _, _, _, old_win = unpack_header(old, old_n)
    local q = GLOBAL + WIN * old_n
    for i = 1, old_n do
      local w = old_win[i]
      if i <= n then
        local list = {}
        for k = 0, w.limit - 1 do
          local v = struct.unpack('<I4', old, q + ((w.head + k) % w.limit) * 4 + 1)
          if v ~= 0 then list[#list + 1] = old_base + v - 1 end
        end
        times[i] = list
      end
      q = q + w.limit * 4
    end
  else
    expires_at = 0
  end
  base = new_base
  local parts = {struct.pack('<ddI4', base, expires_at, n)}
  local rings = {}
  for i = 1, n do
    local limit, period = limits[i], periods[i]
    local list = times[i] or {}
    local keep_from = math.max(1, #list - limit + 1)
    local slots, count, newest, oldest = {}, 0, 0, 0
    for k = 1, limit - (#list - keep_from + 1) do slots[#slots + 1] = struct.pack('<I4', 0) end
    for k = keep_from, #list do
      local t = list[k]
      local v = 0
      if t >= base then v = t - base + 1 end
      slots[#slots + 1] = struct.pack('<I4', v)
      if v ~= 0 then
        newest = v
        if t + period > now then
          count = count + 1
          if oldest == 0 then oldest = v end
        end
      end
    end
    win[i] = {limit = limit, head = 0, count = count, newest = newest, oldest = oldest}
    parts[#parts + 1] = struct.pack('<I4I4I4I4I4', limit, 0, count, newest, oldest)
    rings[i] = table.concat(slots)
  end
  for i = 1, n do parts[#parts + 1] = rings[i] end
  state = table.concat(parts)
end

-- The admission time in window i's slot `phys` (nil for never).
local function slot_time(i, phys)
  local at = ring_at[i] + phys * 4
  local bytes
  if state then bytes = string.sub(state, at + 1, at + 4) else bytes = redis.call('GETRANGE', key, at, at + 3) end
  local v = struct.unpack('<I4', bytes)
  if v == 0 then return nil end
  return base + v - 1
end

-- Admissions that have left each window since the last write.
for i = 1, n do
  local w, limit, period = win[i], limits[i], periods[i]
  while w.count > 0 and base + w.oldest - 1 + period <= now do
    w.count = w.count - 1
    local t = nil
    if w.count > 0 then t = slot_time(i, (w.head + limit - w.count) % limit) end
    if t then
      w.oldest = t - base + 1
    else
      w.count, w.oldest = 0, 0
    end
  end
end

-- Admitted iff every window has room for `cost`; then the (limit - cost + 1)-th newest admission
-- (slot head + cost - 1) is a period old, so no span of a period ever holds more than the limit.
local retry = -1
for i = 1, n do
  local w = win[i]
  if w.count + cost > limits[i] then
    local t = slot_time(i, (w.head + cost - 1) % limits[i])
    local r = 1
    if t then r = math.max(1, t + periods[i] - now) end
    if r > retry then retry = r end
  end
end
local allowed = retry < 0

-- The state's header as the windows stand now.
local function header_bytes()
  local header = {struct.pack('<ddI4', base, expires_at, n)}
  for i = 1, n do
    local w = win[i]
    header[#header + 1] = struct.pack('<I4I4I4I4I4', limits[i], w.head, w.count, w.newest, w.oldest)
  end
  return table.concat(header)
end

if allowed and consume then
  local writes = {}
  for i = 1, n do
    local w, limit = win[i], limits[i]
    local at = now
    if w.newest ~= 0 and base + w.newest - 1 > at then at = base + w.newest - 1 end
    local v = at - base + 1
    local packed = struct.pack('<I4', v)
    local first = math.min(cost, limit - w.head)
    writes[#writes + 1] = {ring_at[i] + w.head * 4, string.rep(packed, first)}
    if cost > first then writes[#writes + 1] = {ring_at[i], string.rep(packed, cost - first)} end
    w.head = (w.head + cost) % limit
    if w.count == 0 then w.oldest = v end
    w.count = w.count + cost
    w.newest = v
  end
  -- The key must outlive every admission by the longest window, also after a window grew:
  -- refresh when less than that is left, to 2 x longest (about one TTL write per window).
  local refresh_ttl = state ~= nil or expires_at - now < longest
  if refresh_ttl then expires_at = now + 2 * longest end
  writes[#writes + 1] = {0, header_bytes()}
  if state then
    table.sort(writes, function(a, b) return a[1] < b[1] end)
    local parts, cursor = {}, 0
    for _, wr in ipairs(writes) do
      parts[#parts + 1] = string.sub(state, cursor + 1, wr[1])
      parts[#parts + 1] = wr[2]
      cursor = wr[1] + #wr[2]
    end
    parts[#parts + 1] = string.sub(state, cursor + 1)
    redis.call('SET', key, table.concat(parts), 'PX', 2 * longest)
  else
    for _, wr in ipairs(writes) do redis.call('SETRANGE', key, wr[1], wr[2]) end
    if refresh_ttl then redis.call('PEXPIRE', key, 2 * longest) end
  end
elseif consume then
  -- A refusal charges nothing, but it must not let the state expire while a window still counts
  -- its admissions: after a window grew (a new shape, or a longer period with the same limit) the
  -- stored expiry follows the old, shorter windows. Keep the state for the longest window.
  -- The state was rebuilt for a new shape: keep the stored one as it is (a process still on the
  -- old, larger limits must keep seeing every admission it counted) and only make it last,
  -- never shortening what it has.
  if state then
    local ttl = redis.call('PTTL', key)
    if ttl >= 0 and ttl < 2 * longest then
      redis.call('SETRANGE', key, 8, struct.pack('<d', now + 2 * longest))
      redis.call('PEXPIRE', key, 2 * longest)
    end
  elseif expires_at - now < longest then
    expires_at = now + 2 * longest
    redis.call('SETRANGE', key, 0, struct.pack('<ddI4', base, expires_at, n))
    redis.call('PEXPIRE', key, 2 * longest)
  end
end

local out = {allowed and 1 or 0, retry}
for i = 1, n do
  local w = win[i]
  local reset = 0
  if w.count > 0 then reset = base + w.newest - 1 + periods[i] - now end
  out[#out + 1] = limits[i] - w.count
  out[#out + 1] = reset
end
return out
