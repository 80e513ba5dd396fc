# frozen_string_literal: true

module VKClient
  # The base of every vkclient error. `message` is the exact text of the
  # core (SEMANTICS), `code` the numeric vk_status and `code_name` its name.
  class Error < StandardError
    CODE = nil

    def code
      self.class::CODE
    end

    def code_name
      CODE_NAMES[code]
    end
  end

  # One class per core status code (vkclient.h, append-only numbers).
  ERROR_CLASSES = {}
  CODE_NAMES = {}

  {
    NilClientError: [1, :nil_client],
    InvalidConfigError: [2, :invalid_config],
    NilLockHandleError: [3, :nil_lock_handle],
    LockNotHeldError: [4, :lock_not_held],
    NilLockManagerError: [5, :nil_lock_manager],
    LockNotInitializedError: [6, :lock_not_initialized],
    NilLockFunctionError: [7, :nil_lock_fn],
    EmptyLockKeyError: [8, :empty_lock_key],
    LockExpiryInvalidError: [9, :lock_expiry_invalid],
    LockTriesInvalidError: [10, :lock_tries_invalid],
    LockTriesExceededError: [11, :lock_tries_exceeded],
    LockRetryDelayNegativeError: [12, :lock_retry_delay_negative],
    LockDriftFactorInvalidError: [13, :lock_drift_factor_invalid],
    NilLockHandleOnUnlockError: [14, :nil_lock_handle_on_unlock],
    LockAcquireError: [15, :lock_acquire],
    LockFunctionError: [16, :lock_fn],
    ConnectionError: [17, :io],
    TimeoutError: [18, :timeout],
    PoolTimeoutError: [19, :pool_timeout],
    ReconnectRateLimitedError: [20, :reconnect_rate_limited],
    AuthenticationError: [21, :auth],
    TLSError: [22, :tls],
    IAMError: [23, :iam],
    ProtocolError: [24, :protocol],
    OutOfMemoryError: [25, :no_memory],
    InvalidArgumentError: [26, :invalid_argument],
    CancelledError: [27, :cancelled],
    ResponseError: [28, :server],
    LockLostError: [29, :lock_lost],
    CommandNotAllowedError: [30, :command_not_allowed],
    WatchError: [31, :watch_conflict]
  }.each do |name, (code, code_name)|
    klass = Class.new(Error)
    klass.const_set(:CODE, code)
    const_set(name, klass)
    ERROR_CLASSES[code] = klass
    CODE_NAMES[code] = code_name
  end
  ERROR_CLASSES.freeze
  CODE_NAMES.freeze

  # The class raised for a core status code (used by the native half).
  def self.error_class_for(code)
    ERROR_CLASSES.fetch(code, Error)
  end
end
