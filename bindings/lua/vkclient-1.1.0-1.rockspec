-- The Lua binding as a rock. It builds the C sources (vklua_*.c, which
-- include vklua.h from their folder) against the installed core
-- (libvkclient.so and vkclient.h, from the CMake install):
--
--   luarocks make bindings/lua/vkclient-1.1.0-1.rockspec \
--     VKCLIENT_DIR=/usr/local          # where the core is installed
--
-- (run from the repository root). The CMake build also builds and installs
-- the module for Lua 5.1/LuaJIT and 5.4 without luarocks.
rockspec_format = "3.0"
package = "vkclient"
version = "1.1.0-1"

source = {
   url = "git+file://.",
   tag = "v1.1.0",
}

description = {
   summary = "Redis/Valkey client with topology, TLS, IAM auth and a distributed lock",
   detailed = [[
require "vkclient": a thin, hand-written binding over the vkclient C core.
Standalone, Sentinel and Cluster topologies; TLS; static passwords or GCP IAM
tokens refreshed in the background (or driven from ngx.timer.every); a
Redlock distributed lock shared with the C, Python and Ruby bindings.
]],
}

dependencies = {
   "lua >= 5.1, < 5.5",
}

external_dependencies = {
   VKCLIENT = {
      header = "vkclient.h",
      library = "vkclient",
   },
}

build = {
   type = "builtin",
   modules = {
      vkclient = {
         sources = {
            "bindings/lua/vklua_common.c",
            "bindings/lua/vklua_sinks.c",
            "bindings/lua/vklua_config.c",
            "bindings/lua/vklua_reply.c",
            "bindings/lua/vklua_client.c",
            "bindings/lua/vklua_pipeline.c",
            "bindings/lua/vklua_scan.c",
            "bindings/lua/vklua_session.c",
            "bindings/lua/vklua_lock.c",
            "bindings/lua/vklua_script.c",
            "bindings/lua/vklua_ops.c",
            "bindings/lua/vklua_hosted.c",
            "bindings/lua/vklua_hosted_lock.c",
            "bindings/lua/vklua_module.c",
         },
         libraries = { "vkclient" },
         incdirs = { "$(VKCLIENT_INCDIR)" },
         libdirs = { "$(VKCLIENT_LIBDIR)" },
         defines = {},
      },
      ["vkclient.ngx"] = "bindings/lua/vkclient/ngx.lua",
      ["vkclient.prometheus"] = "bindings/lua/vkclient/prometheus.lua",
   },
}
