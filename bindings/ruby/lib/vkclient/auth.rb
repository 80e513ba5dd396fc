# frozen_string_literal: true

module VKClient
  # Auth values that never print their secret (SEMANTICS §1 "Secrets"):
  # inspect, to_s, string interpolation, pp and to_yaml all show the
  # redacted form. Client.new takes them as static_password: / gcp_iam:
  # in place of the Hash form. A Hash is the caller's own object and
  # prints as Ruby prints any Hash, password included: to keep a config
  # that may be logged free of secrets, use these.
  module RedactedPrinting
    def to_s
      inspect
    end

    def pretty_print(printer)
      printer.text(inspect)
    end

    # YAML (Psych) gets the printed form, not the fields.
    def encode_with(coder)
      coder.scalar = inspect
    end
  end
  private_constant :RedactedPrinting

  # A static password (and an optional ACL username).
  class StaticPasswordAuth
    include RedactedPrinting

    attr_reader :username

    def initialize(password:, username: nil)
      raise TypeError, "password must be a String, not #{password.class}" unless password.is_a?(String)
      unless username.nil? || username.is_a?(String)
        raise TypeError, "username must be a String or nil, not #{username.class}"
      end

      @password = password.dup.freeze
      @username = username&.dup&.freeze
      freeze
    end

    # The password itself, for the config. Printing never shows it.
    attr_reader :password

    def inspect
      "StaticPasswordAuth{Password:REDACTED}"
    end

    # The keywords of the Hash form.
    def to_config
      { password: @password, username: @username }
    end
  end

  # Short-lived GCP IAM access tokens (SEMANTICS §3); durations in seconds,
  # nil for the defaults; credentials_base64 nil: from the environment.
  class GCPIAMAuth
    include RedactedPrinting

    FIELDS = %i[credentials_base64 service_account endpoint token_lifetime refresh_every
                refresh_check_interval refresh_operation_timeout].freeze

    attr_reader(*(FIELDS - [:credentials_base64]))

    def initialize(service_account:, credentials_base64: nil, endpoint: nil, token_lifetime: nil,
                   refresh_every: nil, refresh_check_interval: nil, refresh_operation_timeout: nil)
      { service_account: service_account, credentials_base64: credentials_base64, endpoint: endpoint }.each do |name, value|
        next if value.nil? || value.is_a?(String)

        raise TypeError, "#{name} must be a String#{' or nil' unless name == :service_account}, not #{value.class}"
      end
      raise TypeError, "service_account must be a String, not NilClass" if service_account.nil?

      @service_account = service_account.dup.freeze
      @credentials_base64 = credentials_base64&.dup&.freeze
      @endpoint = endpoint&.dup&.freeze
      @token_lifetime = token_lifetime
      @refresh_every = refresh_every
      @refresh_check_interval = refresh_check_interval
      @refresh_operation_timeout = refresh_operation_timeout
      freeze
    end

    # The credentials themselves, for the config. Printing never shows them.
    attr_reader :credentials_base64

    def inspect
      "GCPIAMAuth{ServiceAccount:#{@service_account}, CredentialsBase64:REDACTED}"
    end

    # The keywords of the Hash form (unset fields left out).
    def to_config
      FIELDS.to_h { |name| [name, instance_variable_get("@#{name}")] }.compact
    end
  end
end
