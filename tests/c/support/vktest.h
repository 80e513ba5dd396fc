/*
 * A small test framework for the C suite: checks that report the place and
 * carry on, and a closing line "N passed, N failed".
 */
#ifndef VKTEST_H
#define VKTEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern int vkt_passed;
extern int vkt_failed;
extern const char *vkt_current;

#define VKT_CHECK_(cond, ...)                                                    \
    do {                                                                         \
        if (cond) {                                                              \
            vkt_passed++;                                                        \
        } else {                                                                 \
            vkt_failed++;                                                        \
            fprintf(stderr, "FAIL %s:%d [%s]: ", __FILE__, __LINE__, vkt_current); \
            fprintf(stderr, __VA_ARGS__);                                        \
            fputc('\n', stderr);                                                 \
        }                                                                        \
    } while (0)

#define CHECK(cond) VKT_CHECK_((cond), "%s", #cond)
#define CHECK_EQ_INT(a, b)                                                       \
    do {                                                                         \
        long long va_ = (long long)(a), vb_ = (long long)(b);                    \
        VKT_CHECK_(va_ == vb_, "%s == %s (%lld != %lld)", #a, #b, va_, vb_);     \
    } while (0)
#define CHECK_EQ_STR(a, b)                                                       \
    do {                                                                         \
        const char *sa_ = (a), *sb_ = (b);                                       \
        VKT_CHECK_(sa_ && sb_ && strcmp(sa_, sb_) == 0, "%s == %s (\"%s\" != \"%s\")", \
                   #a, #b, sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)");           \
    } while (0)
/* A call that must succeed; prints vk_last_error() otherwise. */
#define CHECK_OK(call)                                                           \
    do {                                                                         \
        vk_status st_ = (call);                                                  \
        VKT_CHECK_(st_ == VK_OK, "%s -> %d (%s)", #call, (int)st_, vk_last_error()); \
    } while (0)
/* A call that must fail with code and exactly the message text. */
#define CHECK_FAILS(call, code, text)                                            \
    do {                                                                         \
        vk_status st_ = (call);                                                  \
        VKT_CHECK_(st_ == (code) && strcmp(vk_last_error(), (text)) == 0,        \
                   "%s -> %d \"%s\", want %d \"%s\"", #call, (int)st_,           \
                   vk_last_error(), (int)(code), (text));                        \
    } while (0)

/* Runs one test function under a name. */
#define RUN(fn)                                                                  \
    do {                                                                         \
        vkt_current = #fn;                                                       \
        fprintf(stderr, "-- %s\n", #fn);                                         \
        fn();                                                                    \
    } while (0)

/* A wait or timeout of ms, stretched by $VK_TEST_TIME_SCALE (a whole
 * number, default 1): the test command sets it for the Valgrind run, where
 * everything in the test process runs many times slower. Only bounds are
 * scaled, never what a test asserts about ordering or counts. */
long long vkt_scaled_ms(long long ms);

/* Prints "N passed, N failed" and returns the exit status for main(). */
int vkt_finish(void);

#endif
