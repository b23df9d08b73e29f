-- Stanna quota: the exact rolling log (crates/quota/src/log.rs) for up to 4 windows of a subject,
-- checked and charged atomically, for one decision or several (a batch) in one call.
--
-- KEYS     one state per decision, q2:{subject} (a subject may come more than once: its decisions
--          are made in order, each seeing the one before)
-- ARGV     now_ms as text ('' = Redis's own TIME), then per decision one binary string,
--          '<BBI4' consume 1 | peek 0, n, cost, then n x '<I4I4' limit, period_ms
-- returns  per decision: allowed 0|1, retry_after_ms (-1 if allowed), then per window remaining,
--          reset_after_ms
--
-- State: one binary string, little-endian.
--   header   '<ddI4'  base_ms, expires_at_ms (when Redis drops the key), 256 + n
--   n x      '<I4I4I4I4I4I4I4'  limit, head, count, newest, oldest, staged, period_ms
--   n x      8 x '<I4'  staged admissions: the values of slots head .. head + staged - 1
--   n rings  `limit` x '<I4' admission times
-- Times are offsets from base (0 = never; time = base + v - 1). A ring is sorted oldest -> newest
-- starting at head + staged; the newest `count` slots are inside the window as of the last write,
-- `oldest` is the first of them and `newest` the last.
--
-- Why this shape (docs/quota.md has the figures): each redis.call costs about 1 us, every string
-- Lua makes is hashed byte by byte, and each number turned into text (a redis.call argument) or
-- read from text (tonumber) goes through printf/strtod. So a decision reads the header (one
-- GETRANGE, unpacked into numbers at once), reads ring slots only for admissions that left a
-- window (one GETRANGE of up to 16 slots), and writes the header back (one SETRANGE, packed at
-- once). Up to 8 new admissions are staged in the header as numbers; the one that does not fit
-- moves them and itself to the ring (one SETRANGE: every 9th admission at cost 1), and
-- parameters arrive packed. Its cost does not grow with the limits.
--
-- The first state of a subject takes over what the previous layout (q:{subject}, n <= 4 at byte
-- 16, no staging) counted, so an upgrade forgets no admission.
local B, CHUNK = 8, 16
local spread = unpack   -- the table's, before the name is struct's
local pack, unpack, sub, rep = struct.pack, struct.unpack, string.sub, string.rep
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[1])
end

-- Per n: the header's struct format (fixed fields, then staged slots), the parameters' format
-- and the header's last byte as text (literals: a string built here would be made, and hashed,
-- on every call).
local FMT = {
  '<ddI4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4',
  '<ddI4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4',
  '<ddI4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4',
  '<ddI4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4I4',
}
local PARAMS = {'<BBI4I4I4', '<BBI4I4I4I4I4', '<BBI4I4I4I4I4I4I4', '<BBI4I4I4I4I4I4I4I4I4'}
local HEADER_END = {'79', '139', '199', '259'}

-- The decision being made, in two tables made once per call at their largest size and refilled
-- for each decision of a batch (a table made per decision costs more than the decision's
-- arithmetic). F: base, expires_at, 256 + n, then per window i at w = 3 + 7 (i - 1): limit,
-- head, count, newest, oldest, staged, period; then window i's staged slots at
-- 3 + 7 n + 8 (i - 1) + 1...
-- P: consume, n, cost, then per window limit, period at 2 + 2 i. Past what n uses, both hold
-- leftovers, never read.
local P = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
local F = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
local key, n, HEADER, state, base
local legacy_key   -- the previous layout's key, when this decision's state was read from it
local chunk_i, chunk_from, chunk

-- The admission time in window i's slot `phys` (nil for never): a staged slot, or a ring slot
-- from the rebuilt state or from Redis, CHUNK slots at a time.
local function slot_time(i, phys)
  local w = 3 + 7 * (i - 1)
  local limit = F[w + 1]
  local j = (phys - F[w + 2]) % limit
  local v
  if j < F[w + 6] then
    v = F[3 + 7 * n + 8 * (i - 1) + j + 1]
  else
    local at = HEADER   -- window i's ring, 0-based
    for k = 1, i - 1 do at = at + 4 * P[2 + 2 * k] end
    if state then
      v = unpack('<I4', state, at + 4 * phys + 1)
    else
      if chunk_i ~= i or phys < chunk_from or phys >= chunk_from + #chunk / 4 then
        chunk_i, chunk_from = i, phys
        chunk = redis.call('GETRANGE', key, at + 4 * phys, at + 4 * math.min(limit, phys + CHUNK) - 1)
      end
      v = unpack('<I4', chunk, 4 * (phys - chunk_from) + 1)
    end
  end
  if v == 0 then return nil end
  return base + v - 1
end

local out, o = {}, 0
for d = 1, #KEYS do
  key, state, chunk_i, legacy_key = KEYS[d], nil, 0, nil
  n = string.byte(ARGV[1 + d], 2)
  P[1], P[2], P[3], P[4], P[5], P[6], P[7], P[8], P[9], P[10], P[11] = unpack(PARAMS[n], ARGV[1 + d])
  local consume, cost = P[1] == 1, P[3]
  local longest = 0
  for i = 1, n do
    if P[3 + 2 * i] > longest then longest = P[3 + 2 * i] end
  end
  HEADER = 20 + 60 * n

  local hb = redis.call('GETRANGE', key, '0', HEADER_END[n])
  local fits = #hb == HEADER
  if fits then
    -- (One assignment per n: assigning the unused fields costs as much as using them.)
    if n == 2 then
      F[1], F[2], F[3], F[4], F[5], F[6], F[7], F[8], F[9], F[10], F[11], F[12], F[13], F[14], F[15], F[16], F[17], F[18], F[19], F[20], F[21], F[22], F[23], F[24], F[25], F[26], F[27], F[28], F[29], F[30], F[31], F[32], F[33] = unpack(FMT[2], hb)
    elseif n == 1 then
      F[1], F[2], F[3], F[4], F[5], F[6], F[7], F[8], F[9], F[10], F[11], F[12], F[13], F[14], F[15], F[16], F[17], F[18] = unpack(FMT[1], hb)
    elseif n == 3 then
      F[1], F[2], F[3], F[4], F[5], F[6], F[7], F[8], F[9], F[10], F[11], F[12], F[13], F[14], F[15], F[16], F[17], F[18], F[19], F[20], F[21], F[22], F[23], F[24], F[25], F[26], F[27], F[28], F[29], F[30], F[31], F[32], F[33], F[34], F[35], F[36], F[37], F[38], F[39], F[40], F[41], F[42], F[43], F[44], F[45], F[46], F[47], F[48] = unpack(FMT[3], hb)
    else
      F[1], F[2], F[3], F[4], F[5], F[6], F[7], F[8], F[9], F[10], F[11], F[12], F[13], F[14], F[15], F[16], F[17], F[18], F[19], F[20], F[21], F[22], F[23], F[24], F[25], F[26], F[27], F[28], F[29], F[30], F[31], F[32], F[33], F[34], F[35], F[36], F[37], F[38], F[39], F[40], F[41], F[42], F[43], F[44], F[45], F[46], F[47], F[48], F[49], F[50], F[51], F[52], F[53], F[54], F[55], F[56], F[57], F[58], F[59], F[60], F[61], F[62], F[63] = unpack(FMT[4], hb)
    end
    fits = F[3] == 256 + n and now - F[1] + 1 <= 4294967295
    for i = 1, n do
      local w = 3 + 7 * (i - 1)
      if F[w + 1] ~= P[2 + 2 * i] or F[w + 7] ~= P[3 + 2 * i] then fits = false end
    end
  end
  if fits then
    base = F[1]
  else
    -- (Made here, not once per call: a Lua closure costs about 2 000 instructions to make, and
    -- the steady state never needs these.)
    -- The admission times of window i of a stored state (either layout), oldest first.
    local function stored_times(old, legacy, old_n, old_base, i)
      local fixed = legacy and 20 or 28
      local q = 20 + fixed * old_n + (legacy and 0 or 4 * B * old_n)
      for j = 1, i - 1 do q = q + 4 * unpack('<I4', old, 20 + fixed * (j - 1) + 1) end
      local limit, head = unpack('<I4I4', old, 20 + fixed * (i - 1) + 1)
      local staged = 0
      if not legacy then staged = unpack('<I4', old, 20 + fixed * (i - 1) + 21) end
      local list = {}
      for k = 0, limit - 1 do
        local phys = (head + staged + k) % limit
        local j, v = (phys - head) % limit, nil
        if j < staged then
          v = unpack('<I4', old, 20 + 28 * old_n + 4 * (B * (i - 1) + j) + 1)
        else
          v = unpack('<I4', old, q + phys * 4 + 1)
        end
        if v ~= 0 then list[#list + 1] = old_base + v - 1 end
      end
      return list
    end

    -- Slow path (a new subject, changed limits, or a rebase every ~49 days of continuous use):
    -- rebuild the whole state, keeping each window's newest admissions; sets F, state and base.
    local function rebuild(longest)
      local old = redis.call('GET', key)
      local legacy = false
      if not old then
        old = redis.call('GET', 'q' .. sub(key, 3))
        legacy = old ~= false
        if legacy then legacy_key = 'q' .. sub(key, 3) end
      end
      local times, expires_at = {}, 0
      if old then
        local old_base, old_expires, old_n = unpack('<ddI4', old)
        expires_at = old_expires
        if not legacy then old_n = old_n - 256 end
        for i = 1, math.min(n, old_n) do times[i] = stored_times(old, legacy, old_n, old_base, i) end
      end
      -- base: early enough for every admission kept (a window that grows later must still count
      -- them), late enough that offsets fit 32 bits (46 days, beyond any window).
      local lowest = now - longest
      for i = 1, n do
        local list = times[i]
        if list then
          local first = list[math.max(1, #list - P[2 + 2 * i] + 1)]
          if first and first < lowest then lowest = first end
        end
      end
      base = math.max(lowest, now - 4000000000)
      F[1], F[2], F[3] = base, expires_at, 256 + n
      local rings = {}
      for i = 1, n do
        local limit, period = P[2 + 2 * i], P[3 + 2 * i]
        local list = times[i] or {}
        local keep_from = math.max(1, #list - limit + 1)
        local slots, count, newest, oldest = {rep('\0', 4 * (limit - (#list - keep_from + 1)))}, 0, 0, 0
        for k = keep_from, #list do
          local t = list[k]
          local v = 0
          if t >= base then v = t - base + 1 end
          slots[#slots + 1] = pack('<I4', v)
          if v ~= 0 then
            newest = v
            if t + period > now then
              count = count + 1
              if oldest == 0 then oldest = v end
            end
          end
        end
        local w = 3 + 7 * (i - 1)
        F[w + 1], F[w + 2], F[w + 3], F[w + 4], F[w + 5], F[w + 6], F[w + 7] =
          limit, 0, count, newest, oldest, 0, period
        rings[i] = table.concat(slots)
      end
      for s = 3 + 7 * n + 1, 3 + 15 * n do F[s] = 0 end
      state = pack(FMT[n], spread(F, 1, 3 + 15 * n)) .. table.concat(rings)
    end
    rebuild(longest)
  end

  -- The decision's time: now, or the newest admission when the clock stepped back (a window's
  -- count is never taken at a time earlier than one it was already taken at; log.rs does the
  -- same).
  local at = now
  for i = 1, n do
    local newest = F[3 + 7 * (i - 1) + 4]
    if newest ~= 0 and base + newest - 1 > at then at = base + newest - 1 end
  end

  -- Admissions that have left each window since the last write.
  for i = 1, n do
    local w = 3 + 7 * (i - 1)
    local limit, period = P[2 + 2 * i], P[3 + 2 * i]
    local head = (F[w + 2] + F[w + 6]) % limit
    while F[w + 3] > 0 and base + F[w + 5] - 1 + period <= at do
      F[w + 3] = F[w + 3] - 1
      local t = nil
      if F[w + 3] > 0 then t = slot_time(i, (head + limit - F[w + 3]) % limit) end
      if t then
        F[w + 5] = t - base + 1
      else
        F[w + 3], F[w + 5] = 0, 0
      end
    end
  end

  -- Admitted iff every window has room for `cost`; then the (limit - cost + 1)-th newest
  -- admission (slot head + cost - 1) is a period old, so no span of a period ever holds more
  -- than the limit.
  local retry = -1
  for i = 1, n do
    local w = 3 + 7 * (i - 1)
    local limit = P[2 + 2 * i]
    if F[w + 3] + cost > limit then
      local t = slot_time(i, (F[w + 2] + F[w + 6] + cost - 1) % limit)
      local r = 1
      if t then r = math.max(1, t + P[3 + 2 * i] - at) end
      if r > retry then retry = r end
    end
  end
  local allowed = retry < 0

  if allowed and consume then
    local writes = nil    -- the rings' {0-based offset, bytes}, when a window flushes
    for i = 1, n do
      local w = 3 + 7 * (i - 1)
      local limit = P[2 + 2 * i]
      local v = at - base + 1
      local staged, s = F[w + 6], 3 + 7 * n + 8 * (i - 1)
      if staged + cost <= math.min(B, limit) then
        for k = staged + 1, staged + cost do F[s + k] = v end
        F[w + 6] = staged + cost
      else
        -- Flush: the staged slots and these into the ring from head, the newest `limit` of them.
        local bytes = rep(pack('<I4', v), cost)
        if staged > 0 then bytes = pack('<' .. rep('I4', staged), spread(F, s + 1, s + staged)) .. bytes end
        local total = staged + cost
        local drop = math.max(0, total - limit)
        if drop > 0 then bytes = sub(bytes, 4 * drop + 1) end
        local start = (F[w + 2] + drop) % limit
        local first = math.min(total - drop, limit - start)
        local ring = HEADER
        for k = 1, i - 1 do ring = ring + 4 * P[2 + 2 * k] end
        writes = writes or {}
        writes[#writes + 1] = {ring + 4 * start, sub(bytes, 1, 4 * first)}
        if total - drop > first then writes[#writes + 1] = {ring, sub(bytes, 4 * first + 1)} end
        F[w + 2] = (F[w + 2] + total) % limit
        F[w + 6] = 0
      end
      if F[w + 3] == 0 then F[w + 5] = v end
      F[w + 3] = F[w + 3] + cost
      F[w + 4] = v
    end
    -- The key must outlive every admission by the longest window, also after a window grew:
    -- refresh when less than that is left, to 2 x longest (about one TTL write per window).
    local refresh_ttl = state ~= nil or F[2] - now < longest
    if refresh_ttl then F[2] = now + 2 * longest end
    local header = pack(FMT[n], spread(F, 1, 3 + 15 * n))
    if state then
      writes = writes or {}
      writes[#writes + 1] = {0, header}
      table.sort(writes, function(x, y) return x[1] < y[1] end)
      local pieces, cursor = {}, 0
      for _, wr in ipairs(writes) do
        pieces[#pieces + 1] = sub(state, cursor + 1, wr[1])
        pieces[#pieces + 1] = wr[2]
        cursor = wr[1] + #wr[2]
      end
      pieces[#pieces + 1] = sub(state, cursor + 1)
      redis.call('SET', key, table.concat(pieces), 'PX', 2 * longest)
    else
      if writes then
        for k = 1, #writes do redis.call('SETRANGE', key, writes[k][1], writes[k][2]) end
      end
      redis.call('SETRANGE', key, '0', header)
      if refresh_ttl then redis.call('PEXPIRE', key, 2 * longest) end
    end
  elseif consume then
    -- A refusal charges nothing, but it must not let the state expire while a window still
    -- counts its admissions: after a window grew (a new shape, or a longer period with the same
    -- limit) the stored expiry follows the old, shorter windows. Keep the state for the longest
    -- window. The state was rebuilt for a new shape: keep the stored one as it is (a process
    -- still on the old, larger limits must keep seeing every admission it counted) and only make
    -- it last, never shortening what it has.
    -- A state taken over from the previous layout lives in that key until the first admission
    -- writes this one: keep that key (its expiry is at byte 8 too).
    if state then
      local stored = legacy_key or key
      local ttl = redis.call('PTTL', stored)
      if ttl >= 0 and ttl < 2 * longest then
        redis.call('SETRANGE', stored, 8, pack('<d', now + 2 * longest))
        redis.call('PEXPIRE', stored, 2 * longest)
      end
    elseif F[2] - now < longest then
      F[2] = now + 2 * longest
      redis.call('SETRANGE', key, 8, pack('<d', F[2]))
      redis.call('PEXPIRE', key, 2 * longest)
    end
  end

  out[o + 1], out[o + 2], o = allowed and 1 or 0, retry, o + 2
  for i = 1, n do
    local w = 3 + 7 * (i - 1)
    local reset = 0
    if F[w + 3] > 0 then reset = base + F[w + 4] - 1 + P[3 + 2 * i] - at end
    out[o + 1], out[o + 2], o = P[2 + 2 * i] - F[w + 3], reset, o + 2
  end
end
return out
