/*
 * The stalled resolver (resolvers.h).
 */
#include "resolvers.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

/* Binds a UDP socket on port 53 of a loopback address nobody else uses and
 * points /etc/resolv.conf at it, for this process only. The socket stays
 * open and unread: queries are accepted and never answered. */
bool vkt_stall_resolver(void)
{
    if (unshare(CLONE_NEWNS) != 0) {
        fprintf(stderr, "unshare(CLONE_NEWNS): %s (the test needs root)\n", strerror(errno));
        return false;
    }
    if (mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) != 0) {
        fprintf(stderr, "making / private: %s\n", strerror(errno));
        return false;
    }
    int udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    char nameserver[32] = "";
    for (int i = 1; udp >= 0 && i < 50 && nameserver[0] == '\0'; i++) {
        snprintf(nameserver, sizeof nameserver, "127.53.%d.1", i);
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(53) };
        inet_pton(AF_INET, nameserver, &sa.sin_addr);
        if (bind(udp, (struct sockaddr *)&sa, sizeof sa) != 0)
            nameserver[0] = '\0';
    }
    if (nameserver[0] == '\0') {
        fprintf(stderr, "no loopback address for the silent name server\n");
        return false;
    }
    char path[] = "/tmp/vk-resolv-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return false;
    char text[128];
    int len = snprintf(text, sizeof text, "nameserver %s\noptions timeout:30 attempts:1\n",
                       nameserver);
    bool written = write(fd, text, (size_t)len) == len;
    close(fd);
    bool mounted = written && mount(path, "/etc/resolv.conf", "none", MS_BIND, NULL) == 0;
    if (!mounted)
        fprintf(stderr, "bind-mounting /etc/resolv.conf: %s\n", strerror(errno));
    unlink(path);
    return mounted;
}
