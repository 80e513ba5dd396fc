# frozen_string_literal: true

# Sentinel and Cluster through the Ruby binding, against the real Sentinel
# group and Cluster that `vkharness.py run --topologies` starts for the run
# (VK_TEST_SENTINEL_ADDRS / VK_TEST_SENTINEL_MASTER / VK_TEST_CLUSTER_ADDRS).
# What the client claims (status, replies) is always checked against the
# servers themselves, through standalone clients on the sentinels and nodes.
require_relative "support"

module VKTopo
  module_function

  def now
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  # Polls the block every `step` seconds; the monotonic time it first held,
  # or nil after `timeout` seconds.
  def wait_until(timeout, step = 0.01)
    deadline = now + timeout
    while now < deadline
      return now if yield

      sleep step
    end
    nil
  end

  # One command on a short-lived standalone client: the way to see what a
  # sentinel or a node says, independently of the client under test.
  def cli(address, *args)
    VKClient::Client.open(standalone: address) { |c| c.call(*args) }
  end

  # "host:port" of the master every sentinel names, once they all agree
  # (after a failover they learn the new master a moment apart); nil if
  # they never agree within `timeout` seconds.
  def named_master(sentinels, name, timeout: 10.0)
    agreed = nil
    wait_until(timeout, 0.05) do
      named = sentinels.map do |a|
        cli(a, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", name)
      rescue VKClient::Error
        nil
      end.uniq
      agreed = named.first.join(":") if named.size == 1 && named.first
    end
    agreed
  end

  # [[first, last, "host:port"], ...] from a node's CLUSTER SLOTS.
  def slot_map(address)
    cli(address, "CLUSTER", "SLOTS").map { |first, last, owner| [first, last, "#{owner[0]}:#{owner[1]}"] }.sort
  end

  def owner_of(map, slot)
    map.find { |first, last, _| slot.between?(first, last) }&.last
  end

  # `threads` Ruby threads each take the lock `rounds` times and, only while
  # holding it, increment a counter on the server with a GET then a SET: a
  # read-modify-write that loses updates unless the lock really excludes.
  # Returns the final counter, the overlaps seen, the fencing tokens in the
  # order the critical sections ran, and the errors the threads raised.
  def contend(client, lock_key, counter_key, threads: 4, rounds: 25)
    locks = VKClient::LockManager.new(client)
    guard = Mutex.new
    inside = 0
    overlaps = 0
    tokens = []
    errors = []
    workers = Array.new(threads) do
      Thread.new do
        rounds.times do
          locks.with_lock(lock_key, tries: 1000, retry_delay: 0.002) do |handle|
            guard.synchronize do
              inside += 1
              overlaps += 1 if inside > 1
              tokens << handle.fencing_token
            end
            seen = Integer(client.call("GET", counter_key) || 0)
            Thread.pass # invite another holder in, if the lock would let one
            client.call("SET", counter_key, (seen + 1).to_s)
            guard.synchronize { inside -= 1 }
          end
        end
      rescue StandardError => e # reported by the test
        guard.synchronize { errors << e }
      end
    end
    workers.each { |t| t.join(60) }
    [Integer(client.call("GET", counter_key) || 0), overlaps, tokens, errors]
  end

  # Writes 1, 2, 3... to its own key non-stop through the shared client and
  # remembers the last acknowledged value and every error. Once asked to
  # stop it still ends on an acknowledged write, so the value left on the
  # server is the last one it saw succeed (a write the old master took after
  # the promotion is lost with it, but a later acknowledged one replaces it).
  class Writer
    attr_reader :key, :last_ok, :last_ok_at

    def initialize(client, key)
      @client = client
      @key = key
      @last_ok = 0
      @last_ok_at = 0.0
      @errors = []
      @lock = Mutex.new
      @stop = false
      @thread = Thread.new { run }
      @thread.report_on_exception = false
    end

    def errors
      @lock.synchronize { @errors.dup }
    end

    def stop
      @stop = true
    end

    def join(timeout)
      @thread.join(timeout)
    end

    def alive?
      @thread.alive?
    end

    private

    def run
      n = 0
      give_up = nil
      loop do
        if @stop
          break if n == @last_ok

          give_up ||= VKTopo.now + 10
          break if VKTopo.now > give_up
        end
        n += 1
        begin
          @client.call("SET", @key, n.to_s)
        rescue StandardError => e # checked by the test: class and number
          @lock.synchronize { @errors << [VKTopo.now, e] }
          sleep 0.02 # as an application would before trying again
          next
        end
        @last_ok = n
        @last_ok_at = VKTopo.now
      end
    end
  end
end

# The suite always runs with --topologies: without the variables every test
# fails with the reason, rather than passing or skipping unnoticed.
module VKTopoEnv
  def topology_env(name)
    value = ENV.fetch(name, "")
    flunk "#{name} is not set: run the suite through `vkharness.py run --topologies`" if value.empty?
    value
  end
end

class TestSentinel < Minitest::Test
  include VKTopoEnv

  # The group is shared by the run and may be failed over only once (a
  # second failover soon after is refused while the sentinels settle), so
  # the failover test is named to run last in alphabetical order. The other
  # tests ask the sentinels for the current master every time anyway.
  i_suck_and_my_tests_are_order_dependent!

  def setup
    @sentinels = topology_env("VK_TEST_SENTINEL_ADDRS").split(",")
    @name = topology_env("VK_TEST_SENTINEL_MASTER")
    @client = nil
  end

  def teardown
    @client&.close
  end

  def sentinel_client(**options)
    VKClient::Client.new(sentinel: { addresses: @sentinels, master_name: @name },
                         options: options.empty? ? nil : options)
  end

  def named_master
    master = VKTopo.named_master(@sentinels, @name)
    refute_nil master, "the sentinels do not agree on a master"
    master
  end

  def test_a_follows_the_master_the_sentinels_name
    @client = sentinel_client
    master = named_master
    status = @client.status
    assert_equal "sentinel", status.mode
    assert status.connected?
    assert_equal master, status.master_address
    assert_equal 0, status.master_switches

    key = VKTest.key("sentinel")
    value = SecureRandom.hex(8)
    assert_equal "OK", @client.call("SET", key, value)
    assert_equal value, @client.call("GET", key)
    # The write is on the named master itself, and that node is a master.
    assert_equal value, VKTopo.cli(master, "GET", key)
    assert_equal "master", VKTopo.cli(master, "ROLE")[0]
  end

  def test_b_one_sentinel_address_is_enough
    # The client asks the one sentinel it is given and finds the master.
    client = VKClient::Client.new(sentinel: { addresses: @sentinels.last(1), master_name: @name })
    key = VKTest.key("one-sentinel")
    assert_equal 2, client.call("RPUSH", key, "a", "b")
    assert_equal named_master, client.status.master_address
    assert_equal 2, VKTopo.cli(named_master, "LLEN", key)
  ensure
    client&.close
  end

  def test_c_unknown_master_name_fails_at_construction
    err = assert_raises(VKClient::ResponseError) do
      VKClient::Client.new(sentinel: { addresses: @sentinels, master_name: "no-such-master" })
    end
    assert_equal 'redis sentinel: master "no-such-master" is unknown to every reachable sentinel', err.message
    assert_equal VKClient::ResponseError::CODE, err.code
  end

  def test_d_lock_mutual_exclusion
    @client = sentinel_client(pool_size: 8)
    lock_key = VKTest.key("sentinel-lock")
    counter_key = VKTest.key("sentinel-counter")
    counter, overlaps, tokens, errors = VKTopo.contend(@client, lock_key, counter_key)
    assert_equal [], errors
    assert_equal 0, overlaps
    assert_equal 100, counter
    assert_equal 100, tokens.size
    assert_equal tokens.sort.uniq, tokens, "fencing tokens strictly increase"
    # The counter lives on the master the sentinels name.
    master = named_master
    assert_equal "100", VKTopo.cli(master, "GET", counter_key)
    # A held lock is a key on that master, and nobody else gets it.
    locks = VKClient::LockManager.new(@client)
    handle = locks.try_lock(lock_key)
    refute_nil handle
    assert_equal 1, VKTopo.cli(master, "EXISTS", lock_key)
    assert_nil locks.try_lock(lock_key)
    handle.unlock
    assert_equal 0, VKTopo.cli(master, "EXISTS", lock_key)
  end

  # Asks a sentinel to fail the master over, again while the group answers
  # that it cannot yet (a failover in progress, replicas not ready).
  def request_failover
    deadline = VKTopo.now + 10
    begin
      VKTopo.cli(@sentinels.first, "SENTINEL", "FAILOVER", @name)
    rescue VKClient::ResponseError => e
      raise unless e.message.match?(/\A(INPROG|NOGOODSLAVE)/) && VKTopo.now < deadline

      sleep 0.2
      retry
    end
  end

  # Runs last (see i_suck_and_my_tests_are_order_dependent! above).
  def test_z_failover_under_load
    # Short timeouts, so that a write stuck on the old master gives up soon.
    @client = sentinel_client(dial_timeout: 0.5, read_timeout: 1.0)
    old = named_master
    assert_equal old, @client.status.master_address
    assert_equal 0, @client.status.master_switches

    writers = Array.new(2) { |i| VKTopo::Writer.new(@client, VKTest.key("failover-#{i}")) }
    assert VKTopo.wait_until(5) { writers.all? { |w| w.last_ok > 10 } }, "the writers never got going"
    assert_equal [[], []], writers.map(&:errors)

    started = VKTopo.now
    assert_equal "OK", request_failover
    # The client follows the sentinels' switch...
    switched = VKTopo.wait_until(20) { @client.status.master_switches >= 1 }
    refute_nil switched, "the client never followed the failover: #{@client.status.inspect}"
    new = nil
    VKTopo.wait_until(10, 0.05) { (new = VKTopo.named_master(@sentinels, @name)) && new != old }
    refute_equal old, new, "the sentinels never named a new master"
    assert VKTopo.wait_until(5) { @client.status.master_address == new },
           "the client follows #{@client.status.master_address}, the sentinels name #{new}"
    # ... and both writers' writes succeed again within 5 s of it.
    resumed = VKTopo.wait_until(5) { writers.all? { |w| w.last_ok_at > switched } }
    refute_nil resumed, "writes did not resume within 5 s of the switch"
    sleep 0.3 # keep writing on the new master for a while
    writers.each(&:stop)
    writers.each do |w|
      w.join(15)
      refute w.alive?, "a writer never got a last write acknowledged"
    end

    # What each writer saw acknowledged last is what the new master holds.
    assert_equal "master", VKTopo.cli(new, "ROLE")[0]
    writers.each do |w|
      assert_operator w.last_ok_at, :>, switched
      assert_equal w.last_ok.to_s, VKTopo.cli(new, "GET", w.key), "the last acknowledged write of #{w.key}"
    end
    # Errors are the binding's, and few.
    errors = writers.flat_map(&:errors)
    errors.each do |at, err|
      assert_kind_of VKClient::Error, err
      assert_operator at, :>=, started, "an error before the failover: #{err.inspect}"
    end
    assert_operator errors.size, :<, 500

    # The same client object, still connected, now on the new master.
    status = @client.status
    assert_equal new, status.master_address
    assert_equal 1, status.master_switches
    assert status.connected?
    key = VKTest.key("after-failover")
    assert_equal "OK", @client.call("SET", key, "1")
    assert_equal "1", VKTopo.cli(new, "GET", key)
  ensure
    # A failed assertion must not leave the writers hammering the client.
    writers&.each(&:stop)
    writers&.each { |w| w.join(15) }
  end
end

class TestCluster < Minitest::Test
  include VKTopoEnv

  CROSSSLOT = "invalid argument: CROSSSLOT keys in request don't hash to the same slot"

  def setup
    @addresses = topology_env("VK_TEST_CLUSTER_ADDRS").split(",")
    @client = VKClient::Client.new(cluster: { addresses: @addresses })
  end

  def teardown
    @client&.close
  end

  def slot_of(key)
    VKTopo.cli(@addresses.first, "CLUSTER", "KEYSLOT", key)
  end

  def test_status_describes_the_slot_map
    status = @client.status
    assert_equal "cluster", status.mode
    assert status.connected?
    assert_nil status.master_address
    assert_equal 3, status.nodes.size
    assert_equal @addresses.sort, status.nodes.keys.sort
    assert_equal 16_384, status.nodes.values.sum
    assert status.nodes.frozen?
    assert_operator status.slot_map_refreshes, :>=, 1
    # The same shares as the node's own map.
    shares = Hash.new(0)
    VKTopo.slot_map(@addresses.first).each { |first, last, owner| shares[owner] += last - first + 1 }
    assert_equal shares, status.nodes
  end

  def test_keys_land_on_their_owner_and_on_every_master
    # 30 keys whose hash tags spread them over the slot space.
    keys = Array.new(30) { |i| "{vkrb-#{i}}:#{SecureRandom.hex(4)}" }
    keys.each_with_index { |k, i| assert_equal "OK", @client.call("SET", k, "v#{i}") }
    masters = @addresses.to_h { |a| [a, VKClient::Client.new(standalone: a)] }
    held = Hash.new(0)
    keys.each_with_index do |k, i|
      slot = slot_of(k)
      owners = masters.select do |address, node|
        node.call("GET", k) == "v#{i}"
      rescue VKClient::ResponseError => e
        # A node that does not own the slot redirects to one that does.
        assert_match(/\AMOVED #{slot} \S+:\d+\z/, e.message)
        refute_equal address, e.message.split.last
        false
      end
      assert_equal 1, owners.size, "#{k} is on #{owners.keys}"
      held[owners.keys.first] += 1
    end
    assert_equal @addresses.sort, held.keys.sort, "every master holds some of the keys: #{held}"
    keys.each_with_index { |k, i| assert_equal "v#{i}", @client.call("GET", k) }
  ensure
    masters&.each_value(&:close)
  end

  def test_hash_tags_share_a_slot_and_cross_slot_is_refused
    tag = "user1-#{SecureRandom.hex(4)}"
    a = "{#{tag}}:a"
    b = "{#{tag}}:b"
    assert_equal "OK", @client.call("MSET", a, "1", b, "2")
    assert_equal %w[1 2], @client.call("MGET", a, b)
    slot = slot_of(a)
    assert_equal slot, slot_of(b)
    owner = VKTopo.owner_of(VKTopo.slot_map(@addresses.first), slot)
    assert_equal %w[1 2], VKTopo.cli(owner, "MGET", a, b)

    # Keys of different slots: refused by the client before sending.
    x = VKTest.key("x")
    y = (0..).lazy.map { |i| VKTest.key("y#{i}") }.find { |k| slot_of(k) != slot_of(x) }
    err = assert_raises(VKClient::InvalidArgumentError) { @client.call("MSET", x, "1", y, "2") }
    assert_equal CROSSSLOT, err.message
    assert_equal 0, @client.call("EXISTS", x)
    assert_equal 0, @client.call("EXISTS", y)
    assert_raises(VKClient::InvalidArgumentError) { @client.call("MGET", x, y) }
    assert_equal "PONG", @client.call("PING")
  end

  def test_pipeline_spans_every_master_in_order
    map = VKTopo.slot_map(@addresses.first)
    keys = Array.new(50) { |i| "{vkrb-p#{i}}:#{SecureRandom.hex(4)}" }
    assert_equal @addresses.sort, keys.map { |k| VKTopo.owner_of(map, slot_of(k)) }.uniq.sort
    replies = @client.pipelined do |p|
      keys.each_with_index do |k, i|
        p.call("SET", k, "v#{i}")
        p.call("GET", k)
      end
    end
    assert_equal 100, replies.size
    assert_equal keys.each_index.flat_map { |i| ["OK", "v#{i}"] }, replies
    # Mixed commands and error replies stay in place too.
    replies = @client.pipelined(exception: false) do |p|
      keys.first(10).each_with_index do |k, i|
        p.call("INCR", k)
        p.call("APPEND", k, "+")
        p.call("STRLEN", k)
        p.call("GET", k)
      end
    end
    keys.first(10).each_with_index do |_, i|
      assert_kind_of VKClient::ResponseError, replies[4 * i]
      assert_equal ["v#{i}+".size, "v#{i}+".size, "v#{i}+"], replies[4 * i + 1, 3]
    end
  end

  def test_lock_mutual_exclusion_and_fencing
    lock_key = VKTest.key("cluster-lock")
    counter_key = VKTest.key("cluster-counter")
    counter, overlaps, tokens, errors = VKTopo.contend(@client, lock_key, counter_key)
    assert_equal [], errors
    assert_equal 0, overlaps
    assert_equal 100, counter
    assert_equal 100, tokens.size
    assert_operator tokens.first, :>, 0
    assert_equal tokens.sort.uniq, tokens, "fencing tokens strictly increase"
    # The lock key lives on its slot's owner, which alone holds it.
    locks = VKClient::LockManager.new(@client)
    handle = locks.try_lock(lock_key)
    refute_nil handle
    assert_operator handle.fencing_token, :>, tokens.last
    owner = VKTopo.owner_of(VKTopo.slot_map(@addresses.first), slot_of(lock_key))
    assert_equal 1, VKTopo.cli(owner, "EXISTS", lock_key)
    assert_nil locks.try_lock(lock_key)
    handle.unlock
    assert_equal 0, VKTopo.cli(owner, "EXISTS", lock_key)
  end
end
