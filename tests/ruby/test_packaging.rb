# frozen_string_literal: true

require_relative "support"
require "open3"
require "tmpdir"

# The gem builds and installs offline against an installed core (found with
# pkg-config), and `require "vkclient"` then works from any directory.
class TestPackaging < Minitest::Test
  GEM_DIR = File.join(VKTest::ROOT, "bindings", "ruby")

  def run_ok(env, *command, chdir:)
    out, status = Open3.capture2e(env, *command, chdir: chdir)
    assert status.success?, "#{command.join(' ')} failed:\n#{out}"
    out
  end

  def test_gem_build_and_offline_install
    Dir.mktmpdir("vkrb-gem") do |tmp|
      prefix = File.join(tmp, "prefix")
      gem_home = File.join(tmp, "gems")
      run_ok({}, "cmake", "--install", VKTest::BUILD_DIR, "--prefix", prefix, chdir: tmp)
      pc_dir = Dir[File.join(prefix, "lib*", "**", "pkgconfig")].first
      refute_nil pc_dir, "the core installs a pkg-config file"
      gem_file = File.join(tmp, "vkclient.gem")
      run_ok({}, "gem", "build", "vkclient.gemspec", "-o", gem_file, chdir: GEM_DIR)
      refute File.exist?(File.join(GEM_DIR, "ext", "vkclient_ruby_wrap.c")), "the generated wrapper is not left behind"
      env = { "PKG_CONFIG_PATH" => pc_dir, "GEM_HOME" => gem_home, "GEM_PATH" => gem_home,
              "http_proxy" => "http://127.0.0.1:9", "https_proxy" => "http://127.0.0.1:9" }
      run_ok(env, "gem", "install", "--local", "--no-document", gem_file, chdir: tmp)
      elsewhere = File.join(tmp, "elsewhere")
      Dir.mkdir(elsewhere)
      script = <<~RUBY
        require "vkclient"
        abort "loaded from the build tree" unless $LOADED_FEATURES.grep(/vkclient_native/).first.start_with?(ENV["GEM_HOME"])
        c = VKClient::Client.new(standalone: ENV["VK_TEST_ADDR"])
        puts c.call("PING")
        c.close
      RUBY
      out = run_ok(env.merge("RUBYLIB" => nil), RbConfig.ruby, "-e", script, chdir: elsewhere)
      assert_equal "PONG\n", out
    end
  end
end
