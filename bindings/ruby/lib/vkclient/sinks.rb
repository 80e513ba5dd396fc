# frozen_string_literal: true

module VKClient
  # Logger, metrics and tracer sinks. A logger is any object responding to
  # #call(level, message, fields) (level :debug/:info/:warn/:error, fields
  # a Hash of Strings), or a standard ::Logger. A metrics sink responds to
  # #call(name, kind, value, labels) (kind :counter/:gauge/:histogram).
  module Sinks
    LOGGER_SEVERITY = { debug: 0, info: 1, warn: 2, error: 3 }.freeze # ::Logger::DEBUG...

    module_function

    # A callable for the native half, or nil.
    def logger_callable(logger)
      return nil if logger.nil?
      return logger if logger.respond_to?(:call)

      if logger.respond_to?(:add)
        # A ::Logger: one line per event, fields as key=value.
        return lambda do |level, message, fields|
          line = fields.empty? ? message : "#{message} #{fields.map { |k, v| "#{k}=#{v}" }.join(' ')}"
          logger.add(LOGGER_SEVERITY.fetch(level, 1), line, "vkclient")
        end
      end
      raise TypeError, "logger must respond to #call(level, message, fields) or be a ::Logger"
    end

    def metrics_callable(metrics)
      return nil if metrics.nil?
      raise TypeError, "metrics must respond to #call(name, kind, value, labels)" unless metrics.respond_to?(:call)

      metrics
    end

    TRACER_METHODS = {
      start_span: "#start_span(name, parent, attributes, start_ns)",
      end_span: "#end_span(span, error, attributes, end_ns)"
    }.freeze

    # The tracer itself, checked: an object (not a block) responding to
    # #start_span and #end_span (see Client.new).
    def tracer_object(tracer)
      return nil if tracer.nil?

      missing = TRACER_METHODS.keys.reject { |m| tracer.respond_to?(m) }
      return tracer if missing.empty?

      raise TypeError, "tracer must respond to #{TRACER_METHODS.values.join(' and ')}; " \
                       "#{tracer.class} lacks #{missing.map { |m| "##{m}" }.join(' and ')}"
    end

    def trace_commands_flag(value)
      return value if [true, false].include?(value)

      raise TypeError, "trace_commands must be true or false, not #{value.class}"
    end
  end

  # The fiber-local storage key of the caller's trace parent.
  TRACE_PARENT_KEY = :vkclient_trace_parent
  private_constant :TRACE_PARENT_KEY

  # Runs the block with +span+ as the parent of the spans of the vkclient
  # calls this thread (fiber) makes in it, on every client and lock manager
  # that has a tracer: +span+ reaches the tracer's #start_span as +parent+
  # when no vkclient span of its own encloses the call. nil: no parent.
  # Nests; the previous parent is back after the block. Returns the block's
  # value.
  def self.with_trace_parent(span)
    raise ArgumentError, "with_trace_parent needs a block" unless block_given?

    storage = Thread.current
    previous = storage[TRACE_PARENT_KEY]
    storage[TRACE_PARENT_KEY] = span
    begin
      yield
    ensure
      storage[TRACE_PARENT_KEY] = previous
    end
  end

  # The parent set by the innermost with_trace_parent of this fiber, or nil.
  def self.trace_parent
    Thread.current[TRACE_PARENT_KEY]
  end

  # The process-wide logger for diagnostics of misuse; nil restores the
  # no-op logger.
  def self.package_logger=(logger)
    # Raises when the core cannot store it; the previous logger then stays.
    Native.set_package_logger(Sinks.logger_callable(logger))
    @package_logger = logger
  end

  def self.package_logger
    @package_logger
  end
end
