# frozen_string_literal: true

# vkclient: a Redis/Valkey client (the C core vkclient, wrapped with SWIG
# plus a hand-written native half for the hot path, the GVL and callbacks).
#
#   require "vkclient"
#   client = VKClient::Client.new(standalone: "127.0.0.1:6379")
#   client.call("SET", "k", "v")
#
# See README for the full tour.
require "vkclient_native"
require "vkclient/errors"
require "vkclient/auth"
require "vkclient/config"
require "vkclient/sinks"
require "vkclient/client"
require "vkclient/script"
require "vkclient/session"
require "vkclient/lock"

module VKClient
  VERSION = Vkclient_native.vk_version

  # The version of the hiredis the core was built against.
  def self.hiredis_version
    Vkclient_native.vk_hiredis_version
  end

  # 1 when the core can speak RESP3 (protocol: 3).
  def self.resp3_supported?
    Vkclient_native.vk_resp3_supported == 1
  end
end
