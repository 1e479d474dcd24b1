-- Run an Argo CD health script the way Argo CD does, under Lua 5.1.
--
-- Usage: lua5.1 harness.lua <health.lua> <object.lua>
--   object.lua is `return { ... }`: the resource as a Lua table literal (the Python test
--   generates it from a recorded JSON object).
-- Argo CD sets the resource as the global `obj`, runs the script and takes its return value.
-- Its interpreter (gopher-lua) loads only the base, table, package and a "safe" os library
-- unless useOpenLibs is set, so the script runs here in an environment with just those: a
-- call into string.*, io.* or similar fails the test instead of failing in Argo CD.
-- Prints two lines: the status, then the message.

local script = assert(loadfile(arg[1]))
local object = assert(loadfile(arg[2]))()

local env = {
  obj = object,
  assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs, pcall = pcall,
  select = select, tonumber = tonumber, tostring = tostring, type = type, unpack = unpack,
  rawequal = rawequal, rawget = rawget, rawset = rawset, setmetatable = setmetatable,
  getmetatable = getmetatable,
  table = table,
  os = { time = os.time, date = os.date, clock = os.clock, difftime = os.difftime },
}
setfenv(script, env)

local ok, hs = pcall(script)
if not ok then
  io.stderr:write("health script failed: ", tostring(hs), "\n")
  os.exit(2)
end
if type(hs) ~= "table" or type(hs.status) ~= "string" then
  io.stderr:write("health script returned no {status = ...} table\n")
  os.exit(3)
end
io.write(hs.status, "\n", tostring(hs.message or ""), "\n")
