# frozen_string_literal: true

module VKClient
  # Builds the core's configuration from Client.new's keyword arguments.
  # Nothing here validates what the core validates: the core applies the
  # defaults and rules of SEMANTICS §1 once, for every language, and its
  # InvalidConfigError texts reach the caller unchanged. Only Ruby-level
  # mistakes (unknown keys, wrong types) are ArgumentError/TypeError.
  module Config
    N = Vkclient_native
    private_constant :N

    TLS_VERSIONS = {
      nil => N::VK_TLS_DEFAULT, default: N::VK_TLS_DEFAULT,
      tls1_0: N::VK_TLS1_0, tls1_1: N::VK_TLS1_1, tls1_2: N::VK_TLS1_2, tls1_3: N::VK_TLS1_3
    }.freeze

    # Durations are given in seconds (Integer or Float); the core takes ms.
    DURATION_OPTIONS = {
      read_timeout: :vk_config_set_read_timeout_ms,
      write_timeout: :vk_config_set_write_timeout_ms,
      dial_timeout: :vk_config_set_dial_timeout_ms,
      pool_timeout: :vk_config_set_pool_timeout_ms,
      min_retry_backoff: :vk_config_set_min_retry_backoff_ms,
      max_retry_backoff: :vk_config_set_max_retry_backoff_ms
    }.freeze
    COUNT_OPTIONS = {
      db: :vk_config_set_db,
      protocol: :vk_config_set_protocol,
      pool_size: :vk_config_set_pool_size,
      min_idle_conns: :vk_config_set_min_idle_conns,
      max_retries: :vk_config_set_max_retries
    }.freeze
    IAM_DURATIONS = {
      token_lifetime: :vk_config_set_gcp_iam_token_lifetime_ms,
      refresh_every: :vk_config_set_gcp_iam_refresh_every_ms,
      refresh_check_interval: :vk_config_set_gcp_iam_refresh_check_interval_ms,
      refresh_operation_timeout: :vk_config_set_gcp_iam_refresh_operation_timeout_ms
    }.freeze

    module_function

    # Seconds to whole milliseconds.
    def ms(seconds, name)
      unless seconds.is_a?(Numeric)
        raise TypeError, "#{name} must be a number of seconds, not #{seconds.class}"
      end
      raise ArgumentError, "#{name} must be a finite number of seconds" unless seconds.finite?

      (seconds * 1000).round
    end

    # The value itself when it is a String (nil when nil is allowed); a
    # TypeError naming the field otherwise, never one from deeper down.
    def string(value, name, allow_nil: false)
      return value if value.is_a?(String) || (allow_nil && value.nil?)

      raise TypeError, "#{name} must be a String#{' or nil' if allow_nil}, not #{value.class}"
    end

    # A list of addresses: one String or an Array of Strings.
    def addresses(value, name)
      list = value.is_a?(String) ? [value] : value
      raise TypeError, "#{name} must be a String or an Array of Strings, not #{value.class}" unless list.is_a?(Array)

      list.each_with_index { |a, i| string(a, "#{name}[#{i}]") }
    end

    # A new native config (the caller frees it with .free) from keywords:
    # standalone:, sentinel:, cluster:, tls:, static_password:, gcp_iam:,
    # options:. Raises InvalidConfigError for what the core rejects.
    def build(standalone: nil, sentinel: nil, cluster: nil, tls: nil,
              static_password: nil, gcp_iam: nil, options: nil, url: nil)
      cfg = url ? N.vk_config_from_url(string(url, "url")) : N.vk_config_new
      begin
        N.vk_config_set_standalone(cfg, string(standalone, "standalone")) unless standalone.nil?
        apply_sentinel(cfg, sentinel) unless sentinel.nil?
        apply_cluster(cfg, cluster) unless cluster.nil?
        apply_tls(cfg, tls) unless tls.nil?
        apply_static_password(cfg, static_password) unless static_password.nil?
        apply_gcp_iam(cfg, gcp_iam) unless gcp_iam.nil?
        apply_options(cfg, options) unless options.nil?
        cfg
      rescue StandardError
        free(cfg)
        raise
      end
    end

    def free(cfg)
      N.vk_config_free(cfg)
    end

    # The core's one-line description, every secret redacted.
    def describe(cfg)
      N.vk_config_describe(cfg)
    end

    def fields(hash, name, allowed)
      raise TypeError, "#{name} must be a Hash" unless hash.is_a?(Hash)

      unknown = hash.keys - allowed
      raise ArgumentError, "unknown #{name} option(s): #{unknown.join(', ')}" unless unknown.empty?

      hash
    end

    def apply_sentinel(cfg, sentinel)
      s = fields(sentinel, "sentinel", %i[addresses master_name username password])
      N.vk_config_set_sentinel(cfg, string(s[:master_name], "sentinel master_name", allow_nil: true) || "")
      addresses(s[:addresses] || [], "sentinel addresses").each { |a| N.vk_config_add_sentinel_address(cfg, a) }
      username = string(s[:username], "sentinel username", allow_nil: true)
      password = string(s[:password], "sentinel password", allow_nil: true)
      N.vk_config_set_sentinel_auth(cfg, username, password) if password
    end

    # cluster: { addresses: [...] }, or the addresses alone (an Array of
    # Strings, or one String).
    def apply_cluster(cfg, cluster)
      if cluster.is_a?(Hash)
        list = addresses(fields(cluster, "cluster", %i[addresses])[:addresses] || [], "cluster addresses")
      else
        list = addresses(cluster, "cluster")
      end
      N.vk_config_set_cluster(cfg)
      list.each { |a| N.vk_config_add_cluster_address(cfg, a) }
    end

    def apply_tls(cfg, tls)
      t = fields(tls, "tls", %i[ca_cert_base64 ca_file use_system_ca min_version
                                allow_legacy_min_version client_cert_base64 client_key_base64
                                server_name])
      # Trust: every one of ca_cert_base64, ca_file and use_system_ca given
      # is trusted; at least one is required (a rediss:// URL without a CA
      # trusts the system store).
      N.vk_config_set_tls(cfg, String(t[:ca_cert_base64] || ""))
      N.vk_config_set_tls_ca_file(cfg, path_string(t[:ca_file])) unless t[:ca_file].nil?
      N.vk_config_set_tls_use_system_ca(cfg, t[:use_system_ca] ? 1 : 0) unless t[:use_system_ca].nil?
      version = TLS_VERSIONS.fetch(t[:min_version]) do
        raise ArgumentError, "unknown TLS min_version #{t[:min_version].inspect} " \
                             "(use :tls1_0, :tls1_1, :tls1_2 or :tls1_3)"
      end
      N.vk_config_set_tls_min_version(cfg, version)
      N.vk_config_set_tls_allow_legacy_min_version(cfg, t[:allow_legacy_min_version] ? 1 : 0)
      if t[:client_cert_base64] || t[:client_key_base64]
        N.vk_config_set_tls_client_cert(cfg, String(t[:client_cert_base64] || ""),
                                        String(t[:client_key_base64] || ""))
      end
      N.vk_config_set_tls_server_name(cfg, String(t[:server_name])) if t[:server_name]
    end

    # A String or a Pathname (anything with to_path).
    def path_string(path)
      string(path.respond_to?(:to_path) ? path.to_path : path, "tls ca_file")
    end

    # A VKClient::StaticPasswordAuth (prints redacted) or the Hash form.
    def apply_static_password(cfg, auth)
      auth = auth.to_config if auth.is_a?(StaticPasswordAuth)
      unless auth.is_a?(Hash)
        raise TypeError, "static_password must be a VKClient::StaticPasswordAuth or a Hash, not #{auth.class}"
      end

      a = fields(auth, "static_password", %i[password username])
      N.vk_config_set_static_password(cfg, string(a[:username], "static_password username", allow_nil: true),
                                      string(a[:password], "static_password password", allow_nil: true) || "")
    end

    # A VKClient::GCPIAMAuth (prints redacted) or the Hash form.
    def apply_gcp_iam(cfg, iam)
      iam = iam.to_config if iam.is_a?(GCPIAMAuth)
      raise TypeError, "gcp_iam must be a VKClient::GCPIAMAuth or a Hash, not #{iam.class}" unless iam.is_a?(Hash)

      i = fields(iam, "gcp_iam", %i[credentials_base64 service_account endpoint] + IAM_DURATIONS.keys)
      N.vk_config_set_gcp_iam(cfg, string(i[:credentials_base64], "gcp_iam credentials_base64", allow_nil: true),
                              string(i[:service_account], "gcp_iam service_account", allow_nil: true) || "")
      IAM_DURATIONS.each do |key, setter|
        N.public_send(setter, cfg, ms(i[key], key)) unless i[key].nil?
      end
      endpoint = string(i[:endpoint], "gcp_iam endpoint", allow_nil: true)
      N.vk_config_set_gcp_iam_endpoint(cfg, endpoint) if endpoint
    end

    def apply_options(cfg, options)
      o = fields(options, "options", DURATION_OPTIONS.keys + COUNT_OPTIONS.keys)
      o.each do |key, value|
        if (setter = DURATION_OPTIONS[key])
          N.public_send(setter, cfg, ms(value, key))
        else
          raise TypeError, "#{key} must be an Integer, not #{value.class}" unless value.is_a?(Integer)

          N.public_send(COUNT_OPTIONS[key], cfg, value)
        end
      end
    end
  end
end
