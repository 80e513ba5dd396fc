# frozen_string_literal: true

module VKClient
  # Logger and metrics sinks. A logger is any object responding to
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
