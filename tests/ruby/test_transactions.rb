# frozen_string_literal: true

# Transactions and sessions through the Ruby binding, in redis-rb's shapes:
# Client#multi, Client#watch with a block, Client#transaction retries,
# Client#session; atomicity seen from a second client, DISCARD, the state a
# session leaves behind (SELECT, WATCH, CLIENT SETNAME), a broken session,
# then a session over Sentinel and the slot rules of a Cluster (the
# harness's --topologies group and cluster).
require_relative "support"
require "timeout"

class TestTransactions < Minitest::Test
  def setup
    @client = VKTest.client
  end

  def teardown
    @client&.close
  end

  # One pooled connection: a session's is then the next caller's.
  def small_client(db: 0)
    VKTest.client(options: { db: db, pool_size: 1 })
  end

  def test_multi_returns_exec_results
    k = VKTest.key("multi")
    results = @client.multi do |tx|
      tx.call("SET", k, "1")
      tx.call("INCR", k)
      tx.call("GET", k)
    end
    assert_equal ["OK", 2, "2"], results
    assert_equal [], @client.multi { |_tx| nil }
    # An error reply of one command: raised after EXEC, or kept in place.
    err = assert_raises(VKClient::ResponseError) do
      @client.multi { |tx| tx.call("SET", k, "text"); tx.call("INCR", k) }
    end
    assert_match(/not an integer/, err.message)
    results = @client.multi(exception: false) { |tx| tx.call("GET", k); tx.call("INCR", k) }
    assert_equal "text", results[0]
    assert_kind_of VKClient::ResponseError, results[1]
    # MULTI inside is the transaction's to send.
    err = assert_raises(VKClient::CommandNotAllowedError) { @client.multi { |tx| tx.call("MULTI") } }
    assert_equal "command not allowed on a shared connection: MULTI, EXEC and DISCARD in a " \
                 "transaction pipeline: exec sends MULTI and EXEC itself", err.message
    # A command refused when queued discards all of it.
    err = assert_raises(VKClient::ResponseError) do
      @client.multi { |tx| tx.call("SET", k, "lost"); tx.call("SET", k) }
    end
    assert err.message.start_with?("server error reply: transaction discarded: command 2 was refused")
    assert_equal "text", @client.call("GET", k)
  end

  def test_a_second_client_never_sees_half_a_transaction
    left = VKTest.key("left")
    right = "#{left}:right"
    other = VKTest.client
    stop = false
    torn = []
    reads = 0
    reader = Thread.new do
      until stop
        a, b = other.call("MGET", left, right)
        torn << [a, b] if a != b
        reads += 1
      end
    end
    200.times { |i| @client.multi { |tx| tx.call("SET", left, i); tx.call("SET", right, i) } }
    stop = true
    reader.join
    assert_operator reads, :>, 0
    assert_empty torn
    # Queued on a session: invisible until EXEC.
    @client.session do |s|
      assert_equal "OK", s.call("MULTI")
      assert_equal "QUEUED", s.call("SET", left, "q")
      assert_equal "199", other.call("GET", left)
      assert_equal ["OK"], s.call("EXEC")
    end
    assert_equal "q", other.call("GET", left)
  ensure
    other&.close
  end

  def test_watch_conflict_aborts
    k = VKTest.key("watch")
    @client.call("SET", k, "0")
    result = @client.watch(k) do |s|
      @client.call("SET", k, "theirs")
      s.multi { |tx| tx.call("SET", k, "mine") }
    end
    assert_nil result
    assert_equal "theirs", @client.call("GET", k)
    # By hand: EXEC answers nil, as redis-rb's does.
    @client.session do |s|
      s.watch(k)
      @client.call("SET", k, "again")
      s.call("MULTI")
      s.call("SET", k, "mine")
      assert_nil s.call("EXEC")
    end
    # Without a conflict, multi gives the results.
    assert_equal ["OK"], @client.watch(k) { |s| s.multi { |tx| tx.call("SET", k, "mine") } }
    assert_equal "mine", @client.call("GET", k)
    assert_raises(ArgumentError) { @client.watch(k) }
  end

  def test_transaction_retries_then_gives_up
    k = VKTest.key("tx")
    @client.call("SET", k, "10")
    calls = 0
    results = @client.transaction(k) do |s|
      calls += 1
      value = s.call("GET", k).to_i
      @client.call("SET", k, (value + 1).to_s) if calls < 3 # a concurrent writer, twice
      s.multi { |tx| tx.call("SET", k, value * 2) }
    end
    assert_equal ["OK"], results
    assert_equal 3, calls
    assert_equal "24", @client.call("GET", k)

    calls = 0
    err = assert_raises(VKClient::WatchError) do
      @client.transaction(k, retries: 2) do |s|
        calls += 1
        @client.call("INCR", k)
        s.multi { |tx| tx.call("SET", k, "never") }
      end
    end
    assert_equal "transaction aborted: a watched key changed", err.message
    assert_equal 31, err.code
    assert_equal 3, calls
    assert_raises(ArgumentError) { @client.transaction(k, retries: -1) { nil } }
  end

  def test_discard
    k = VKTest.key("discard")
    @client.session do |s|
      s.call("MULTI")
      assert_equal "QUEUED", s.call("SET", k, "x")
      assert_equal "OK", s.call("DISCARD")
      assert_nil s.call("GET", k)
    end
    assert_nil @client.call("GET", k)
  end

  def test_select_does_not_leak_into_the_pool
    k = VKTest.key("select")
    c = small_client(db: 2)
    c.call("SET", k, "two")
    id = c.session do |s|
      s.call("SELECT", 5)
      s.call("SET", k, "five")
      s.call("CLIENT", "ID")
    end
    assert_equal id, c.call("CLIENT", "ID")
    assert_equal "two", c.call("GET", k)
    assert_raises(VKClient::CommandNotAllowedError) { c.call("SELECT", 5) }
    c.session { |s| s.call("SELECT", 5); s.call("DEL", k) }
  ensure
    c&.close
  end

  def test_watch_and_names_are_not_left_behind
    k = VKTest.key("left-behind")
    c = small_client
    id = c.session { |s| s.watch(k); s.call("CLIENT", "ID") }
    @client.call("SET", k, "changed")
    c.session do |s|
      assert_equal id, s.call("CLIENT", "ID")
      assert_equal ["OK"], s.multi { |tx| tx.call("SET", k, "mine") }
    end
    c.session { |s| s.call("CLIENT", "SETNAME", "pinned") }
    refute_equal id, c.call("CLIENT", "ID")
    assert_nil c.call("CLIENT", "GETNAME")
  ensure
    c&.close
  end

  def test_broken_session_is_never_reused
    c = small_client
    s = c.session
    id = s.call("CLIENT", "ID")
    @client.call("CLIENT", "KILL", "ID", id)
    assert_raises(VKClient::ConnectionError) { s.call("PING") }
    err = assert_raises(VKClient::ConnectionError) { s.call("PING") }
    assert_match(/the session's connection failed/, err.message)
    s.close
    s.close
    assert s.closed?
    assert_raises(IOError) { s.call("PING") }
    refute_equal id, c.call("CLIENT", "ID")
  ensure
    c&.close
  end

  def test_timeout_mid_command_fails_the_session
    c = small_client
    s = c.session
    id = s.call("CLIENT", "ID")
    assert_raises(Timeout::Error) { Timeout.timeout(0.2) { s.call("BLPOP", VKTest.key("empty"), 5) } }
    assert_raises(VKClient::ConnectionError) { s.call("PING") }
    s.close
    refute_equal id, c.call("CLIENT", "ID")
  ensure
    c&.close
  end

  def test_session_refusals
    @client.session do |s|
      assert_raises(VKClient::CommandNotAllowedError) { s.call("SUBSCRIBE", "ch") }
      assert_raises(VKClient::CommandNotAllowedError) { s.call("CLIENT", "REPLY", "OFF") }
      assert_equal "PONG", s.call("PING")
      assert_equal [1, "PONG"], s.pipelined { |p| p.call("INCR", VKTest.key("p")); p.call("PING") }
    end
    assert_raises(TypeError) { VKClient::Session.new(Object.new) }
  end
end

class TestTransactionTopologies < Minitest::Test
  def test_sentinel_session_goes_to_the_master
    addresses = VKTest.env("VK_TEST_SENTINEL_ADDRS").split(",")
    c = VKClient::Client.new(sentinel: { addresses: addresses,
                                         master_name: VKTest.env("VK_TEST_SENTINEL_MASTER") })
    k = VKTest.key("sentinel")
    c.session do |s|
      assert_equal "master", s.call("ROLE")[0]
      s.watch(k)
      assert_equal ["OK", 2], s.multi { |tx| tx.call("SET", k, "1"); tx.call("INCR", k) }
    end
    assert_equal [3], c.multi { |tx| tx.call("INCR", k) }
  ensure
    c&.close
  end

  def test_cluster_slots
    c = VKClient::Client.new(cluster: { addresses: VKTest.env("VK_TEST_CLUSTER_ADDRS").split(",") })
    err = assert_raises(VKClient::InvalidArgumentError) { c.session }
    assert_equal "invalid argument: a session in cluster mode needs a key: it runs on the " \
                 "master of that key's hash slot", err.message
    tag = "{vkrb:tx}"
    a = "#{tag}a"
    b = "#{tag}b"
    assert_equal %w[OK OK], c.watch(a, b) { |s| s.multi { |tx| tx.call("SET", a, 1); tx.call("SET", b, 2) } }
    c.session(a) do |s|
      err = assert_raises(VKClient::InvalidArgumentError) { s.call("GET", "elsewhere") }
      assert_match(/the session is pinned to the master of hash slot/, err.message)
    end
    err = assert_raises(VKClient::InvalidArgumentError) do
      c.multi { |tx| tx.call("INCR", a); tx.call("GET", "elsewhere") }
    end
    assert err.message.start_with?("invalid argument: CROSSSLOT keys in request don't hash to the same slot")
    assert_equal "1", c.call("GET", a)
    assert_equal [2], c.transaction(a, b) { |s| s.multi { |tx| tx.call("INCR", a) } }
  ensure
    c&.close
  end
end
