# frozen_string_literal: true

# Scripts through the Ruby binding (register_script, and redis-rb's eval,
# evalsha and script), on a standalone server and on the Cluster of
# `vkharness.py run --topologies`: the first run after SCRIPT FLUSH loads
# the script (EVALSHA answered NOSCRIPT, then EVAL), later runs are EVALSHA
# alone (INFO commandstats), error replies raise ResponseError, keys and
# args are binary safe, a flush between runs is recovered from, keys route
# the run to their master and keys of two slots raise CROSSSLOT.
require_relative "support"
require "digest"

module VKScriptSupport
  SET_GET = "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('GET', KEYS[1])"
  FAILS = "return redis.error_reply('MYERR the script says no')"
  ECHO = "return {KEYS[1], ARGV[1], #ARGV[1]}"

  module_function

  def node(address)
    VKClient::Client.open(standalone: address) { |c| yield c }
  end

  # cmdstat_<command> calls on the node at address (0 when never called).
  def calls(address, command)
    info = node(address) { |c| c.call("INFO", "commandstats") }
    line = info.lines.find { |l| l.start_with?("cmdstat_#{command}:") }
    line ? line[/calls=(\d+)/, 1].to_i : 0
  end

  def exists(address, sha)
    node(address) { |c| c.script(:exists, sha) }
  end

  def flush(address)
    node(address) { |c| c.script(:flush) }
  end
end

class TestScript < Minitest::Test
  include VKScriptSupport

  def setup
    @client = VKTest.client
  end

  def teardown
    @client&.close
  end

  def test_script_object
    script = @client.register_script("return 1")
    assert_equal "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", script.sha
    assert_equal Digest::SHA1.hexdigest("return 1"), script.sha
    assert_equal "return 1", script.source
    assert_same @client, script.client
    assert_equal "#<VKClient::Script sha=#{script.sha}>", script.inspect
    assert_raises(TypeError) { @client.register_script(nil) }
    assert_equal 1, script.call
  end

  def test_first_run_loads_then_evalsha_only
    addr = VKTest.addr
    key = VKTest.key("script")
    flush(addr)
    script = @client.register_script(SET_GET)
    refute exists(addr, script.sha)
    evals = calls(addr, "eval")
    assert_equal "one", script.call(keys: [key], argv: ["one"])
    assert exists(addr, script.sha)
    assert_equal evals + 1, calls(addr, "eval")
    evalshas = calls(addr, "evalsha")
    3.times { |i| assert_equal i.to_s, script.call(keys: [key], argv: [i]) }
    assert_equal evals + 1, calls(addr, "eval")
    assert_equal evalshas + 3, calls(addr, "evalsha")
  end

  def test_error_reply_raises
    script = @client.register_script(FAILS)
    2.times do # by EVAL, then by EVALSHA
      e = assert_raises(VKClient::ResponseError) { script.call }
      assert_equal "MYERR the script says no", e.message
    end
    key = VKTest.key("str")
    @client.call("SET", key, "text")
    assert_raises(VKClient::ResponseError) do
      @client.register_script("return redis.call('INCR', KEYS[1])").call(keys: [key])
    end
  end

  def test_binary_safe
    key = VKTest.key("bin").b + "\x00\xff".b
    arg = "\x00\r\n\xfe arg".b
    got = @client.register_script(ECHO).call(keys: [key], argv: [arg])
    assert_equal [key, arg, arg.bytesize], got.map { |v| v.is_a?(String) ? v.b : v }
  end

  def test_flush_between_runs_recovers
    addr = VKTest.addr
    key = VKTest.key("flush")
    script = @client.register_script(SET_GET)
    assert_equal "1", script.call(keys: [key], argv: ["1"])
    flush(addr)
    evals = calls(addr, "eval")
    assert_equal "2", script.call(keys: [key], argv: ["2"])
    assert_equal evals + 1, calls(addr, "eval")
    assert exists(addr, script.sha)
  end

  def test_run_on_another_client
    key = VKTest.key("other")
    script = @client.register_script(SET_GET)
    VKClient::Client.open(standalone: VKTest.addr) do |other|
      assert_equal "x", script.call(keys: [key], argv: ["x"], client: other)
    end
  end

  def test_redis_rb_eval_evalsha_and_script
    key = VKTest.key("rb")
    sha = @client.script(:load, SET_GET)
    assert_equal Digest::SHA1.hexdigest(SET_GET), sha
    assert_equal true, @client.script(:exists, sha)
    assert_equal [true, false], @client.script(:exists, [sha, "0" * 40])
    assert_equal "a", @client.evalsha(sha, keys: [key], argv: ["a"])
    assert_equal "b", @client.evalsha(sha, [key], ["b"])
    assert_equal "c", @client.eval(SET_GET, keys: [key], argv: ["c"])
    assert_equal 2, @client.eval("return #KEYS", [key, key])
    e = assert_raises(VKClient::ResponseError) { @client.evalsha("0" * 40) }
    assert_match(/\ANOSCRIPT/, e.message)
  end
end

class TestClusterScript < Minitest::Test
  include VKScriptSupport

  CROSSSLOT = "invalid argument: CROSSSLOT keys in request don't hash to the same slot"

  def setup
    @addresses = VKTest.env("VK_TEST_CLUSTER_ADDRS").split(",")
    @client = VKClient::Client.new(cluster: { addresses: @addresses })
  end

  def teardown
    @client&.close
  end

  # {master address => a key it serves}.
  def key_per_master
    owners = {}
    i = 0
    prefix = VKTest.key("cscript")
    until owners.size == @addresses.size
      key = "#{prefix}:#{i}"
      slot = node(@addresses.first) { |c| c.call("CLUSTER", "KEYSLOT", key) }
      map = node(@addresses.first) { |c| c.call("CLUSTER", "SLOTS") }
      owner = map.find { |first, last, _| slot.between?(first, last) }[2]
      owners["#{owner[0]}:#{owner[1]}"] ||= key
      i += 1
    end
    owners
  end

  def test_runs_route_by_key_and_each_master_loads_once
    owners = key_per_master
    owners.each_key { |m| flush(m) }
    evals = owners.keys.to_h { |m| [m, calls(m, "eval")] }
    script = @client.register_script(SET_GET)
    2.times do |round|
      owners.each do |master, key|
        value = "#{master}-#{round}"
        assert_equal value, script.call(keys: [key], argv: [value])
        assert_equal value, node(master) { |c| c.call("GET", key) }
      end
    end
    owners.each_key do |master|
      assert exists(master, script.sha)
      assert_equal evals[master] + 1, calls(master, "eval")
    end
    e = assert_raises(VKClient::InvalidArgumentError) { script.call(keys: ["{a}x", "{b}y"]) }
    assert_equal CROSSSLOT, e.message
    assert_equal 7, @client.register_script("return 7").call
  end
end
