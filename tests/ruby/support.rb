# frozen_string_literal: true

# Shared by the minitest files: loads vkclient from the build tree and
# reads the servers that tests/harness/vkharness.py started for this run.
#
#   VK_BUILD_DIR=<build> /usr/bin/python3 tests/harness/vkharness.py run -- \
#     ruby -Itests/ruby -e 'require "minitest/autorun"; Dir["tests/ruby/test_*.rb"].each { |f| require File.expand_path(f) }'
require "minitest"
require "securerandom"
require "rbconfig"

module VKTest
  ROOT = File.expand_path("../..", __dir__)
  BUILD_DIR = ENV.fetch("VK_BUILD_DIR", File.join(ROOT, "build", "gcc"))
  RUBY_DIR = File.join(BUILD_DIR, "bindings", "ruby")

  module_function

  def env(name)
    ENV.fetch(name) { raise "#{name} is not set: run the suite through tests/harness/vkharness.py" }
  end

  def addr
    env("VK_TEST_ADDR")
  end

  # A key unique to this run and test, so that tests never see each other.
  def key(name)
    "vkrb:#{name}:#{SecureRandom.hex(6)}"
  end

  def client(**kwargs)
    VKClient::Client.new(standalone: addr, **kwargs)
  end
end

$LOAD_PATH.unshift(VKTest::RUBY_DIR) unless $LOAD_PATH.include?(VKTest::RUBY_DIR)
require "vkclient"

# Records logger and metrics events, with the thread each arrived on.
class VKTest::Recorder
  attr_reader :logs, :metrics

  def initialize
    @lock = Mutex.new
    @logs = []
    @metrics = []
  end

  def logger
    ->(level, message, fields) { @lock.synchronize { @logs << [level, message, fields, Thread.current] } }
  end

  def metrics_sink
    ->(name, kind, value, labels) { @lock.synchronize { @metrics << [name, kind, value, labels] } }
  end

  def messages
    @lock.synchronize { @logs.map { |entry| entry[1] } }
  end
end
