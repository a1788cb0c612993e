-- Differential tests of the Rust string functions against Lua's C ones (see tests.rs).
-- Called with the C functions (C) and the Rust ones (R); returns the number of comparisons and
-- the list of mismatches.
local C, R = ...
local checks, mismatches = 0, {}

local function pack(...)
  return { n = select('#', ...), ... }
end

-- Values as comparable text: strings quoted (binary safe), numbers with their subtype,
-- anything else by identity.
local function show(t)
  local out = {}
  for i = 1, t.n do
    local v = t[i]
    local kind = math.type(v) or type(v)
    out[i] = kind .. ' ' .. (kind == 'string' and string.format('%q', v) or tostring(v))
  end
  return '(' .. table.concat(out, ', ') .. ')'
end

-- Calls f from a Lua function (not a tail call), so errors carry this line's position.
local function call(f, ...)
  local r = pack(f(...))
  return table.unpack(r, 1, r.n)
end

local function gmatch_all(gmatch, ...)
  local it = gmatch(...)
  local out = {}
  for _ = 1, 200 do
    local r = pack(it())
    if r[1] == nil then break end
    out[#out + 1] = show(r)
  end
  return table.concat(out, ' ')
end

local function compare(name, ...)
  checks = checks + 1
  local runner = name == 'gmatch' and gmatch_all or call
  local c = show(pack(pcall(runner, C[name], ...)))
  local r = show(pack(pcall(runner, R[name], ...)))
  if c ~= r and #mismatches < 50 then
    mismatches[#mismatches + 1] = name .. show(pack(...)) .. '\n  C:    ' .. c .. '\n  Rust: ' .. r
  end
end

local subjects = {
  '', 'a', 'aaa', 'aaab', 'hello world', '  hello  ', 'abcabc', 'a.b.c', '(foo(bar))baz',
  '[x]', 'THE (quick) fox', 'key = value', 'x=1, y=22, z=333', '\0a\0b', 'a\0', 'ab\0cd',
  '\255\128abc\200', 'éè', '1234567890', '0x1F 077 -12.5e3', 'a\nb\r\nc\td\ve\ff', '%a%%',
  '^$^$', '--[[x]]', 'f(a,b)', 'aXbXc', 'AbCdEf', '___', 'a+b-c*d?e', ']]]', '[[[',
  'one two  three   four', 'THE END.', 'x', 'xyzzy', '\1\2\127 ~',
}

local patterns = {
  '', 'a', 'b', '^a', 'a$', '^$', '^', '$', 'a*', 'a+', 'a-', 'a?', '.', '.*', '.-', '.+',
  '^.-$', 'a*b', 'a-b', 'a+b', 'a?b', '(a)', '(a*)', '()', '()a()', '(a)(b)', '((a)(b))',
  '(a*(.)%w(%s*))', '%a+', '%A+', '%d+', '%D', '%l+', '%u+', '%s+', '%S+', '%w+', '%W+', '%x+',
  '%p+', '%c', '%C+', '%g+', '%G', '%z', '%Z+', '%.', '%%', '%]', '%Q', '%q+', '[abc]',
  '[^abc]+', '[a-c]+', '[%a_][%w_]*', '[%]]', '[]]', '[^]]', '[a-]', '[-a]', '[%-]', '[a%-z]',
  '[z-a]', '[^%s]+', '[%d.]+', '[\0]', '[^\0]+', '\0', '[%z]', '[\0-\31]+', '[\128-\255]+',
  '%bxy', '%b()', '%b[]', '%b%%', '%b))', '%f[%w]%w+', '%f[%W]', '%f[%a]', '%f[%z]', '%f[^%z]',
  '%f[\0]', '%f[%s]', '%f[]]', '%f[^]]', '(%w+)=(%w+)', '(%w+)%s*=%s*(%w+)', '(a)%1', '(a*)%1',
  '(.)%1', '((.)%2)', '()%1', '(%d+)', '^(%s*)(.-)(%s*)$', '%s*$', '^%s*', '(h)(e)(l)(l)(o)',
  '$a', 'a$b', '^^a', 'a^', 'a**', '*a', '+', '-', '?', 'a-+', '[%a-z]', '[a-%d]', '[.-]', 'x*$',
  '(x*)$', '.-$', '(.-)%s', '%s(.-)%s', '(%a+)%s*(%b())', '[%w%p]+', '%u%l*', '[^%a%d]',
  -- malformed patterns
  '%', 'a%', '[a', '[a%', '[^', '[', '[]', '[^]', '[%', '(', 'a(', ')', 'a)', '%1', '(%1)', '%0',
  '(a)%2', '%b', '%ba', '%f', '%fa', '%f[a', '(()', '((a)', '(a', 'a)(', '%f[%',
  string.rep('(a)', 33), string.rep('()', 32), string.rep('.?', 250), string.rep('a?', 199),
}

local E = {} -- an error object
local T = setmetatable({ a = 'A', b = 1, c = false, d = {}, [1] = 'one', ['1'] = 1.5 }, nil)
local I = setmetatable({}, { __index = function(_, k) return '<' .. tostring(k) .. '>' end })
local N = setmetatable({}, { __index = T })
local replacements = {
  'x', '', '%0', '%1', '%2', '<%1|%2>', '%%', '%', 'a%', '%x', '%9', '%0%0', 'a\0b', 7, 2.5,
  T, I, N, {},
  function(...) return select('#', ...) .. ':' .. table.concat({ ... }, ',') end,
  function() return nil end,
  function() return false end,
  function() return 42 end,
  function() return 2 ^ 53 end,
  function() return -0.0 end,
  function() return 1e100 end,
  function() return {} end,
  function() return true end,
  function(c) return tostring(c):upper() end,
  function() error('boom') end,
  function() error('boom', 0) end,
  function() error('boom', 2) end,
  function() error(E) end,
  function() error() end,
  function(c) return C.gsub(tostring(c), '.', '%0%0') end,
  function(c) return R.gsub(tostring(c), '%', 'x') end,
}

local inits = { 1, 2, 0, -1, -3, -100, 3, 100, '2', 2.0, math.mininteger, math.maxinteger }

for _, s in ipairs(subjects) do
  for _, p in ipairs(patterns) do
    compare('find', s, p)
    compare('match', s, p)
    compare('gmatch', s, p)
    compare('gsub', s, p, '[%0]')
    compare('find', s, p, 2, true)
    compare('find', s, p, #s + 1)
    compare('match', s, p, -2)
    compare('gsub', s, p, '<%1>', 2)
  end
end

-- Inits, replacements and counts over a smaller set.
local few_subjects = { '', 'abc', 'hello world', 'a\0b\0', '(x)(y)' }
local few_patterns = { '', '.', '%w+', '(%w)(%w?)', '()', '^.', '(%()', '%b()', '^(.)', 'z*', '%' }
for _, s in ipairs(few_subjects) do
  for _, p in ipairs(few_patterns) do
    for _, init in ipairs(inits) do
      compare('find', s, p, init)
      compare('find', s, p, init, true)
      compare('match', s, p, init)
      compare('gmatch', s, p, init)
    end
    for _, r in ipairs(replacements) do
      compare('gsub', s, p, r)
      compare('gsub', s, p, r, 1)
    end
    for _, n in ipairs({ 0, -1, 1, 2, 1.0, '2', math.maxinteger, math.mininteger }) do
      compare('gsub', s, p, '#', n)
    end
  end
end

-- The limits: recursion depth (MAXCCALLS) and the number of captures.
for k = 196, 203 do
  compare('find', string.rep('a', k + 2), string.rep('.?', k))
  compare('match', string.rep('a', k + 2), string.rep('a-', k) .. '$')
  compare('gsub', string.rep('ab', k), string.rep('%w?', k), '')
end
for k = 30, 34 do
  compare('match', 'abc', string.rep('()', k))
  compare('find', 'abc', string.rep('(', k) .. string.rep(')', k))
end

-- Argument checks and coercions.
local named = setmetatable({}, { __name = 'MyType' })
local thread = coroutine.create(tostring)
local bad = pack(nil, true, {}, named, thread, tostring, 2.5, '1.5', 'x', 2 ^ 63, '0x10', ' 3 ')
for _, name in ipairs({ 'find', 'match', 'gmatch', 'gsub' }) do
  compare(name)
  compare(name, 'a')
  for i = 1, bad.n do
    local v = bad[i]
    compare(name, v, 'a', '')
    compare(name, 'abc', v, '')
    compare(name, 'abc', 'b', v)
    compare(name, 'abc', 'b', 'x', v)
  end
  compare(name, 12345, 3)
  compare(name, 1.5, '%.')
  compare(name, -0.0, '-')
  compare(name, 2 ^ 63, 'e')
  compare(name, math.mininteger, '%d+')
end
compare('gsub', 'abc', 'b')
compare('gsub', 'abc', 'b', nil)
compare('gsub', 'abc', 'b', 12)
compare('gsub', 'a1b', '%d', 1.25)

-- Method calls and `self`: the argument numbers skip `self`.
local function methods(lib)
  local obj = setmetatable({}, { __index = lib })
  local results = {}
  for _, name in ipairs({ 'find', 'gsub' }) do
    results[#results + 1] = show(pack(pcall(function() return obj[name](obj, 'x') end)))
  end
  results[#results + 1] = show(pack(pcall(function() return obj:find('x') end)))
  results[#results + 1] = show(pack(pcall(function() return obj:gsub('x', 1) end)))
  results[#results + 1] = show(pack(pcall(function() return obj.gsub('x', 1) end)))
  return table.concat(results, ' ')
end
checks = checks + 1
if methods(C) ~= methods(R) then
  mismatches[#mismatches + 1] = 'methods: ' .. methods(C) .. '\n  ' .. methods(R)
end

-- Yielding from a replacement function.
local yielded = {}
for name, lib in pairs({ C = C, R = R }) do
  local co = coroutine.create(function()
    return lib.gsub('abc', '%w', function(c) coroutine.yield(c) end)
  end)
  yielded[name] = show(pack(coroutine.resume(co)))
end
checks = checks + 1
if yielded.C ~= yielded.R then
  mismatches[#mismatches + 1] = 'yield in gsub: ' .. yielded.C .. ' / ' .. yielded.R
end

-- Random patterns over random subjects.
math.randomseed(20240531)
local atoms = {
  'a', 'b', '.', '%a', '%d', '%s', '%w', '%A', '%%', '%.', '[ab]', '[^a]', '[a-c]', '[%d%s]',
  '%b()', '%f[%w]', '%f[%W]', '%1', '%2', '(', ')', '()', '^', '$', '[', ']', '%', '-', '\0',
  '[%]]', '%z', '1',
}
local quantifiers = { '', '', '', '*', '+', '-', '?' }
local alphabet = { 'a', 'b', 'c', '(', ')', ' ', '1', '2', '.', '%', '\0', '\255', 'A', '-', ']' }
local function random_pattern()
  local parts = {}
  for i = 1, math.random(0, 6) do
    parts[i] = atoms[math.random(#atoms)] .. quantifiers[math.random(#quantifiers)]
  end
  return table.concat(parts)
end
local function random_subject()
  local parts = {}
  for i = 1, math.random(0, 10) do
    parts[i] = alphabet[math.random(#alphabet)]
  end
  return table.concat(parts)
end
local fuzz_replacements = { '%0', '%1', '<%2>', '%%', 'x', '%', T, replacements[20] }
for _ = 1, 5000 do
  local s, p = random_subject(), random_pattern()
  local init = math.random(-12, 12)
  compare('find', s, p, init)
  compare('match', s, p, init)
  compare('gmatch', s, p, init)
  compare('gsub', s, p, fuzz_replacements[math.random(#fuzz_replacements)], math.random(-1, 4))
end

return checks, mismatches
