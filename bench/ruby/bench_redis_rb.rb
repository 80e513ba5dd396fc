#!/usr/bin/env ruby
# frozen_string_literal: true

# vkclient (Ruby) against redis-rb 4.8 (Debian's ruby-redis) and raw hiredis
# in C, on one server and one connection each, client and server pinned to
# one core (DESIGN §7).
#
#   ruby bench/ruby/bench_redis_rb.rb [ops per case] [runs]
#   VK_BUILD_DIR=<build> VK_BENCH_CPU=1 ruby bench/ruby/bench_redis_rb.rb 20000 5
#
# Cases: request/response SET and GET, pipelines of 100 SETs, and lock
# acquire+release pairs (vkclient try_lock + unlock against redis-rb's
# SET NX PX + EVALSHA compare-and-delete pair). Each run measures every case
# for both clients back to back (alternating which goes first), plus one
# run of the C benchmark bench_core (<build>/bench/c) for the raw hiredis
# figures; the report gives median ops/s and the median of per-run ratios.
#
# Without VK_TEST_ADDR in the environment the script starts a server on a
# free port through tests/harness/vkharness.py, pinned with taskset to the
# same core as itself, and stops it at the end.
require "rbconfig"

ROOT = File.expand_path("../..", __dir__)
BUILD_DIR = ENV.fetch("VK_BUILD_DIR", File.join(ROOT, "build", "gcc"))
CPU = ENV.fetch("VK_BENCH_CPU", "0")

unless ENV["VK_TEST_ADDR"]
  # Re-run this script under the harness, everything pinned to one core.
  exec("taskset", "-c", CPU, "/usr/bin/python3", File.join(ROOT, "tests", "harness", "vkharness.py"),
       "run", "--plain-only", "--server", ENV.fetch("VK_TEST_SERVER", "valkey-server"), "--",
       RbConfig.ruby, __FILE__, *ARGV)
end

$LOAD_PATH.unshift(File.join(BUILD_DIR, "bindings", "ruby"))
require "vkclient"
require "redis"
require "securerandom"

OPS = Integer(ARGV[0] || 20_000)
RUNS = Integer(ARGV[1] || 5)
DEPTH = 100
HOST, PORT = ENV.fetch("VK_TEST_ADDR").split(":")
BENCH_CORE = ENV.fetch("BENCH_CORE", File.join(BUILD_DIR, "bench", "c", "bench_core"))
# vkclient / peer targets of the binding.
TARGETS = { set: 1.2, get: 1.2, pipeline: 2.0, lock: 1.5 }.freeze
HIREDIS_TARGET = 0.85
LABELS = { set: "SET", get: "GET", pipeline: "pipeline x100 (cmd/s)", lock: "lock pair" }.freeze
RELEASE_SCRIPT = <<~LUA
  if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end
LUA

vk = VKClient::Client.new(standalone: "#{HOST}:#{PORT}", options: { pool_size: 1 })
locks = VKClient::LockManager.new(vk)
peer = Redis.new(host: HOST, port: Integer(PORT))
value = "value-0123456789"
vk.call("SET", "bench:key", value)
release_sha = peer.script(:load, RELEASE_SCRIPT)

vk_cases = {
  set: ->(n) { n.times { vk.call("SET", "bench:key", value) } },
  get: ->(n) { n.times { vk.call("GET", "bench:key") } },
  pipeline: lambda do |n|
    (n / DEPTH).times { vk.pipelined { |p| DEPTH.times { p.call("SET", "bench:key", value) } } }
  end,
  lock: lambda do |n|
    n.times { locks.try_lock("bench:rb:vk:lock").unlock }
  end
}
peer_cases = {
  set: ->(n) { n.times { peer.set("bench:key", value) } },
  get: ->(n) { n.times { peer.get("bench:key") } },
  pipeline: lambda do |n|
    (n / DEPTH).times { peer.pipelined { |p| DEPTH.times { p.set("bench:key", value) } } }
  end,
  lock: lambda do |n|
    n.times do
      token = SecureRandom.hex(16)
      raise "lock not taken" unless peer.set("bench:rb:peer:lock", token, nx: true, px: 10_000)
      raise "lock not released" unless peer.evalsha(release_sha, keys: ["bench:rb:peer:lock"], argv: [token]) == 1
    end
  end
}

def measure(fn, ops)
  started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  fn.call(ops)
  ops / (Process.clock_gettime(Process::CLOCK_MONOTONIC) - started)
end

# One run of bench_core: by case, [the C core's rate, raw hiredis's rate].
def core_rates
  return nil unless File.executable?(BENCH_CORE)

  rates = {}
  IO.popen([BENCH_CORE, HOST, PORT, OPS.to_s, "1"]) do |io|
    io.each_line do |line|
      next unless (m = line.match(/\A(.+?)\s+(\d+)\s+(\d+)\s+[\d.]+\s*\z/))

      rates[m[1]] = [Integer(m[2]), Integer(m[3])]
    end
  end
  { set: rates["SET"], get: rates["GET"], pipeline: rates["SET pipeline x100"], lock: rates["lock pair"] }
end

def median(values)
  sorted = values.compact.sort
  return nil if sorted.empty?

  sorted[(sorted.size - 1) / 2]
end

# Warm-up: connections, script caches, method caches.
vk_cases.each_key do |name|
  measure(vk_cases[name], [DEPTH, OPS / 10].max)
  measure(peer_cases[name], [DEPTH, OPS / 10].max)
end

results = vk_cases.keys.to_h { |name| [name, { vk: [], peer: [], raw: [], core: [], vs_peer: [], vs_raw: [] }] }
RUNS.times do |run|
  c_rates = core_rates
  vk_cases.each_key do |name|
    r = results[name]
    if run.even?
      vk_rate = measure(vk_cases[name], OPS)
      peer_rate = measure(peer_cases[name], OPS)
    else
      peer_rate = measure(peer_cases[name], OPS)
      vk_rate = measure(vk_cases[name], OPS)
    end
    r[:vk] << vk_rate
    r[:peer] << peer_rate
    r[:vs_peer] << vk_rate / peer_rate
    next unless c_rates && c_rates[name]

    r[:core] << c_rates[name][0]
    r[:raw] << c_rates[name][1]
    r[:vs_raw] << vk_rate / c_rates[name][1]
  end
end

puts format("vkclient %s (Ruby %s) vs redis-rb %s and raw hiredis %s: %d ops per case, median of %d runs",
            VKClient::VERSION, RUBY_VERSION, Redis::VERSION, VKClient.hiredis_version, OPS, RUNS)
puts format("server %s:%s, client and server pinned to cpu %s", HOST, PORT, CPU)
puts format("%-22s %12s %12s %12s %12s %8s %10s", "case", "vkclient/s", "redis-rb/s", "hiredis/s", "C core/s",
            "vs rb", "vs hiredis")
failed = []
vk_cases.each_key do |name|
  r = results[name]
  vs_peer = median(r[:vs_peer])
  vs_raw = median(r[:vs_raw])
  raw_text = r[:raw].empty? ? "-" : format("%.0f", median(r[:raw]))
  core_text = r[:core].empty? ? "-" : format("%.0f", median(r[:core]))
  vs_raw_text = vs_raw ? format("%.2f", vs_raw) : "-"
  puts format("%-22s %12.0f %12.0f %12s %12s %8.2f %10s", LABELS[name], median(r[:vk]), median(r[:peer]),
              raw_text, core_text, vs_peer, vs_raw_text)
  failed << "#{LABELS[name]} vs redis-rb #{format('%.2f', vs_peer)} < #{TARGETS[name]}" if vs_peer < TARGETS[name]
  if %i[set get].include?(name) && vs_raw && vs_raw < HIREDIS_TARGET
    failed << "#{LABELS[name]} vs hiredis #{format('%.2f', vs_raw)} < #{HIREDIS_TARGET}"
  end
end
puts "(lock pair: vkclient try_lock+unlock vs redis-rb SET NX PX + EVALSHA; hiredis: the same pair in C)"
puts "(C core: the core from C in bench_core, without a context; Ruby passes one to every call so that"
puts " it can be interrupted)"
puts "(targets: GET/SET >= #{HIREDIS_TARGET}x hiredis and >= 1.2x redis-rb, pipelines >= 2x, lock pairs >= 1.5x)"
puts failed.empty? ? "all targets met in this run" : "below target: #{failed.join('; ')}"
vk.close
peer.close
