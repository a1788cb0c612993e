#!/usr/bin/env python3
"""Native extensions benchmark: the approximate number of distinct names among N users (W1),
with HyperLogLog (2^14 registers), done six ways on one server:

  native        RG.LUAEXECUTE "GB():native('hll_count', 'name'):run('user:*')"  (examples/hll)
  python        the same HyperLogLog as Python callbacks: map, accumulate, map
  lua           ... as Lua callbacks
  rhai          ... as Rhai callbacks
  eval-hll      Lua EVAL: SCAN + HGET name + the same HyperLogLog in Lua (one script)
  eval-pfadd    Lua EVAL: SCAN + HGET name + PFADD into a scratch key, then PFCOUNT (Redis's own
                HyperLogLog, in C)

The data set is W1 (bench/bench.py): N hashes user:<i> with name=user<i> and age=i % 80, so
there are exactly N distinct names; every method's estimate must be within 3% of N. Ratios are
against the fastest script version (python, lua, rhai) and against eval-hll, measured in the same
run. The server loads the module built with the example extensions
(target/release/libgears_extended.so).

Usage:
  .venv/bin/python bench/extensions.py [--keys N] [--runs R] [--port P] [--server-bin B]
"""

import argparse
import json
import os
import sys
import time

import redis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import Server, load_keys, log  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# The HyperLogLog every script version runs: a 32-bit hash, its top 14 bits pick one of 16384
# registers, a register keeps the most leading zeros (+1) seen in the other 18 bits; the
# estimate is HyperLogLog's with linear counting for small counts. Lua and Rhai have no string
# hash: FNV-1a with murmur3's finalizer; Python uses its own hash().

PYTHON = """
import math
M = 16384
def add(regs, name):
    if regs is None:
        regs = bytearray(M)
    h = hash(name) & 0xFFFFFFFF
    i = h >> 18
    r = 33 - (((h << 14) & 0xFFFFFFFF) | 0x2000).bit_length()
    if r > regs[i]:
        regs[i] = r
    return regs
def estimate(regs):
    z = sum(2.0 ** -v for v in regs)
    zeros = regs.count(0)
    e = 0.7213 / (1 + 1.079 / M) * M * M / z
    if e <= 2.5 * M and zeros:
        e = M * math.log(M / zeros)
    return int(round(e))
GB().map(lambda x: x['value']['name']).accumulate(add).map(estimate).run('user:*')
"""

LUA_HLL = """
local M = 16384
local function hash(s)
  local h = 2166136261
  for i = 1, #s do h = ((h ~ s:byte(i)) * 16777619) & 0xffffffff end
  h = h ~ (h >> 16); h = (h * 0x85ebca6b) & 0xffffffff
  h = h ~ (h >> 13); h = (h * 0xc2b2ae35) & 0xffffffff
  return h ~ (h >> 16)
end
local function add(regs, name)
  if regs == nil then regs = {} for i = 0, M - 1 do regs[i] = 0 end end
  local h = hash(name)
  local i = h >> 18
  local w = ((h << 14) & 0xffffffff) | 0x2000
  local r = 1
  while w & 0x80000000 == 0 do w = w << 1; r = r + 1 end
  if r > regs[i] then regs[i] = r end
  return regs
end
local function estimate(regs)
  local z, zeros = 0.0, 0
  for i = 0, M - 1 do
    local v = regs[i]
    z = z + 2.0 ^ -v
    if v == 0 then zeros = zeros + 1 end
  end
  local e = 0.7213 / (1 + 1.079 / M) * M * M / z
  if e <= 2.5 * M and zeros > 0 then e = M * math.log(M / zeros) end
  return math.floor(e + 0.5)
end
"""

LUA = LUA_HLL + """
GB():map(function(x) return x.value.name end):accumulate(add):map(estimate):run('user:*')
"""

# EVAL runs Lua 5.1: no integer operators, but Redis gives it LuaBitOp (`bit`, 32-bit signed
# results); products of 32-bit values are split so that doubles keep them exact.
LUA51_HLL = """
local band, bor, bxor, lshift, rshift, tobit = bit.band, bit.bor, bit.bxor, bit.lshift, bit.rshift, bit.tobit
local M = 16384
local function mul32(a, b)
  local lo, hi = band(b, 0xffff), rshift(b, 16)
  return tobit(tobit(a * lo) + lshift(band(a * hi, 0xffff), 16))
end
local function hash(s)
  local h = tobit(2166136261)
  for i = 1, #s do h = mul32(bxor(h, s:byte(i)), 16777619) end
  h = bxor(h, rshift(h, 16)); h = mul32(h, tobit(0x85ebca6b))
  h = bxor(h, rshift(h, 13)); h = mul32(h, tobit(0xc2b2ae35))
  return bxor(h, rshift(h, 16))
end
local function add(regs, name)
  if regs == nil then regs = {} for i = 0, M - 1 do regs[i] = 0 end end
  local h = hash(name)
  local i = rshift(h, 18)
  local w = bor(lshift(h, 14), 0x2000)
  local r = 1
  while band(w, tobit(0x80000000)) == 0 do w = lshift(w, 1); r = r + 1 end
  if r > regs[i] then regs[i] = r end
  return regs
end
local function estimate(regs)
  local z, zeros = 0.0, 0
  for i = 0, M - 1 do
    local v = regs[i]
    z = z + 2.0 ^ -v
    if v == 0 then zeros = zeros + 1 end
  end
  local e = 0.7213 / (1 + 1.079 / M) * M * M / z
  if e <= 2.5 * M and zeros > 0 then e = M * math.log(M / zeros) end
  return math.floor(e + 0.5)
end
"""

EVAL_HLL = LUA51_HLL + """
local regs = nil
local cursor = '0'
repeat
  local res = redis.call('SCAN', cursor, 'MATCH', 'user:*', 'COUNT', 1000)
  cursor = res[1]
  for _, key in ipairs(res[2]) do
    regs = add(regs, redis.call('HGET', key, 'name'))
  end
until cursor == '0'
return estimate(regs)
"""

EVAL_PFADD = """
local scratch = KEYS[1]
redis.call('DEL', scratch)
local cursor = '0'
repeat
  local res = redis.call('SCAN', cursor, 'MATCH', 'user:*', 'COUNT', 1000)
  cursor = res[1]
  for _, key in ipairs(res[2]) do
    redis.call('PFADD', scratch, redis.call('HGET', key, 'name'))
  end
until cursor == '0'
local n = redis.call('PFCOUNT', scratch)
redis.call('DEL', scratch)
return n
"""

RHAI = """
fn mul32(a, b) {
    (((a * (b & 0xffff)) & 0xffffffff) + (((a * (b >> 16)) & 0xffff) << 16)) & 0xffffffff
}
fn hash(s) {
    let h = 2166136261;
    for c in s.chars() { h = ((h ^ c.to_int()) * 16777619) & 0xffffffff; }
    h = h ^ (h >> 16); h = mul32(h, 0x85ebca6b);
    h = h ^ (h >> 13); h = mul32(h, 0xc2b2ae35);
    h ^ (h >> 16)
}
fn add(regs, name) {
    if regs == () { regs = blob(16384, 0); }
    let h = hash(name);
    let i = h >> 18;
    let w = ((h << 14) & 0xffffffff) | 0x2000;
    let r = 1;
    while (w & 0x80000000) == 0 { w = w << 1; r += 1; }
    if r > regs[i] { regs[i] = r; }
    regs
}
fn estimate(regs) {
    let m = 16384.0;
    let z = 0.0;
    let zeros = 0;
    for i in 0..16384 {
        let v = regs[i];
        z += 1.0 / (1 << v).to_float();
        if v == 0 { zeros += 1; }
    }
    let e = 0.7213 / (1.0 + 1.079 / m) * m * m / z;
    if e <= 2.5 * m && zeros > 0 { e = m * (m / zeros.to_float()).ln(); }
    (e + 0.5).floor().to_int()
}
GB().map(|x| x.value.name).accumulate(|a, x| add(a, x)).map(|r| estimate(r)).run("user:*")
"""

NATIVE = "GB():native('hll_count', 'name'):run('user:*')"

METHODS = [
    ("native", "RG.LUAEXECUTE GB():native('hll_count', 'name')"),
    ("python", "RG.PYEXECUTE map + accumulate(HLL) + map"),
    ("lua", "RG.LUAEXECUTE map + accumulate(HLL) + map"),
    ("rhai", "RG.RHAIEXECUTE map + accumulate(HLL) + map"),
    ("eval-hll", "EVAL: SCAN + HGET + HLL in Lua"),
    ("eval-pfadd", "EVAL: SCAN + HGET + PFADD/PFCOUNT"),
]
SCRIPTS = ("python", "lua", "rhai")


def gears_estimate(reply):
    results, errors = reply
    if errors or len(results) != 1:
        raise RuntimeError("unexpected reply: %r" % (reply,))
    return int(results[0])


def run_method(r, name):
    if name == "native":
        return gears_estimate(r.execute_command("RG.LUAEXECUTE", NATIVE))
    if name == "python":
        return gears_estimate(r.execute_command("RG.PYEXECUTE", PYTHON))
    if name == "lua":
        return gears_estimate(r.execute_command("RG.LUAEXECUTE", LUA))
    if name == "rhai":
        return gears_estimate(r.execute_command("RG.RHAIEXECUTE", RHAI))
    if name == "eval-hll":
        return int(r.eval(EVAL_HLL, 0))
    if name == "eval-pfadd":
        return int(r.eval(EVAL_PFADD, 1, "bench:hll:scratch"))
    raise ValueError(name)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--keys", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--port", type=int, default=7302)
    p.add_argument("--server-bin", default="redis-server")
    p.add_argument("--module", default=os.path.join(ROOT, "target", "release",
                                                     "libgears_extended.so"))
    p.add_argument("--venv", default=os.path.join(ROOT, ".venv"))
    p.add_argument("--load-chunk", type=int, default=20_000)
    p.add_argument("--methods", default=",".join(m for m, _ in METHODS),
                   help="comma-separated subset of: " + ", ".join(m for m, _ in METHODS))
    p.add_argument("--json", default=os.path.join(HERE, "results-extensions-latest.json"))
    args = p.parse_args()
    chosen = [m for m in args.methods.split(",") if m]
    unknown = set(chosen) - {m for m, _ in METHODS}
    if unknown:
        raise SystemExit("unknown methods: %s" % ", ".join(sorted(unknown)))

    server = Server(args.server_bin, args.port, args.module, args.venv, None)
    results = {}
    failures = []
    try:
        server.start()
        # No time limit: the slowest script version runs for a while on 1M keys.
        r = redis.Redis(host="127.0.0.1", port=args.port, decode_responses=True,
                        socket_timeout=None)
        r.execute_command("RG.CONFIGSET", "ExecutionMaxRunTime", "0")
        r.config_set("busy-reply-threshold", "600000")
        log("loading %d keys ..." % args.keys)
        load_seconds = load_keys(r, args.keys, args.load_chunk)
        log("loaded in %.2fs" % load_seconds)
        for name, what in METHODS:
            if name not in chosen:
                continue
            times, estimates = [], []
            for k in range(args.runs):
                t0 = time.perf_counter()
                try:
                    estimate = run_method(r, name)
                except redis.RedisError as e:
                    failures.append("%s: %s" % (name, e))
                    break
                seconds = time.perf_counter() - t0
                times.append(seconds)
                estimates.append(estimate)
                log("%s run %d: %.3fs estimate=%d" % (name, k + 1, seconds, estimate))
            ok = bool(times) and all(abs(e - args.keys) <= 0.03 * args.keys for e in estimates)
            if times and not ok:
                failures.append("%s: estimates %s for %d names" % (name, estimates, args.keys))
            results[name] = {"what": what, "times": times, "estimates": estimates, "ok": ok}
    finally:
        server.stop()

    best = {n: min(v["times"]) for n, v in results.items() if v["times"]}
    scripts = [n for n in SCRIPTS if n in best]
    fastest = min(scripts, key=lambda n: best[n]) if scripts else None
    print()
    print("%-11s %-44s %8s %9s %12s %10s  %s" % (
        "method", "what", "best s", "median s", "x fastest", "x eval-hll", "ok"))
    print("-" * 106)
    for name, what in METHODS:
        if name not in results:
            continue
        v = results[name]
        if not v["times"]:
            print("%-11s %-44s %8s" % (name, what, "failed"))
            continue
        times = sorted(v["times"])
        median = times[len(times) // 2]
        vs_script = "%.2f" % (best[name] / best[fastest]) if fastest else "-"
        vs_eval = "%.2f" % (best[name] / best["eval-hll"]) if "eval-hll" in best else "-"
        print("%-11s %-44s %8.3f %9.3f %12s %10s  %s" % (
            name, what, best[name], median, vs_script, vs_eval, "yes" if v["ok"] else "NO"))
    print("(x fastest = best time / best time of the fastest script version (%s); "
          "x eval-hll = best time / EVAL HLL's)" % fastest)
    if "native" in best and fastest:
        speedup = best[fastest] / best["native"]
        print("native is %.2fx faster than the fastest script version (%s)%s" % (
            speedup, fastest, "" if speedup >= 2 else "  -- BELOW THE 2x TARGET"))
    with open(args.json, "w") as f:
        json.dump({"keys": args.keys, "runs": args.runs, "results": results}, f, indent=1)
    if failures:
        print("\nBENCHMARK FAILED:\n  " + "\n  ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
