# frozen_string_literal: true

module VKClient
  # One pooled connection pinned to its caller until #close, for the
  # commands a shared connection refuses: WATCH, MULTI/EXEC/DISCARD,
  # SELECT, CLIENT SETNAME, ... (SUBSCRIBE, MONITOR and CLIENT REPLY stay
  # refused: a session reads one reply per command). Made by
  # Client#session, Client#watch and Client#transaction.
  #
  # #call runs a command now (an EXEC aborted by WATCH returns nil, as in
  # redis-rb); #multi { |tx| ... } sends the block's commands as one
  # MULTI ... EXEC and returns EXEC's results, or nil when a watched key
  # changed. Nothing is retried on a session: a connection failure (also a
  # Timeout.timeout or Thread#raise mid-command) fails it, and later calls
  # raise ConnectionError. #close gives the connection back after undoing
  # what the session changed (DISCARD, UNWATCH, SELECT of the configured
  # db), or closes it when that cannot be done for sure.
  #
  # #call, #close and #closed? are implemented in C (ext/vkrb_session.c).
  class Session
    # The results of the last #multi (nil: aborted, or none yet).
    attr_reader :last_exec

    def initialize(client, key = nil)
      @client = client
      @last_exec = nil
      @aborted = false
      _native_open(client, key)
    end

    # WATCH keys: a later EXEC on this session aborts if one of them changes.
    def watch(*keys)
      raise ArgumentError, "watch needs at least one key" if keys.empty?

      call("WATCH", *keys)
    end

    def unwatch
      call("UNWATCH")
    end

    # redis-rb's multi: the block queues commands on +tx+ (tx.call(...)),
    # sent as one MULTI ... EXEC on this session's connection. Returns
    # EXEC's results (an error reply raises the first ResponseError after
    # EXEC; exception: false returns them in place), or nil when a watched
    # key changed (nothing of it ran).
    def multi(exception: true)
      tx = Pipeline.new
      yield tx
      results = tx.commands.empty? ? [] : _pipeline_exec(@client, tx.commands, true)
      @aborted = results.nil?
      @last_exec = results
      return nil if results.nil?

      Session.raise_first_error(results, exception)
    end

    # True when the last #multi was aborted by a watched key.
    def aborted?
      @aborted
    end

    # Runs the block's commands (tx.call(...)) as a plain pipeline on this
    # session's connection: one reply per command.
    def pipelined(exception: true)
      pipeline = Pipeline.new
      yield pipeline
      return [] if pipeline.commands.empty?

      Session.raise_first_error(_pipeline_exec(@client, pipeline.commands, false), exception)
    end

    def inspect
      "#<VKClient::Session #{closed? ? 'closed' : 'open'}>"
    end
    alias to_s inspect

    # Raises the first ResponseError of +replies+ when +exception+, else
    # returns them.
    def self.raise_first_error(replies, exception)
      if exception && (error = replies.find { |r| r.is_a?(ResponseError) })
        raise error
      end

      replies
    end
  end
end
