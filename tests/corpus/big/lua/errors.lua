-- Input for lua.wasm (tests/corpus/big/run lua): Lua 5.4 built as C++, so every error() below
-- is a C++ throw and every pcall/xpcall/coroutine boundary a catch. Deterministic: no time, no
-- randomness, no pairs() over string keys (their order depends on a per-run hash seed).

local function check(cond, msg)
  if not cond then error(msg, 2) end
end

-- 1. A tokenizer and recursive-descent evaluator that reports bad input with error tables.
local Evaluator = {}
Evaluator.__index = Evaluator

local function tokenize(src)
  local toks, i = {}, 1
  while i <= #src do
    local c = src:sub(i, i)
    if c:match("%s") then
      i = i + 1
    elseif c:match("%d") then
      local j = i
      while j <= #src and src:sub(j, j):match("[%d%.]") do j = j + 1 end
      local text = src:sub(i, j - 1)
      local n = tonumber(text)
      if not n then error({ pos = i, msg = "bad number " .. text }) end
      toks[#toks + 1] = { kind = "num", value = n }
      i = j
    elseif c:match("[%+%-%*/%%%^%(%)]") then
      toks[#toks + 1] = { kind = c }
      i = i + 1
    else
      error({ pos = i, msg = "unexpected character '" .. c .. "'" })
    end
  end
  toks[#toks + 1] = { kind = "eof" }
  return toks
end

function Evaluator.new(src)
  return setmetatable({ toks = tokenize(src), pos = 1 }, Evaluator)
end

function Evaluator:peek() return self.toks[self.pos].kind end

function Evaluator:take(kind)
  local t = self.toks[self.pos]
  if kind and t.kind ~= kind then
    error({ pos = self.pos, msg = "expected " .. kind .. ", got " .. t.kind })
  end
  self.pos = self.pos + 1
  return t
end

function Evaluator:primary()
  local k = self:peek()
  if k == "num" then return self:take().value end
  if k == "-" then self:take(); return -self:primary() end
  if k == "(" then
    self:take("(")
    local v = self:expr()
    self:take(")")
    return v
  end
  error({ pos = self.pos, msg = "unexpected " .. k })
end

function Evaluator:power()
  local v = self:primary()
  if self:peek() == "^" then self:take(); return v ^ self:power() end
  return v
end

function Evaluator:term()
  local v = self:power()
  while true do
    local k = self:peek()
    if k == "*" then self:take(); v = v * self:power()
    elseif k == "/" or k == "%" then
      self:take()
      local d = self:power()
      if d == 0 then error({ pos = self.pos, msg = "division by zero" }) end
      v = (k == "/") and v / d or v % d
    else return v end
  end
end

function Evaluator:expr()
  local v = self:term()
  while true do
    local k = self:peek()
    if k == "+" then self:take(); v = v + self:term()
    elseif k == "-" then self:take(); v = v - self:term()
    else return v end
  end
end

local function evaluate(src)
  local ok, res = pcall(function()
    local e = Evaluator.new(src)
    local v = e:expr()
    e:take("eof")
    return v
  end)
  if ok then return string.format("%s = %.6g", src, res) end
  if type(res) == "table" then return string.format("%s : error at %d: %s", src, res.pos, res.msg) end
  return src .. " : " .. tostring(res)
end

local inputs = {
  "1 + 2 * 3", "(1 + 2) * 3", "2 ^ 3 ^ 2", "10 / 4", "10 % 4", "-(3 - 5) * 2",
  "1 +", "(1 + 2", "1 / 0", "4 $ 4", "1.2.3 + 1", ")", "2 * (3 + (4 - 1)) / 3",
}
for _, s in ipairs(inputs) do print(evaluate(s)) end

-- 2. Many throws: a checked parse of every number from 1 to 20000 as text, a fifth of them bad.
local good, bad, sum = 0, 0, 0
for i = 1, 20000 do
  local text = (i % 5 == 0) and (tostring(i) .. "x") or tostring(i)
  local ok, v = pcall(function()
    local n = tonumber(text)
    check(n, "not a number: " .. text)
    return n
  end)
  if ok then good = good + 1; sum = sum + v else bad = bad + 1 end
end
print("parsed", good, "rejected", bad, "sum", sum)

-- 3. Error objects with metatables, rethrown through several levels.
local Err = setmetatable({}, { __call = function(cls, code, msg)
  return setmetatable({ code = code, msg = msg }, cls)
end })
Err.__index = Err
Err.__tostring = function(e) return "Err(" .. e.code .. "): " .. e.msg end

local function level3(n) if n % 3 == 0 then error(Err(n, "multiple of three")) end return n end
local function level2(n)
  local ok, e = pcall(level3, n)
  if not ok then
    if e.code % 2 == 0 then error(Err(e.code * 10, "even, rethrown: " .. e.msg)) end
    return -n
  end
  return e
end
local function level1(n) return level2(n) end
local caught = {}
for n = 1, 12 do
  local ok, r = pcall(level1, n)
  caught[#caught + 1] = ok and tostring(r) or tostring(r)
end
print(table.concat(caught, " | "))

-- 4. xpcall with a message handler, and a traceback.
local function deep(n) if n == 0 then local t = nil; return t.field end return deep(n - 1) + 1 end
local ok, tb = xpcall(deep, function(m) return "handled: " .. m end, 5)
print(ok, tb)
print((select(2, xpcall(deep, debug.traceback, 2))):gsub("\n%s*", " / "))

-- 5. Errors crossing coroutine boundaries.
local co = coroutine.create(function(a)
  local b = coroutine.yield(a * 2)
  if b < 0 then error("negative resume " .. b) end
  return a + b
end)
print(coroutine.resume(co, 21))
print(coroutine.resume(co, -1))
print(coroutine.status(co), coroutine.resume(co, 1))
local wrapped = coroutine.wrap(function() error({ code = 7 }) end)
local okw, ew = pcall(wrapped)
print(okw, type(ew), ew.code)

-- 6. Runtime errors raised by the VM itself, and error levels.
local probes = {
  function() return 1 + {} end,
  function() return #nil end,
  function() return ("x"):rep(-1):bad() end,
  function() return string.format("%d", "z") end,
  function() return math.floor("q") end,
  function() local t = setmetatable({}, { __index = function(_, k) error("no field " .. k, 2) end }); return t.missing end,
  function() error() end,
  function() error(nil) end,
  function() error(setmetatable({}, { __tostring = function() return "custom object" end })) end,
}
for i, f in ipairs(probes) do
  local okp, e = pcall(f)
  print(i, okp, type(e) == "table" and tostring(e) or e)
end

-- 7. Stack overflow in Lua recursion is a catchable error too.
local function runaway(n) return runaway(n + 1) + 1 end
local oks, es = pcall(runaway, 1)
print("stack overflow caught:", not oks, (tostring(es):match("stack overflow") ~= nil))

-- 8. close variables run while an error unwinds.
local closed = {}
local function with_close()
  local a <close> = setmetatable({}, { __close = function() closed[#closed + 1] = "a" end })
  local b <close> = setmetatable({}, { __close = function(_, err) closed[#closed + 1] = "b:" .. tostring(err) end })
  error("unwinding", 0)
end
print(pcall(with_close))
print(table.concat(closed, ","))
