# frozen_string_literal: true

# Builds the vkclient_native extension of the gem against the installed
# vkclient core, found with pkg-config (PKG_CONFIG_PATH for a non-system
# prefix). The SWIG wrapper (vkclient_ruby_wrap.c) is generated when the gem
# is built (vkclient.gemspec), so installing needs no SWIG.
require "mkmf"

abort "the vkclient core was not found: install it, or set PKG_CONFIG_PATH to its lib/pkgconfig" unless pkg_config("vkclient")

# Find libvkclient.so at run time where pkg-config found it.
libdir = `pkg-config --variable=libdir vkclient`.strip
$LDFLAGS << " -Wl,-rpath,#{libdir}" unless libdir.empty? || %w[/usr/lib /lib].include?(libdir)
$CFLAGS << " -std=c11 -Wall -Wextra -fvisibility=hidden"

abort "vkclient_ruby_wrap.c is missing: build the gem with `gem build vkclient.gemspec`" unless File.exist?(File.join(__dir__, "vkclient_ruby_wrap.c"))

create_makefile("vkclient_native")
