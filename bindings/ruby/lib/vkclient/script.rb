# frozen_string_literal: true

module VKClient
  # A Lua script run by its SHA-1 (computed once): EVALSHA, and EVAL when
  # the server answers NOSCRIPT (first use on that node, a restart, SCRIPT
  # FLUSH, a failover), which also caches it. The fallback is the core's:
  # in a Cluster the keys pick the node, and keys of two slots raise
  # InvalidArgumentError (CROSSSLOT). A Script holds no connection: it may
  # be shared between threads and run on any client.
  #
  #   script = client.register_script("return redis.call('GET', KEYS[1])")
  #   script.call(keys: ["k"], argv: [])
  #
  # #sha is implemented in C (ext/vkrb_script.c).
  class Script
    attr_reader :source, :client

    def initialize(client, source)
      raise TypeError, "a script source must be a String, not #{source.class}" unless source.is_a?(String)

      @client = client
      @source = source.dup.freeze
      _native_init(@source)
    end

    # Runs the script with KEYS = keys and ARGV = argv (Strings, Symbols,
    # Integers, Floats) and returns its reply; a script's error reply
    # raises ResponseError. client: runs it on another VKClient::Client.
    def call(keys: [], argv: [], client: nil)
      (client || @client).__send__(:_run_script, self, keys, argv)
    end
    alias run call

    def inspect
      "#<VKClient::Script sha=#{sha}>"
    end
    alias to_s inspect
  end

  class Client
    # A Script for +source+, run with script.call(keys: [...], argv: [...]).
    def register_script(source)
      Script.new(self, source)
    end

    # redis-rb's EVALSHA: evalsha(sha, keys: [], argv: []) or
    # evalsha(sha, keys, argv). A NOSCRIPT error raises ResponseError
    # (register_script falls back to EVAL by itself).
    def evalsha(sha, *args, **options)
      _eval("EVALSHA", sha, args, options)
    end

    # redis-rb's EVAL: eval(source, keys: [], argv: []) or eval(source, keys, argv).
    def eval(source, *args, **options)
      _eval("EVAL", source, args, options)
    end

    # redis-rb's SCRIPT: script(:load, source) returns the SHA-1,
    # script(:exists, sha) true or false (an Array of SHA-1s: an Array of
    # them), script(:flush) "OK". In a Cluster it runs on one master; use
    # register_script, which loads a script wherever its keys route.
    def script(subcommand, *args)
      if subcommand.to_s.casecmp?("exists")
        shas = args.flatten
        found = call("SCRIPT", "EXISTS", *shas).map { |r| r == 1 || r == true }
        return args.first.is_a?(Array) || args.size > 1 ? found : found.first
      end
      call("SCRIPT", subcommand, *args)
    end

    private

    def _eval(command, script, args, options)
      keys = args.shift || options[:keys] || []
      argv = args.shift || options[:argv] || []
      call(command, script, keys.size, *keys, *argv)
    end
  end
end
