/*
 * Unloading: a host may dlclose() the library (lua_close() of the last Lua
 * state that required the Lua module unloads the module, and the library
 * with it) while threads that called it live on. A thread that recorded a
 * failure owns a thread-local message whose thread-exit destructor is the
 * library's code: such a thread must still exit cleanly after the unload.
 *
 * The program does not link the library: it loads it at run time as such a
 * host does (VK_TEST_LIBRARY, and VK_TEST_LUA_MODULE with the Lua 5.4
 * module when the Lua binding is built). Each case runs in a child process
 * that has not loaded the library yet.
 */
#include "vktest.h"
#include "vkclient.h"   /* types only: the functions are looked up */

#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef VK_TEST_LUA_MODULE
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#endif

/* A thread that does its work, reports it, then waits to be told to exit. */
typedef struct parked_thread {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    bool worked, work_ok, may_exit;
    bool (*work)(void *arg);
    void *arg;
} parked_thread;

static void *parked_main(void *p)
{
    parked_thread *t = p;
    bool ok = t->work(t->arg);
    pthread_mutex_lock(&t->mutex);
    t->worked = true;
    t->work_ok = ok;
    pthread_cond_broadcast(&t->cond);
    while (!t->may_exit)
        pthread_cond_wait(&t->cond, &t->mutex);
    pthread_mutex_unlock(&t->mutex);
    return NULL;   /* thread-local destructors run after this */
}

/* Starts a thread that runs work(arg) and parks; false if work failed. */
static bool park(parked_thread *t, pthread_t *thread, bool (*work)(void *), void *arg)
{
    *t = (parked_thread){.work = work, .arg = arg};
    pthread_mutex_init(&t->mutex, NULL);
    pthread_cond_init(&t->cond, NULL);
    if (pthread_create(thread, NULL, parked_main, t) != 0)
        return false;
    pthread_mutex_lock(&t->mutex);
    while (!t->worked)
        pthread_cond_wait(&t->cond, &t->mutex);
    bool ok = t->work_ok;
    pthread_mutex_unlock(&t->mutex);
    return ok;
}

static void release(parked_thread *t, pthread_t thread)
{
    pthread_mutex_lock(&t->mutex);
    t->may_exit = true;
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->mutex);
    pthread_join(thread, NULL);
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->mutex);
}

/* Runs one case in a child process; true when it exited with 0 (a crash
 * at a thread's exit shows as a signal). */
static bool in_child(int (*body)(void))
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0)
        exit(body());   /* exit(), so that leak checkers look at the child */
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return false;
    if (WIFSIGNALED(status))
        fprintf(stderr, "child killed by signal %d\n", WTERMSIG(status));
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* ---- the library itself -------------------------------------------------- */

/* The few functions a case calls, looked up by name (the header's types). */
typedef struct library {
    void *handle;
    vk_status (*config_new)(vk_config **out);
    vk_status (*config_validate)(const vk_config *cfg);
    void (*config_free)(vk_config *cfg);
    const char *(*last_error)(void);
    const char *(*version)(void);
} library;

static bool open_library(library *lib)
{
    lib->handle = dlopen(VK_TEST_LIBRARY, RTLD_NOW | RTLD_LOCAL);
    if (lib->handle == NULL) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return false;
    }
    *(void **)&lib->config_new = dlsym(lib->handle, "vk_config_new");
    *(void **)&lib->config_validate = dlsym(lib->handle, "vk_config_validate");
    *(void **)&lib->config_free = dlsym(lib->handle, "vk_config_free");
    *(void **)&lib->last_error = dlsym(lib->handle, "vk_last_error");
    *(void **)&lib->version = dlsym(lib->handle, "vk_version");
    return lib->config_new && lib->config_validate && lib->config_free && lib->last_error &&
           lib->version;
}

static bool library_is_loaded(void)
{
    void *h = dlopen(VK_TEST_LIBRARY, RTLD_NOW | RTLD_NOLOAD);
    if (h != NULL)
        dlclose(h);
    return h != NULL;
}

/* Records a failure on the calling thread: validating an empty config. */
static bool fail_once(void *arg)
{
    library *lib = arg;
    vk_config *cfg = NULL;
    if (lib->config_new(&cfg) != VK_OK)
        return false;
    bool failed = lib->config_validate(cfg) != VK_OK && lib->last_error()[0] != '\0';
    lib->config_free(cfg);
    return failed;
}

static int thread_exits_after_dlclose(void)
{
    library lib;
    if (!open_library(&lib))
        return 2;
    parked_thread t;
    pthread_t thread;
    if (!park(&t, &thread, fail_once, &lib))
        return 3;
    dlclose(lib.handle);
    release(&t, thread);   /* the thread's message is freed as it exits */
    return 0;
}

static void test_thread_exits_after_the_library_is_closed(void)
{
    CHECK(in_child(thread_exits_after_dlclose));
}

/* Keeping the library loaded is the price of a thread-local message, paid
 * only once a failure was recorded: a host that never saw one unloads it. */
static int unloads_without_failures(void)
{
    library lib;
    if (!open_library(&lib))
        return 2;
    if (lib.version() == NULL)
        return 3;
    dlclose(lib.handle);
    return library_is_loaded() ? 4 : 0;
}

static void test_library_without_failures_unloads(void)
{
    CHECK(in_child(unloads_without_failures));
}

/* ---- the Lua module ------------------------------------------------------ */

#ifdef VK_TEST_LUA_MODULE
/* Requires the module from its build folder and makes the core record a
 * failure on this thread: a config without a topology. */
static bool lua_fails_once(void *arg)
{
    lua_State *L = arg;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", VK_TEST_LUA_MODULE);
    char *slash = strrchr(dir, '/');
    if (slash != NULL)
        *slash = '\0';
    lua_pushfstring(L, "%s/?.so", dir);
    lua_setglobal(L, "module_path");
    const char *chunk = "package.cpath = module_path\n"
                        "local vk = require 'vkclient'\n"
                        "local client, err = vk.new({})\n"
                        "assert(client == nil and err ~= nil)\n";
    if (luaL_dostring(L, chunk) != 0) {
        fprintf(stderr, "lua: %s\n", lua_tostring(L, -1));
        return false;
    }
    return true;
}

static int thread_exits_after_lua_close(void)
{
    lua_State *L = luaL_newstate();
    if (L == NULL)
        return 2;
    luaL_openlibs(L);
    parked_thread t;
    pthread_t thread;
    if (!park(&t, &thread, lua_fails_once, L))
        return 3;
    lua_close(L);   /* unloads the module, and the library unless kept */
    release(&t, thread);
    return 0;
}

static void test_thread_exits_after_lua_close(void)
{
    CHECK(in_child(thread_exits_after_lua_close));
}
#endif

int main(void)
{
    RUN(test_thread_exits_after_the_library_is_closed);
    RUN(test_library_without_failures_unloads);
#ifdef VK_TEST_LUA_MODULE
    RUN(test_thread_exits_after_lua_close);
#endif
    return vkt_finish();
}
