/* The I/O seam between the storage engine and whoever owns the io_uring.
 * The log queues requests and gets completions through callbacks; a backend
 * decides how they reach the kernel: io_uring (own ring or a worker's), or a
 * fake for tests that reorders completions, injects errors and simulates a
 * power cut. */
#ifndef LOG_IO_H
#define LOG_IO_H

#include <errno.h>
#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct io_uring;
struct io_uring_cqe;

enum log_io_op {
        LOG_IO_WRITE = 1, /* pwrite(fd, buf, len, off) */
        LOG_IO_READ,      /* pread(fd, buf, len, off) */
        LOG_IO_FDATASYNC, /* fdatasync(fd) */
        LOG_IO_FSYNC,     /* fsync(fd): directories */
        LOG_IO_FALLOCATE, /* fallocate(fd, 0, off, len) */
        LOG_IO_UNLINK,    /* unlinkat(fd, path, 0) */
        LOG_IO_OPENAT,    /* openat(fd, path, open_flags, open_mode); res: the new fd */
        LOG_IO_RENAMEAT,  /* renameat(fd, path, fd, path2): within one directory */
};

struct log_io_req;
/* res: bytes for READ/WRITE, 0 for the others, or -errno. */
typedef void (*log_io_cb)(struct log_io_req *req, int res);

/* Owned by the caller and lent to the backend from submit until its
 * callback runs; buf and path are lent for as long. */
struct log_io_req {
        uint8_t op;
        int fd;
        void *buf;
        uint32_t len;
        uint64_t off;
        const char *path;
        const char *path2; /* RENAMEAT: the new name */
        int open_flags;
        uint32_t open_mode;
        log_io_cb cb;
        struct log_io_req *next; /* backend-private queue link */
};

struct log_io;
struct log_io_ops {
        /* Queue a request. Never fails: a full submission queue keeps it on
         * a backlog until the next flush. */
        void (*submit)(struct log_io *io, struct log_io_req *req);
        /* Hand queued requests to the kernel. Returns how many, or -errno. */
        int (*flush)(struct log_io *io);
        /* Run callbacks for finished requests without blocking; returns how
         * many ran. With a worker-owned ring this only drains the backlog:
         * the worker passes our CQEs to log_io_uring_complete(). */
        int (*reap)(struct log_io *io);
        /* Block until at least one request finished (tools and tests only). */
        int (*wait)(struct log_io *io);
        /* Synchronous namespace and sync calls for cold paths (open, roll,
         * recovery, snapshot). Return an fd / 0 or -errno. */
        int (*open)(struct log_io *io, int dirfd, const char *name, int flags, mode_t mode);
        int (*fsync_now)(struct log_io *io, int fd);
        /* unlinkat(dirfd, name, 0) and renameat within one directory: they
         * go through the seam so the fake can undo what no directory fsync
         * covered. */
        int (*unlink_now)(struct log_io *io, int dirfd, const char *name);
        int (*rename_now)(struct log_io *io, int dirfd, const char *from, const char *to);
        void (*destroy)(struct log_io *io);
        /* Optional. Have every completion signal `eventfd` (a worker's wake
         * eventfd) so the owner may sleep while requests are in flight. */
        int (*notify)(struct log_io *io, int eventfd);
        /* Optional. True while requests are queued but not yet handed to
         * the kernel: only a flush, not a completion, moves them on. */
        bool (*unsubmitted)(const struct log_io *io);
};

struct log_io {
        const struct log_io_ops *ops;
        uint32_t inflight; /* submitted, callback not yet run */
        bool notifies;     /* completions signal the owner's eventfd */
};

static inline void log_io_submit(struct log_io *io, struct log_io_req *req)
{
        io->inflight++;
        io->ops->submit(io, req);
}

/* Ask the backend to signal `eventfd` on every completion. Returns 0, or
 * -EOPNOTSUPP when it cannot (the fake; a borrowed ring, whose owner is
 * woken by its own ring already): the owner must then keep polling while
 * anything is in flight. */
static inline int log_io_notify(struct log_io *io, int eventfd)
{
        int rc = io->ops->notify ? io->ops->notify(io, eventfd) : -EOPNOTSUPP;
        io->notifies = rc == 0;
        return rc;
}

/* io_uring backend. With ring == NULL it creates and owns a ring of
 * `entries`; otherwise it borrows the worker's ring and tags its SQEs'
 * user_data with `tag` (1..7 in the pointer's low bits) so the worker can
 * route CQEs back through log_io_uring_complete(). */
struct log_io *log_io_uring_create(struct io_uring *ring, unsigned entries, unsigned tag);
/* For a borrowed ring: returns 1 and runs the callback if the CQE is ours,
 * 0 otherwise. */
int log_io_uring_complete(struct log_io *io, const struct io_uring_cqe *cqe);

/* Fake backend for tests: see log_io_fake.c. */
struct log_io *log_io_fake_create(uint64_t seed);
/* Completion order: 0 FIFO, 1 random subset in random order (default),
 * 2 held: a poll completes nothing, each wait the oldest request only. */
void log_io_fake_set_order(struct log_io *io, int mode);
/* Fail the next `count` requests of `op` (0 = any data op) with -err, after
 * `skip` matching ones succeed. count < 0: fail forever. */
void log_io_fake_fail(struct log_io *io, int op, int err, int skip, int count);
/* Simulated power cut: drop every request in flight without running its
 * callback, put each tracked file back to what its last completed fsync
 * covered, and put each directory back to what its last completed fsync
 * covered: creates, unlinks and renames after it are undone. */
void log_io_fake_power_cut(struct log_io *io);
/* Fill the space every later LOG_IO_FALLOCATE adds with copies of
 * `pattern` (the stale bytes of a recycled file, say) instead of zeros, so
 * a power cut that takes back the zero-fill writes no fdatasync covered
 * shows them again. NULL: zeros. The pattern is copied. */
void log_io_fake_set_stale(struct log_io *io, const void *pattern, size_t len);
struct log_io_fake_stats {
        uint64_t writes, fsyncs, reads, overlap_violations, max_inflight_writes_per_fd;
        uint64_t opens_sync, opens_async;
        /* writes covering both blocks written before and never-written
         * ones (ext4 punts those to io-wq) */
        uint64_t writes_over_old_and_new;
        /* segment writes starting in a block an earlier write covered (the
         * partly filled tail block's rewrite) */
        uint64_t block_rewrites;
};
void log_io_fake_stats(struct log_io *io, struct log_io_fake_stats *st);

#endif
