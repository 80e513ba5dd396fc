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

      (seconds * 1000).round
    end

    # A new native config (the caller frees it with .free) from keywords:
    # standalone:, sentinel:, cluster:, tls:, static_password:, gcp_iam:,
    # options:. Raises InvalidConfigError for what the core rejects.
    def build(standalone: nil, sentinel: nil, cluster: nil, tls: nil,
              static_password: nil, gcp_iam: nil, options: nil, url: nil)
      cfg = url ? N.vk_config_from_url(String(url)) : N.vk_config_new
      begin
        N.vk_config_set_standalone(cfg, String(standalone)) unless standalone.nil?
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
      N.vk_config_set_sentinel(cfg, String(s[:master_name] || ""))
      Array(s[:addresses]).each { |a| N.vk_config_add_sentinel_address(cfg, String(a)) }
      N.vk_config_set_sentinel_auth(cfg, s[:username], s[:password]) if s[:password]
    end

    def apply_cluster(cfg, cluster)
      c = fields(cluster, "cluster", %i[addresses])
      N.vk_config_set_cluster(cfg)
      Array(c[:addresses]).each { |a| N.vk_config_add_cluster_address(cfg, String(a)) }
    end

    def apply_tls(cfg, tls)
      t = fields(tls, "tls", %i[ca_cert_base64 min_version allow_legacy_min_version
                                client_cert_base64 client_key_base64 server_name])
      N.vk_config_set_tls(cfg, String(t[:ca_cert_base64] || ""))
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

    def apply_static_password(cfg, auth)
      a = fields(auth, "static_password", %i[password username])
      N.vk_config_set_static_password(cfg, a[:username]&.to_s, String(a[:password] || ""))
    end

    def apply_gcp_iam(cfg, iam)
      i = fields(iam, "gcp_iam", %i[credentials_base64 service_account endpoint] + IAM_DURATIONS.keys)
      N.vk_config_set_gcp_iam(cfg, i[:credentials_base64]&.to_s, String(i[:service_account] || ""))
      IAM_DURATIONS.each do |key, setter|
        N.public_send(setter, cfg, ms(i[key], key)) if i.key?(key)
      end
      N.vk_config_set_gcp_iam_endpoint(cfg, String(i[:endpoint])) if i[:endpoint]
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
