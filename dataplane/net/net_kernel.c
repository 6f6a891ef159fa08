/* What the two kernel-socket backends share: accepting a socket into the
 * generic layer and closing it when the connection is released. */
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net.h"

void net_kernel_accepted(struct sl_worker *w, int fd, uint8_t proto)
{
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct sockaddr_storage peer;
        socklen_t len = sizeof(peer);
        if (getpeername(fd, (struct sockaddr *)&peer, &len) != 0)
                memset(&peer, 0, sizeof(peer));
        if (net_conn_accepted(w, fd, proto, &peer) != 0)
                close(fd);
}

void net_kernel_release(struct sl_worker *w, struct sl_conn *c)
{
        (void)w;
        if (c->fd >= 0)
                close(c->fd);
        c->fd = -1;
}
