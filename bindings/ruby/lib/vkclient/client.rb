# frozen_string_literal: true

module VKClient
  # A snapshot of a client's state (SEMANTICS §2 Status): not a probe.
  #
  # +mode+ is "standalone", "sentinel" or "cluster". +master_address+ is the
  # node the client talks to (in sentinel mode the master it follows now;
  # nil in cluster mode), +master_switches+ the new masters it followed. In
  # cluster mode +nodes+ maps each master of the slot map in service to the
  # number of slots it serves; +slot_map_refreshes+, +moved_redirects+ and
  # +ask_redirects+ count maps loaded and redirects followed.
  class Status
    attr_reader :last_refresh_error, :last_refresh_at, :mode, :master_address,
                :master_switches, :slot_map_refreshes, :moved_redirects, :ask_redirects, :nodes

    def initialize(connected, last_refresh_error, last_refresh_at, refresh_loop_running,
                   topology = {})
      @connected = connected
      @last_refresh_error = last_refresh_error
      @last_refresh_at = last_refresh_at
      @refresh_loop_running = refresh_loop_running
      @mode = topology.fetch(:mode, "standalone")
      @master_address = topology[:master_address]
      @master_switches = topology.fetch(:master_switches, 0)
      @slot_map_refreshes = topology.fetch(:slot_map_refreshes, 0)
      @moved_redirects = topology.fetch(:moved_redirects, 0)
      @ask_redirects = topology.fetch(:ask_redirects, 0)
      @nodes = topology.fetch(:nodes, {}).freeze
      freeze
    end

    def connected?
      @connected
    end

    def refresh_loop_running?
      @refresh_loop_running
    end

    def inspect
      "#<VKClient::Status mode=#{@mode} connected=#{@connected} " \
        "master_address=#{@master_address.inspect} refresh_loop_running=#{@refresh_loop_running} " \
        "last_refresh_at=#{@last_refresh_at.inspect} last_refresh_error=#{@last_refresh_error.inspect}>"
    end
    alias to_s inspect
  end

  # A Redis/Valkey client. Thread-safe: commands from several threads share
  # the core's connection pool, and every waiting call releases the GVL.
  #
  # #call, #connect and #connected? are implemented in C (ext/vkrb_client.c).
  class Client
    # Keys of Client.new besides the topology/auth/TLS/options ones.
    SINK_KEYS = %i[logger metrics tracer trace_commands].freeze

    # Opens a client from a redis://, rediss:// or unix:// URL. Other
    # keywords (tls:, options:, logger:, metrics:, tracer:, ...) apply on
    # top of it.
    def self.from_url(url, **kwargs)
      new(url: url, **kwargs)
    end

    # Opens a client, yields it and closes it at the end of the block.
    def self.open(**kwargs)
      client = new(**kwargs)
      return client unless block_given?

      begin
        yield client
      ensure
        client.close
      end
    end

    # Normalises, validates, connects and pings (SEMANTICS §2 New).
    #
    # tracer: an object responding to
    # #start_span(name, parent, attributes, start_ns) (returns the span: any
    # object, handed back to #end_span and, as +parent+, to the #start_span
    # of the spans that run inside it) and
    # #end_span(span, error, attributes, end_ns) (+error+ nil, or the
    # failure's text). trace_commands: true adds a "redis.command" span per
    # command and pipeline.
    def initialize(logger: nil, metrics: nil, tracer: nil, trace_commands: false, **config)
      # The sinks stay referenced by the client for as long as the core may
      # call them.
      @logger = Sinks.logger_callable(logger)
      @metrics = Sinks.metrics_callable(metrics)
      @tracer = Sinks.tracer_object(tracer)
      trace_commands = Sinks.trace_commands_flag(trace_commands)
      cfg = Config.build(**config)
      begin
        Native.config_set_sinks(cfg, @logger, @metrics)
        Native.config_set_tracer(cfg, @tracer, trace_commands) if @tracer
        @description = Config.describe(cfg)
        _native_open(cfg)
      ensure
        Config.free(cfg)
      end
      flush_events
      start_event_thread if sinks?
    end

    # VKClient.with_trace_parent: +span+ is the parent of the spans of the
    # calls made in the block (on this client and any other).
    def with_trace_parent(span, &block)
      VKClient.with_trace_parent(span, &block)
    end

    # Runs the block with a pipeline and sends its commands in one round
    # trip; returns one reply per command. An error reply raises the first
    # ResponseError after every command ran; with exception: false the
    # errors are returned in place instead.
    def pipelined(exception: true)
      pipeline = Pipeline.new
      yield pipeline
      return [] if pipeline.commands.empty?

      replies = _pipeline_exec(pipeline.commands, false)
      if exception && (error = replies.find { |r| r.is_a?(ResponseError) })
        raise error
      end

      replies
    end

    # Yields every key of the key space (SCAN, page by page); without a
    # block, an Enumerator. match: a glob pattern, count: a page size hint,
    # type: "string", "hash", ... A key present for the whole iteration is
    # yielded at least once (maybe more than once). In cluster mode it walks
    # every master in turn; when the slot map changes meanwhile the next
    # page raises ConnectionError (start again) rather than skip keys.
    def scan_each(match: nil, count: nil, type: nil, &block)
      return to_enum(:scan_each, match: match, count: count, type: type) unless block

      each_item(Scan.new(self, "SCAN", nil, match, count, type), &block)
    end

    # Yields [field, value] of the hash at +key+ (HSCAN).
    def hscan_each(key, match: nil, count: nil, &block)
      return to_enum(:hscan_each, key, match: match, count: count) unless block

      each_pair(Scan.new(self, "HSCAN", key, match, count, nil), &block)
    end

    # Yields the members of the set at +key+ (SSCAN).
    def sscan_each(key, match: nil, count: nil, &block)
      return to_enum(:sscan_each, key, match: match, count: count) unless block

      each_item(Scan.new(self, "SSCAN", key, match, count, nil), &block)
    end

    # Yields [member, score] (a Float) of the sorted set at +key+ (ZSCAN).
    def zscan_each(key, match: nil, count: nil)
      return to_enum(:zscan_each, key, match: match, count: count) unless block_given?

      each_pair(Scan.new(self, "ZSCAN", key, match, count, nil)) { |m, s| yield m, Float(s) }
    end

    # redis-rb's Redis#multi: the block queues commands on +tx+
    # (tx.call(...)), sent as one MULTI ... EXEC on one connection; returns
    # EXEC's results. An error reply of a command raises the first
    # ResponseError after EXEC (exception: false: returned in place). In
    # cluster mode every key must hash to one slot.
    def multi(exception: true)
      tx = Pipeline.new
      yield tx
      return [] if tx.commands.empty?

      Session.raise_first_error(_pipeline_exec(tx.commands, true), exception)
    end

    # A Session: one pooled connection for the caller alone (WATCH, MULTI,
    # SELECT, CLIENT ...). With a block, yields it and closes it at the
    # end, returning the block's value. In cluster mode +key+ is required:
    # the session runs on the master of its hash slot.
    def session(key = nil)
      session = Session.new(self, key)
      return session unless block_given?

      begin
        yield session
      ensure
        session.close
      end
    end

    # redis-rb's Redis#watch with a block: a session pinned to keys.first's
    # node WATCHes +keys+ and is yielded; inside, session.multi { |tx| ... }
    # returns EXEC's results, or nil when a watched key changed. Returns the
    # block's value; the session is closed (UNWATCH) at the end.
    def watch(*keys)
      raise ArgumentError, "watch needs at least one key" if keys.empty?
      raise ArgumentError, "watch needs a block (a session keeps the WATCH)" unless block_given?

      session(keys.first) do |s|
        s.watch(*keys)
        yield s
      end
    end

    # Optimistic locking: WATCHes +keys+ on a session and yields it; the
    # block reads what it needs (session.call) and writes in
    # session.multi { |tx| ... }. When a watched key changed, all of it runs
    # again, up to +retries+ more times (nil: until it succeeds), then
    # WatchError. Returns the results of the block's multi. In cluster mode
    # the session goes to +key+ (default: the first watched key).
    def transaction(*keys, retries: nil, key: nil)
      raise ArgumentError, "transaction needs a block" unless block_given?
      raise ArgumentError, "retries cannot be negative" if retries&.negative?

      attempt = 0
      loop do
        session(key || keys.first) do |s|
          s.watch(*keys) unless keys.empty?
          yield s
          return s.last_exec unless s.aborted?
        end
        attempt += 1
        if retries && attempt > retries
          raise WatchError, "transaction aborted: a watched key changed"
        end
      end
    end

    def status
      connected, error, refreshed_ms, running, mode, master, switches, refreshes, moved, ask, nodes = _snapshot
      Status.new(connected, error, refreshed_ms.positive? ? Time.at(refreshed_ms / 1000r) : nil, running,
                 { mode: mode, master_address: master, master_switches: switches,
                   slot_map_refreshes: refreshes, moved_redirects: moved, ask_redirects: ask, nodes: nodes })
    end

    def last_refresh_error
      status.last_refresh_error
    end

    # Stops the refresh loop and closes every connection. Idempotent; a
    # later command reconnects on demand.
    def close
      _native_close
      stop_event_thread
      flush_events
      nil
    end

    # Delivers the events the core queued (IAM refresh logs...) on this
    # thread now; they are also delivered by the client's event thread.
    def flush_events
      _poll_events if sinks?
    end

    def inspect
      "#<VKClient::Client #{@description} connected=#{connected?}>"
    end
    alias to_s inspect

    private

    def each_item(scan, &block)
      scan.next_page.each(&block) until scan.done?
      nil
    end

    def each_pair(scan)
      scan.next_page.each_slice(2) { |name, value| yield name, value } until scan.done?
      nil
    end

    def sinks?
      !(@logger.nil? && @metrics.nil? && @tracer.nil?)
    end

    # A Ruby thread waits (GVL released) for events that the core's
    # background threads queued, and calls the sinks with them: Ruby is
    # never entered from a foreign thread.
    def start_event_thread
      @event_thread = Thread.new do
        Thread.current.name = "vkclient-events"
        Thread.current.report_on_exception = false
        loop { _poll_events if _wait_events(1.0) }
      end
    end

    def stop_event_thread
      thread = @event_thread
      @event_thread = nil
      return unless thread

      thread.kill
      thread.join
    end
  end

  # Collects the commands of Client#pipelined.
  class Pipeline
    attr_reader :commands

    def initialize
      @commands = []
    end

    def call(*args)
      @commands << args
      nil
    end
  end
end
