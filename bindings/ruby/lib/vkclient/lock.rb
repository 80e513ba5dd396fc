# frozen_string_literal: true

module VKClient
  # Options of a lock acquisition (SEMANTICS §4). Durations in seconds.
  # The core validates them, with its exact error texts.
  class LockOptions
    attr_reader :expiry, :tries, :retry_delay, :drift_factor, :auto_renew

    def initialize(expiry: 10, tries: 3, retry_delay: 0.5, drift_factor: 0.01, auto_renew: false)
      @expiry = expiry
      @tries = tries
      @retry_delay = retry_delay
      @drift_factor = drift_factor
      @auto_renew = auto_renew ? true : false
      Native.lock_options_validate(to_native)
      freeze
    end

    # The defaults: expiry 10 s, 3 tries, 500 ms apart, drift 0.01.
    def self.default
      from_native(Native.lock_options_default)
    end

    # The rate-limiter preset: expiry 2 s, 2 tries, 100 ms apart.
    def self.rate_limiter
      from_native(Native.lock_options_rate_limiter)
    end

    def self.from_native(fields)
      expiry_ms, tries, retry_delay_ms, drift_factor, auto_renew = fields
      new(expiry: expiry_ms / 1000.0, tries: tries, retry_delay: retry_delay_ms / 1000.0,
          drift_factor: drift_factor, auto_renew: auto_renew)
    end

    # A copy with some fields changed.
    def with(**changes)
      self.class.new(expiry: @expiry, tries: @tries, retry_delay: @retry_delay,
                     drift_factor: @drift_factor, auto_renew: @auto_renew, **changes)
    end

    # [expiry_ms, tries, retry_delay_ms, drift_factor, auto_renew] for C.
    def to_native
      [Config.ms(@expiry, :expiry), integer(@tries, :tries), Config.ms(@retry_delay, :retry_delay),
       number(@drift_factor, :drift_factor), @auto_renew]
    end

    def ==(other)
      other.is_a?(LockOptions) && to_native == other.to_native
    end

    def inspect
      "#<VKClient::LockOptions expiry=#{@expiry} tries=#{@tries} retry_delay=#{@retry_delay} " \
        "drift_factor=#{@drift_factor} auto_renew=#{@auto_renew}>"
    end

    private

    def integer(value, name)
      raise TypeError, "#{name} must be an Integer, not #{value.class}" unless value.is_a?(Integer)

      value
    end

    def number(value, name)
      raise TypeError, "#{name} must be a Numeric, not #{value.class}" unless value.is_a?(Numeric)

      Float(value)
    end
  end

  # A held lock (from LockManager#try_lock / #lock, or lent to a with_lock
  # block). #unlock, #fencing_token, #key and #lost? are in C.
  class LockHandle
    # Resets the expiry to `expiry` seconds, only while the lock is ours.
    # (Object#extend is shadowed on purpose: this is the lock's API.)
    def extend(expiry)
      _extend_ms(Config.ms(expiry, :expiry))
    end

    # Remaining validity in seconds (0.0 once expired or released).
    def validity
      _validity_ms / 1000.0
    end

    def inspect
      "#<VKClient::LockHandle key=#{key.inspect} fencing_token=#{fencing_token} validity=#{validity}>"
    end
    alias to_s inspect
  end

  # Distributed locks (Redlock) over one client, or over several independent
  # clients for a majority quorum. try_lock is in C.
  class LockManager
    attr_reader :clients

    def initialize(clients)
      @clients = clients.is_a?(Array) ? clients.dup.freeze : [clients].freeze
      @clients.each do |c|
        next if c.nil? || c.is_a?(Client)

        raise TypeError, "a LockManager takes a VKClient::Client or an Array of them, not #{c.class}"
      end
      _native_init(@clients)
    end

    # Acquires key (retrying per the options), runs the block with the
    # LockHandle, releases the lock and returns the block's value. The lock
    # is released also when the block raises; a StandardError of the block
    # is then raised as LockFunctionError ("distributed lock: function
    # execution: <message>") whose #cause is the block's error (Interrupt,
    # throw and Timeout pass unchanged). Raises LockAcquireError when the
    # lock stays busy.
    def with_lock(key, options = nil, **fields, &block)
      raise NilLockFunctionError, "lock function is nil" unless block

      _with_lock(key, native_options(options, fields), &block)
    end

    # Acquires key (retrying per the options) and returns its LockHandle;
    # the caller unlocks it.
    def lock(key, options = nil, **fields)
      _acquire(key, native_options(options, fields))
    end

    # Deprecated: use LockHandle#unlock. Kept for callers of the original
    # manager-level unlock; a nil handle is NilLockHandleOnUnlockError.
    def unlock(handle)
      warn("VKClient::LockManager#unlock is deprecated; use LockHandle#unlock", uplevel: 1, category: :deprecated)
      raise NilLockHandleOnUnlockError, "lock handle is nil" if handle.nil?

      handle.unlock
    end

    def inspect
      "#<VKClient::LockManager nodes=#{@clients.size}>"
    end
    alias to_s inspect

    private

    # Called by the native half once the lock is released.
    def _raise_function_error(error)
      raise LockFunctionError, "distributed lock: function execution: #{error.message}", cause: error
    end

    def native_options(options, fields)
      unless options.nil? || options.is_a?(LockOptions)
        raise TypeError, "lock options must be a VKClient::LockOptions (or keywords), not #{options.class}"
      end

      options ||= LockOptions.default unless fields.empty?
      options = options.with(**fields) unless fields.empty?
      options&.to_native
    end
  end
end
