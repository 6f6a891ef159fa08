/* io_uring backend of the log I/O seam. Owns a ring (tests, tools, the
 * metadata log on the control thread) or borrows a worker's ring, in which
 * case the worker routes our tagged CQEs back here. Nothing here blocks
 * except wait(), which only tools and tests call. */
#include "log_io.h"
#include "sl_common.h"

#include <errno.h>
#include <stdio.h> /* renameat */
#include <fcntl.h>
#include <liburing.h>
#include <stdlib.h>
#include <unistd.h>

struct uio {
        struct log_io io;
        struct io_uring *ring;
        struct io_uring own_ring;
        bool owned;
        unsigned tag;
        struct log_io_req *backlog, *backlog_tail; /* did not fit in the SQ */
};

static bool uio_prep(struct uio *u, struct log_io_req *r)
{
        struct io_uring_sqe *sqe = io_uring_get_sqe(u->ring);
        if (!sqe)
                return false;
        switch (r->op) {
        case LOG_IO_WRITE:
                io_uring_prep_write(sqe, r->fd, r->buf, r->len, r->off);
                break;
        case LOG_IO_READ:
                io_uring_prep_read(sqe, r->fd, r->buf, r->len, r->off);
                break;
        case LOG_IO_FDATASYNC:
                io_uring_prep_fsync(sqe, r->fd, IORING_FSYNC_DATASYNC);
                break;
        case LOG_IO_FSYNC:
                io_uring_prep_fsync(sqe, r->fd, 0);
                break;
        case LOG_IO_FALLOCATE:
                io_uring_prep_fallocate(sqe, r->fd, 0, r->off, r->len);
                break;
        case LOG_IO_UNLINK:
                io_uring_prep_unlinkat(sqe, r->fd, r->path, 0);
                break;
        case LOG_IO_OPENAT:
                io_uring_prep_openat(sqe, r->fd, r->path, r->open_flags | O_CLOEXEC, r->open_mode);
                break;
        case LOG_IO_RENAMEAT:
                io_uring_prep_renameat(sqe, r->fd, r->path, r->fd, r->path2, 0);
                break;
        default:
                SL_ASSERT(!"bad log_io op");
        }
        io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)r | u->tag);
        return true;
}

static void uio_submit(struct log_io *io, struct log_io_req *r)
{
        struct uio *u = (struct uio *)io;
        r->next = NULL;
        if (!u->backlog && uio_prep(u, r))
                return;
        /* SQ full (a normal case): keep order, retry at the next flush. */
        if (u->backlog_tail)
                u->backlog_tail->next = r;
        else
                u->backlog = r;
        u->backlog_tail = r;
}

/* Move queued requests into SQEs while the ring has room. */
static void uio_backlog_prep(struct uio *u)
{
        while (u->backlog && uio_prep(u, u->backlog)) {
                u->backlog = u->backlog->next;
                if (!u->backlog)
                        u->backlog_tail = NULL;
        }
}

static int uio_flush(struct log_io *io)
{
        struct uio *u = (struct uio *)io;
        int total = 0;
        for (;;) {
                uio_backlog_prep(u);
                if (!u->owned)
                        return total; /* the worker submits its ring */
                int n = io_uring_submit(u->ring);
                if (n < 0 && n != -EBUSY && n != -EAGAIN)
                        return n;
                if (n > 0)
                        total += n;
                if (!u->backlog || n <= 0)
                        return total;
        }
}

static void uio_run(struct uio *u, uint64_t data, int res)
{
        struct log_io_req *r = (struct log_io_req *)(uintptr_t)(data & ~(uint64_t)7);
        u->io.inflight--;
        r->cb(r, res);
}

int log_io_uring_complete(struct log_io *io, const struct io_uring_cqe *cqe)
{
        struct uio *u = (struct uio *)io;
        if ((cqe->user_data & 7) != u->tag)
                return 0;
        uio_run(u, cqe->user_data, cqe->res);
        return 1;
}

static int uio_reap(struct log_io *io)
{
        struct uio *u = (struct uio *)io;
        int n = 0;
        if (!u->owned) {
                uio_flush(io);
                return 0;
        }
        struct io_uring_cqe *cqe;
        while (io_uring_peek_cqe(u->ring, &cqe) == 0) {
                uint64_t data = cqe->user_data;
                int res = cqe->res;
                io_uring_cqe_seen(u->ring, cqe);
                uio_run(u, data, res);
                n++;
        }
        return n;
}

/* Submit what is queued and wait for a completion in one io_uring_enter
 * (plus one per SQ-full of backlog). */
static int uio_wait(struct log_io *io)
{
        struct uio *u = (struct uio *)io;
        if (!u->owned)
                return -EINVAL;
        if (io->inflight == 0) {
                int rc = uio_flush(io);
                return rc < 0 ? rc : 0;
        }
        for (;;) {
                uio_backlog_prep(u);
                int rc = io_uring_submit_and_wait(u->ring, u->backlog ? 0 : 1);
                if (rc < 0 && rc != -EINTR && rc != -EBUSY && rc != -EAGAIN)
                        return rc;
                /* With a backlog left, reaping below makes room first. */
                if (!u->backlog || rc <= 0)
                        break;
        }
        return uio_reap(io);
}

static int uio_open(struct log_io *io, int dirfd, const char *name, int flags, mode_t mode)
{
        (void)io;
        int fd = openat(dirfd, name, flags | O_CLOEXEC, mode);
        return fd < 0 ? -errno : fd;
}

static int uio_fsync_now(struct log_io *io, int fd)
{
        (void)io;
        return fsync(fd) < 0 ? -errno : 0;
}

static int uio_unlink_now(struct log_io *io, int dirfd, const char *name)
{
        (void)io;
        return unlinkat(dirfd, name, 0) < 0 ? -errno : 0;
}

static int uio_rename_now(struct log_io *io, int dirfd, const char *from, const char *to)
{
        (void)io;
        return renameat(dirfd, from, dirfd, to) < 0 ? -errno : 0;
}

static void uio_destroy(struct log_io *io)
{
        struct uio *u = (struct uio *)io;
        if (!u)
                return;
        if (u->owned)
                io_uring_queue_exit(&u->own_ring);
        free(u);
}

/* The kernel signals the eventfd after it posts each CQE, so a CQE that
 * lands after the owner's last reap leaves the eventfd readable until the
 * owner reads it on waking: the owner cannot sleep through it. */
static int uio_notify(struct log_io *io, int eventfd)
{
        struct uio *u = (struct uio *)io;
        if (!u->owned)
                return -EOPNOTSUPP;
        return io_uring_register_eventfd(u->ring, eventfd);
}

static bool uio_unsubmitted(const struct log_io *io)
{
        const struct uio *u = (const struct uio *)io;
        return u->backlog || (u->owned && io_uring_sq_ready(u->ring));
}

static const struct log_io_ops uio_ops = {
    .submit = uio_submit,
    .flush = uio_flush,
    .reap = uio_reap,
    .wait = uio_wait,
    .open = uio_open,
    .fsync_now = uio_fsync_now,
    .unlink_now = uio_unlink_now,
    .rename_now = uio_rename_now,
    .destroy = uio_destroy,
    .notify = uio_notify,
    .unsubmitted = uio_unsubmitted,
};

struct log_io *log_io_uring_create(struct io_uring *ring, unsigned entries, unsigned tag)
{
        struct uio *u = calloc(1, sizeof(*u));
        if (!u)
                return NULL;
        u->io.ops = &uio_ops;
        if (ring) {
                if (tag < 1 || tag > 7) {
                        free(u);
                        return NULL;
                }
                u->ring = ring;
                u->tag = tag;
                return &u->io;
        }
        if (io_uring_queue_init(entries ? entries : 256, &u->own_ring, 0) < 0) {
                free(u);
                return NULL;
        }
        u->ring = &u->own_ring;
        u->owned = true;
        u->tag = 0; /* we own every CQE */
        return &u->io;
}
