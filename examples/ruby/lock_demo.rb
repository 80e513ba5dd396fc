#!/usr/bin/env ruby
# frozen_string_literal: true

# lock_demo: the vkclient tour in one small Ruby program.
#
#   ruby examples/ruby/lock_demo.rb [host:port] [rounds]
#
# Connects (address from the argument, else $VK_DEMO_ADDR, else
# 127.0.0.1:6379), runs SET and GET, prints the client's status, then takes
# the shared demo lock a few times. Each round increments a counter under
# the lock with GET then SET, so several demo programs (C, Python, Lua,
# Ruby) contending on the same key would show a lost increment if the lock
# ever let two holders in at once.
require "vkclient"

LOCK_KEY = "vkclient:demo:lock"
COUNTER_KEY = "vkclient:demo:counter"

address = ARGV[0] || ENV.fetch("VK_DEMO_ADDR", "")
address = "127.0.0.1:6379" if address.empty?
rounds = Integer(ARGV[1] || 3)

puts "vkclient #{VKClient::VERSION} (hiredis #{VKClient.hiredis_version})"

# 1. Client: validates, connects and pings; closed at the end of the block.
VKClient::Client.open(standalone: address, options: { read_timeout: 2 }) do |client|
  puts "client: #{client.inspect}"

  # 2. Commands: any arguments, replies as Ruby objects.
  puts "  SET -> #{client.call('SET', 'vkclient:demo:greeting', 'hello from Ruby')}"
  puts "  GET -> #{client.call('GET', 'vkclient:demo:greeting')}"
  puts "  pipelined -> #{client.pipelined { |p| p.call('PING'); p.call('EXISTS', COUNTER_KEY) }.inspect}"

  # 3. Status: a snapshot, not a probe.
  status = client.status
  puts "status: connected=#{status.connected?} refresh_loop_running=#{status.refresh_loop_running?}"

  # 4. The lock: with_lock acquires (retrying while another holder has it),
  # runs the block, and releases even when the block raises.
  locks = VKClient::LockManager.new(client)
  options = VKClient::LockOptions.new(expiry: 5, tries: 100, retry_delay: 0.05)
  rounds.times do
    locks.with_lock(LOCK_KEY, options) do |lock|
      value = client.call("GET", COUNTER_KEY).to_i
      client.call("SET", COUNTER_KEY, value + 1)
      puts format("  [Ruby] holds %s (fencing token %d, %.0f ms left): counter %d -> %d",
                  LOCK_KEY, lock.fencing_token, lock.validity * 1000, value, value + 1)
    end
  end

  # try_lock: one attempt; contention is not an error, just no lock.
  lock = locks.try_lock(LOCK_KEY)
  puts "try_lock: #{lock ? 'acquired' : 'held by someone else'}"
  lock&.unlock
end
