# frozen_string_literal: true

# Client#scan_each, #hscan_each, #sscan_each and #zscan_each (redis-rb's
# names and shapes) against a standalone server and the run's Cluster, where
# scan_each walks every master (VK_TEST_CLUSTER_ADDRS: run the suite through
# `vkharness.py run --topologies`).
require_relative "support"

module VKScanChecks
  KEYS = 1000
  MEMBERS = 1000

  # KEYS strings, 20 hashes and three big collections under +prefix+.
  def fill(client, prefix)
    big = { hash: "#{prefix}{big}hash", set: "#{prefix}{big}set", zset: "#{prefix}{big}zset" }
    replies = client.pipelined do |p|
      KEYS.times { |i| p.call("SET", "#{prefix}#{i}", i) }
      20.times { |i| p.call("HSET", "#{prefix}h#{i}", "f", i) }
      MEMBERS.times do |i|
        p.call("HSET", big[:hash], "m#{i}", "v#{i}")
        p.call("SADD", big[:set], "m#{i}")
        p.call("ZADD", big[:zset], "#{i}.5", "m#{i}")
      end
    end
    assert_equal KEYS + 20 + 3 * MEMBERS, replies.size
    big
  end

  def check_scans(client, prefix, big)
    keys = []
    assert_nil client.scan_each(match: "#{prefix}*", count: 100) { |k| keys << k }
    assert(KEYS.times.all? { |i| keys.include?("#{prefix}#{i}") })
    assert_equal KEYS + 20 + 3, keys.uniq.size

    # Without a block: an Enumerator.
    enum = client.scan_each(match: "#{prefix}1?")
    assert_kind_of Enumerator, enum
    assert_equal 10.times.map { |i| "#{prefix}1#{i}" }.sort, enum.to_a.sort
    hashes = client.scan_each(match: "#{prefix}*", type: "hash").to_a.sort
    assert_equal (20.times.map { |i| "#{prefix}h#{i}" } + [big[:hash]]).sort, hashes

    fields = client.hscan_each(big[:hash], count: 50).to_h
    assert_equal(MEMBERS.times.to_h { |i| ["m#{i}", "v#{i}"] }, fields)
    assert_equal MEMBERS.times.map { |i| "m#{i}" }.sort, client.sscan_each(big[:set]).to_a.sort
    scores = client.zscan_each(big[:zset]).to_a
    assert_equal(MEMBERS.times.to_h { |i| ["m#{i}", i + 0.5] }, scores.to_h)
    assert(scores.all? { |_, s| s.is_a?(Float) })
    assert_equal [["m7", 7.5]], client.zscan_each(big[:zset], match: "m7").to_a
    assert_equal [], client.sscan_each("#{prefix}missing").to_a
  end
end

class TestScan < Minitest::Test
  include VKScanChecks

  def setup
    @client = VKTest.client
  end

  def teardown
    @client&.close
  end

  def test_standalone
    prefix = VKTest.key("scan")
    check_scans(@client, prefix, fill(@client, prefix))
  end

  def test_enumerator_is_lazy
    prefix = VKTest.key("lazy")
    30.times { |i| @client.call("SET", "#{prefix}#{i}", i) }
    enum = @client.scan_each(match: "#{prefix}*", count: 5)
    first = enum.next
    assert first.start_with?(prefix)
    assert_equal 30, enum.to_a.uniq.size
  end

  def test_bad_input
    err = assert_raises(VKClient::InvalidArgumentError) { @client.scan_each(count: -1).to_a }
    assert_equal "invalid argument: scan count cannot be negative", err.message
    assert_raises(ArgumentError) { @client.scan_each(count: 0).to_a }
    assert_raises(TypeError) { @client.scan_each(count: "10").to_a }
    err = assert_raises(VKClient::InvalidArgumentError) { @client.scan_each(type: "").to_a }
    assert_equal "invalid argument: scan type cannot be empty", err.message
    key = VKTest.key("string")
    @client.call("SET", key, "x")
    err = assert_raises(VKClient::ResponseError) { @client.hscan_each(key).to_a }
    assert_match(/\Aserver error reply: HSCAN: WRONGTYPE/, err.message)
  end
end

class TestScanCluster < Minitest::Test
  include VKScanChecks

  def setup
    value = ENV.fetch("VK_TEST_CLUSTER_ADDRS", "")
    flunk "VK_TEST_CLUSTER_ADDRS is not set: run the suite through `vkharness.py run --topologies`" if value.empty?
    @addresses = value.split(",")
    @client = VKClient::Client.new(cluster: { addresses: @addresses })
  end

  def teardown
    @client&.close
  end

  def test_walks_every_master
    prefix = VKTest.key("scan-cluster")
    big = fill(@client, prefix)
    # The keys are on every master ...
    owners = @addresses.map do |a|
      VKClient::Client.open(standalone: a) { |c| c.call("SCAN", "0", "MATCH", "#{prefix}*", "COUNT", "5000")[1].size }
    end
    assert(owners.all?(&:positive?), owners.inspect)
    # ... and the walk finds each of them.
    check_scans(@client, prefix, big)
  end
end
