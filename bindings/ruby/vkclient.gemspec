# frozen_string_literal: true

# The vkclient gem: the Ruby layer (lib/) and the native extension (ext/),
# built at install time against the installed vkclient core (pkg-config).
#
#   cd bindings/ruby && gem build vkclient.gemspec
#   gem install --local vkclient-1.1.0.gem
#
# Building the gem runs SWIG on swig/vkclient.i of the checkout and packs the
# generated wrapper, so installing needs only a C compiler and the core. The
# generated file is removed again when `gem build` exits (it is never
# committed).
here = File.expand_path(__dir__)
header = File.expand_path("../../core/include/vkclient.h", here)
version = File.read(header)[/VK_VERSION_STRING "([^"]+)"/, 1]
wrapper = File.join(here, "ext", "vkclient_ruby_wrap.c")
interface = File.expand_path("../../swig/vkclient.i", here)

if File.exist?(interface) && !File.exist?(wrapper)
  # SWIG runs from a scratch directory so that swig/ruby.swg is found next
  # to vkclient.i, never in place of SWIG's own library file of that name.
  require "tmpdir"
  Dir.mktmpdir("vkclient-swig") do |scratch|
    ok = system("swig", "-ruby", "-I#{File.expand_path('../../core/include', here)}",
                "-I#{File.join(here, 'ext')}", "-o", wrapper, interface, chdir: scratch)
    raise "SWIG failed to generate the Ruby wrapper" unless ok
  end
  at_exit { File.delete(wrapper) if File.exist?(wrapper) }
end

Gem::Specification.new do |spec|
  spec.name = "vkclient"
  spec.version = version
  spec.summary = "Redis/Valkey client with distributed locks and GCP IAM auth (vkclient core)"
  spec.description = "Ruby binding of the vkclient C core: commands, pipelines, Redlock " \
                     "locks with fencing tokens, TLS and GCP IAM authentication."
  spec.authors = ["vkclient contributors"]
  spec.license = "Apache-2.0"
  spec.required_ruby_version = ">= 2.7"
  spec.files = Dir.chdir(here) do
    Dir["lib/**/*.rb"] + Dir["ext/*.{c,h,rb}"]
  end
  spec.files << "ext/vkclient_ruby_wrap.c" unless spec.files.include?("ext/vkclient_ruby_wrap.c")
  spec.extensions = ["ext/extconf.rb"]
  spec.require_paths = ["lib"]
end
