/*
 * The module: the classes (one named metatable per handle type, methods in
 * __index), the metatables of plain tables (error objects, config and auth
 * tables), the module table and luaopen_vkclient, the one symbol the
 * module exports.
 */
#include "vklua.h"

/* ---- module -------------------------------------------------------------- */

/* Registers funcs into the table on top of the stack as closures over the
 * value at `upvalue` (absolute index). */
static void set_closures(lua_State *L, const luaL_Reg *funcs, int upvalue)
{
    for (; funcs->name != NULL; funcs++) {
        lua_pushvalue(L, upvalue);
        lua_pushcclosure(L, funcs->func, 1);
        lua_setfield(L, -2, funcs->name);
    }
}

/* Creates metatable `name` with methods in __index and the metamethods. */
static void new_class(lua_State *L, const char *name, const luaL_Reg *methods,
                      const luaL_Reg *metamethods)
{
    luaL_newmetatable(L, name);
    int metatable = lua_gettop(L);
    if (metamethods != NULL)
        set_closures(L, metamethods, metatable);
    if (methods != NULL) {
        lua_newtable(L);
        set_closures(L, methods, metatable);
        lua_setfield(L, -2, "__index");
    }
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__name");
    lua_pushliteral(L, "vkclient");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
}

/* Metatables of plain Lua tables (error objects, auth and config tables):
 * no methods and no __metatable lock, so getmetatable(err) == vk.error_mt. */
static void new_plain_metatable(lua_State *L, const char *name, const luaL_Reg *metamethods)
{
    luaL_newmetatable(L, name);
    vklua_setfuncs(L, metamethods);
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
}

#if defined(__GNUC__)
__attribute__((visibility("default")))
#endif
int luaopen_vkclient(lua_State *L);

int luaopen_vkclient(lua_State *L)
{
    new_class(L, VKLUA_CLIENT_MT, vklua_client_methods, vklua_client_meta);
    new_class(L, VKLUA_PIPELINE_MT, vklua_pipeline_methods, vklua_pipeline_meta);
    new_class(L, VKLUA_SCAN_MT, NULL, vklua_scan_meta);
    new_class(L, VKLUA_HOSTED_SCAN_MT, vklua_hosted_scan_methods, vklua_hosted_scan_meta);
    new_class(L, VKLUA_SESSION_MT, vklua_session_methods, vklua_session_meta);
    new_class(L, VKLUA_MANAGER_MT, vklua_manager_methods, vklua_manager_meta);
    new_class(L, VKLUA_LOCK_MT, vklua_lock_methods, vklua_lock_meta);
    new_class(L, VKLUA_CONFIG_BOX_MT, NULL, vklua_config_box_meta);
    new_class(L, VKLUA_SCRIPT_MT, vklua_script_methods, vklua_script_meta);
    new_class(L, VKLUA_HOSTED_MT, vklua_hosted_methods, vklua_hosted_meta);
    new_class(L, VKLUA_HOSTED_PIPELINE_MT, vklua_hosted_pipeline_methods,
              vklua_hosted_pipeline_meta);
    new_class(L, VKLUA_HOSTED_MANAGER_MT, vklua_hosted_manager_methods,
              vklua_hosted_manager_meta);
    new_plain_metatable(L, VKLUA_ERROR_MT, vklua_error_meta);
    new_plain_metatable(L, VKLUA_CONFIG_MT, vklua_config_meta);
    new_plain_metatable(L, VKLUA_STATIC_PASSWORD_MT, vklua_static_password_meta);
    new_plain_metatable(L, VKLUA_GCP_IAM_MT, vklua_gcp_iam_meta);

    /* The module functions, in this order: new, from_url, lock_manager,
     * default_lock_options, rate_limiter_lock_options, set_package_logger,
     * static_password, gcp_iam, config, describe, script. */
    lua_newtable(L);
    vklua_setfuncs(L, vklua_client_functions);
    vklua_setfuncs(L, vklua_lock_functions);
    vklua_setfuncs(L, vklua_sink_functions);
    vklua_setfuncs(L, vklua_config_functions);
    vklua_setfuncs(L, vklua_script_functions);
    /* For require "vkclient.ngx" only (vkclient/ngx.lua). */
    vklua_setfuncs(L, vklua_hosted_functions);
    vklua_setfuncs(L, vklua_hosted_lock_functions);
    vklua_setfuncs(L, vklua_op_functions);
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    lua_pushstring(L, vk_version());
    lua_setfield(L, -2, "version");
    lua_pushstring(L, vk_hiredis_version());
    lua_setfield(L, -2, "hiredis_version");
    lua_pushboolean(L, vk_resp3_supported());
    lua_setfield(L, -2, "resp3_supported");
    /* vk.codes.LOCK_NOT_HELD == 4, and so on for every vk_status. */
    vklua_push_codes(L);
    lua_setfield(L, -2, "codes");
    /* The metatable of error objects, to recognise them. */
    luaL_getmetatable(L, VKLUA_ERROR_MT);
    lua_setfield(L, -2, "error_mt");
    return 1;
}
