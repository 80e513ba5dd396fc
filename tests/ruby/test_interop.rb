# frozen_string_literal: true

require_relative "support"
require "open3"

# Cross-language mutual exclusion: every binding speaks the core's one lock
# protocol, so a Python or Lua holder excludes a Ruby contender and the
# other way round. The Python and Lua bindings come from the same build
# directory ($VK_BUILD_DIR).
class TestInterop < Minitest::Test
  PYTHON_HOLDER = <<~PY
    import os, sys, time
    import vkclient
    client = vkclient.Client.from_url("redis://" + os.environ["VK_TEST_ADDR"])
    locks = vkclient.LockManager(client)
    handle = locks.try_lock(sys.argv[1])
    if handle is None:
        print("busy", flush=True)
        sys.exit(0)
    print("held %d" % handle.fencing_token, flush=True)
    time.sleep(float(sys.argv[2]))
    handle.unlock()
    print("released", flush=True)
  PY

  LUA_HOLDER = <<~LUA
    local vk = require "vkclient"
    local client = assert(vk.new{ standalone = os.getenv("VK_TEST_ADDR") })
    local locks = assert(vk.lock_manager(client))
    local handle = locks:try_lock(arg[1])
    if not handle then
        print("busy")
        os.exit(0)
    end
    print("held " .. tostring(handle:fencing_token()))
    io.stdout:flush()
    os.execute("sleep " .. arg[2])
    assert(handle:unlock())
    print("released")
  LUA

  def setup
    @client = VKTest.client
    @locks = VKClient::LockManager.new(@client)
  end

  def teardown
    @client&.close
  end

  def python_command(key, hold)
    env = { "PYTHONPATH" => File.join(VKTest::BUILD_DIR, "bindings", "python") }
    [env, "/usr/bin/python3", "-c", PYTHON_HOLDER, key, hold.to_s]
  end

  def lua_command(key, hold)
    env = { "LUA_CPATH" => File.join(VKTest::BUILD_DIR, "bindings", "lua", "5.4", "?.so") + ";;" }
    [env, "lua5.4", "-", key, hold.to_s]
  end

  # Starts a holder, waits for it to say "held N", and returns [io, N].
  def start_holder(command, stdin_script = nil)
    io = IO.popen(*command[0, 1], command[1..], "r+", err: %i[child out])
    if stdin_script
      io.write(stdin_script)
      io.close_write
    end
    line = io.gets
    assert_match(/\Aheld (\d+)/, line.to_s, "holder output: #{line.inspect}")
    [io, Integer(line[/\d+/])]
  end

  def run_contender(command, stdin_script = nil)
    out, status = Open3.capture2e(*command, stdin_data: stdin_script || "")
    assert status.success?, out
    out
  end

  def test_a_python_holder_excludes_ruby_until_it_releases
    key = VKTest.key("py-holder")
    io, token = start_holder(python_command(key, 1.0))
    assert_nil @locks.try_lock(key), "Python holds it"
    assert_raises(VKClient::LockAcquireError) { @locks.with_lock(key, tries: 1) { flunk "must not run" } }
    assert_equal "released\n", io.gets
    io.close
    handle = @locks.try_lock(key)
    refute_nil handle
    assert_operator handle.fencing_token, :>, token
    handle.unlock
  end

  def test_a_ruby_holder_excludes_python
    key = VKTest.key("rb-holder")
    during = @locks.with_lock(key) { run_contender(python_command(key, 0)) }
    assert_match(/\Abusy/, during)
    assert_match(/\Aheld/, run_contender(python_command(key, 0)))
  end

  def test_a_lua_holder_excludes_ruby_until_it_releases
    key = VKTest.key("lua-holder")
    io, token = start_holder(lua_command(key, 1), LUA_HOLDER)
    assert_nil @locks.try_lock(key), "Lua holds it"
    assert_equal "released\n", io.gets
    io.close
    handle = @locks.try_lock(key)
    refute_nil handle
    assert_operator handle.fencing_token, :>, token
    handle.unlock
  end

  def test_a_ruby_holder_excludes_lua
    key = VKTest.key("rb-holder-lua")
    during = @locks.with_lock(key) { run_contender(lua_command(key, 0), LUA_HOLDER) }
    assert_match(/\Abusy/, during)
    assert_match(/\Aheld/, run_contender(lua_command(key, 0), LUA_HOLDER))
  end
end
