# frozen_string_literal: true

# Commands that would change a pooled connection for its next caller are
# refused before anything is sent; a transaction inside one pipeline runs.
require_relative "support"

class TestRefusedCommands < Minitest::Test
  PREFIX = "command not allowed on a shared connection: "
  SELECT_TEXT = "#{PREFIX}SELECT changes the database of the connection; " \
                "choose the database with the db connection option"
  MULTI_TEXT = "#{PREFIX}MULTI leaves the connection in a transaction; " \
               "send MULTI ... EXEC in one pipeline (or use a transaction pipeline or a session)"
  WATCH_TEXT = "#{PREFIX}WATCH leaves keys watched on the connection; " \
               "use a session"

  def setup
    @client = VKTest.client(options: { pool_size: 1 }) # one connection, shared
  end

  def teardown
    @client&.close
  end

  def refused(text)
    err = assert_raises(VKClient::CommandNotAllowedError) { yield }
    assert_equal text, err.message
    assert_equal 30, err.code
    assert_equal :command_not_allowed, err.code_name
    assert_kind_of VKClient::Error, err
    err
  end

  def test_select_is_refused_and_the_database_stays
    key = VKTest.key("refused")
    connection = @client.call("CLIENT", "ID")
    assert_equal "OK", @client.call("SET", key, "zero")
    refused(SELECT_TEXT) { @client.call("SELECT", "1") }
    refused(SELECT_TEXT) { @client.call("select", 1) }
    assert_equal "zero", @client.call("GET", key)
    assert_equal connection, @client.call("CLIENT", "ID")
  end

  def test_multi_is_refused_and_nothing_is_queued
    connection = @client.call("CLIENT", "ID")
    refused(MULTI_TEXT) { @client.call("MULTI") }
    refused(MULTI_TEXT) { @client.call("mulTI") }
    assert_equal "OK", @client.call("SET", VKTest.key("refused"), "v")
    err = assert_raises(VKClient::CommandNotAllowedError) { @client.call("CLIENT", "REPLY", "OFF") }
    assert err.message.start_with?("#{PREFIX}CLIENT REPLY "), err.message
    assert_equal connection, @client.call("CLIENT", "ID")
  end

  def test_a_transaction_in_one_pipeline
    key = VKTest.key("tx")
    counter = VKTest.key("n")
    replies = @client.pipelined do |p|
      p.call("MULTI")
      p.call("SET", key, "v")
      p.call("INCR", counter)
      p.call("EXEC")
    end
    assert_equal ["OK", "QUEUED", "QUEUED", ["OK", 1]], replies
    replies = @client.pipelined { |p| p.call("multi"); p.call("INCR", counter); p.call("discard") }
    assert_equal %w[OK QUEUED OK], replies
    assert_equal 2, @client.call("INCR", counter)
  end

  def test_pipeline_refusals_send_nothing
    key = VKTest.key("pipe")
    refused(WATCH_TEXT) { @client.pipelined { |p| p.call("SET", key, "sent"); p.call("WATCH", key) } }
    refused("#{PREFIX}MULTI without EXEC or DISCARD; end the transaction in the same pipeline") do
      @client.pipelined { |p| p.call("MULTI"); p.call("SET", key, "sent") }
    end
    assert_nil @client.call("GET", key)
    assert_equal ["PONG"], @client.pipelined { |p| p.call("PING") }
  end
end
