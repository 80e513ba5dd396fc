# frozen_string_literal: true

require_relative "support"
require "open3"

# examples/ruby/lock_demo.rb runs against a real server, and two copies at
# once never lose an increment of the shared counter.
class TestExample < Minitest::Test
  DEMO = File.join(VKTest::ROOT, "examples", "ruby", "lock_demo.rb")

  def run_demo(rounds)
    Open3.capture2e({ "RUBYLIB" => VKTest::RUBY_DIR }, RbConfig.ruby, DEMO, VKTest.addr, rounds.to_s)
  end

  def test_lock_demo
    client = VKTest.client
    before = client.call("GET", "vkclient:demo:counter").to_i
    results = 2.times.map { Thread.new { run_demo(4) } }.map(&:value)
    results.each do |out, status|
      assert status.success?, out
      assert_includes out, "GET -> hello from Ruby"
      assert_equal 4, out.scan(/\[Ruby\] holds vkclient:demo:lock \(fencing token \d+/).size, out
    end
    assert_equal before + 8, client.call("GET", "vkclient:demo:counter").to_i, "no increment lost"
    client.close
  end
end
