/* Test backend of the log I/O seam. It performs requests on the real files
 * but completes them in a random order chosen by a seeded PRNG, can fail
 * them with a chosen errno, detects overlapping writes in flight on one file,
 * and keeps for every file it opened the image its last completed fsync
 * covered, so a simulated power cut can put the disk back to exactly that. */
#include "log_io.h"
#include "sl_common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FAKE_FDS 4096

struct ffile {
        char path[PATH_MAX];
        char dir[PATH_MAX];
        bool live;         /* not unlinked */
        bool name_durable; /* its directory entry survives a power cut */
        uint64_t create_seq;
        uint8_t *img; /* durable content */
        size_t img_len;
};

struct fent {
        struct log_io_req *req;
        struct fent *next;
        int file; /* ffile index or -1 */
        uint8_t *snap;
        size_t snap_len;
        uint64_t seq; /* for directory fsyncs: creations before this */
        char dpath[PATH_MAX];
};

struct fio {
        struct log_io io;
        uint64_t rng;
        int order;
        struct fent *q, *q_tail;
        struct ffile *files;
        int nfiles, cap;
        int fdmap[FAKE_FDS];
        uint64_t seq;
        int fail_op, fail_err, fail_skip, fail_count;
        struct log_io_fake_stats st;
};

static uint64_t fake_rand(struct fio *f)
{
        f->rng ^= f->rng << 13;
        f->rng ^= f->rng >> 7;
        f->rng ^= f->rng << 17;
        return f->rng;
}

/* fd numbers are reused after close: trust the map only while the fd
 * still names the file we recorded. */
static int fd_file(struct fio *f, int fd)
{
        if (fd < 0 || fd >= FAKE_FDS || f->fdmap[fd] < 0)
                return -1;
        char link[64], path[PATH_MAX];
        snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, path, sizeof(path) - 1);
        if (n <= 0)
                return -1;
        path[n] = 0;
        struct ffile *ff = &f->files[f->fdmap[fd]];
        return ff->live && !strcmp(ff->path, path) ? f->fdmap[fd] : -1;
}

static int read_whole(const char *path, uint8_t **out, size_t *len)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        struct stat st;
        fstat(fd, &st);
        uint8_t *b = malloc((size_t)st.st_size + 1);
        SL_ASSERT(b);
        size_t got = 0;
        while (got < (size_t)st.st_size) {
                ssize_t n = pread(fd, b + got, (size_t)st.st_size - got, (off_t)got);
                if (n <= 0)
                        break;
                got += (size_t)n;
        }
        close(fd);
        *out = b;
        *len = got;
        return 0;
}

static bool fails(struct fio *f, const struct log_io_req *r)
{
        if (f->fail_count == 0)
                return false;
        bool data = r->op == LOG_IO_WRITE || r->op == LOG_IO_FDATASYNC || r->op == LOG_IO_FSYNC ||
                    r->op == LOG_IO_FALLOCATE;
        if (f->fail_op ? r->op != f->fail_op : !data)
                return false;
        if (f->fail_skip > 0) {
                f->fail_skip--;
                return false;
        }
        if (f->fail_count > 0)
                f->fail_count--;
        return true;
}

static void fake_submit(struct log_io *io, struct log_io_req *r)
{
        struct fio *f = (struct fio *)io;
        struct fent *e = calloc(1, sizeof(*e));
        SL_ASSERT(e);
        e->req = r;
        e->file = fd_file(f, r->fd);
        if (r->op == LOG_IO_WRITE) {
                /* The rule under test: two writes in flight on one file must
                 * never touch the same bytes, the device would not order them. */
                uint64_t same = 1;
                for (struct fent *o = f->q; o; o = o->next) {
                        if (o->req->op != LOG_IO_WRITE || o->req->fd != r->fd)
                                continue;
                        same++;
                        if (o->req->off < r->off + r->len && r->off < o->req->off + o->req->len)
                                f->st.overlap_violations++;
                }
                if (same > f->st.max_inflight_writes_per_fd)
                        f->st.max_inflight_writes_per_fd = same;
        }
        if ((r->op == LOG_IO_FDATASYNC || r->op == LOG_IO_FSYNC) && e->file >= 0) {
                /* What an fsync makes durable is what had completed when it was
                 * issued: snapshot now, promote at completion. */
                read_whole(f->files[e->file].path, &e->snap, &e->snap_len);
        } else if (r->op == LOG_IO_FSYNC || r->op == LOG_IO_FDATASYNC) {
                char link[64];
                snprintf(link, sizeof(link), "/proc/self/fd/%d", r->fd);
                ssize_t n = readlink(link, e->dpath, sizeof(e->dpath) - 1);
                e->dpath[n > 0 ? n : 0] = 0;
                e->seq = f->seq;
        }
        if (f->q_tail)
                f->q_tail->next = e;
        else
                f->q = e;
        f->q_tail = e;
}

static int fake_flush(struct log_io *io)
{
        (void)io;
        return 0;
}

static void mark_dir_durable(struct fio *f, const char *dpath, uint64_t seq)
{
        for (int i = 0; i < f->nfiles; i++)
                if (f->files[i].create_seq <= seq && strcmp(f->files[i].dir, dpath) == 0)
                        f->files[i].name_durable = true;
}

static int perform(struct fio *f, struct fent *e)
{
        struct log_io_req *r = e->req;
        ssize_t n;
        if (fails(f, r))
                return -f->fail_err;
        switch (r->op) {
        case LOG_IO_WRITE:
                f->st.writes++;
                n = pwrite(r->fd, r->buf, r->len, (off_t)r->off);
                return n < 0 ? -errno : (int)n;
        case LOG_IO_READ:
                f->st.reads++;
                n = pread(r->fd, r->buf, r->len, (off_t)r->off);
                return n < 0 ? -errno : (int)n;
        case LOG_IO_FDATASYNC:
        case LOG_IO_FSYNC:
                f->st.fsyncs++;
                if (e->file >= 0) {
                        struct ffile *ff = &f->files[e->file];
                        free(ff->img);
                        ff->img = e->snap;
                        ff->img_len = e->snap_len;
                        e->snap = NULL;
                } else {
                        mark_dir_durable(f, e->dpath, e->seq);
                }
                return 0;
        case LOG_IO_FALLOCATE:
                return fallocate(r->fd, 0, (off_t)r->off, r->len) < 0 ? -errno : 0;
        case LOG_IO_UNLINK: {
                char link[64], dpath[PATH_MAX], full[PATH_MAX + NAME_MAX + 2];
                snprintf(link, sizeof(link), "/proc/self/fd/%d", r->fd);
                ssize_t m = readlink(link, dpath, sizeof(dpath) - 1);
                dpath[m > 0 ? m : 0] = 0;
                snprintf(full, sizeof(full), "%s/%s", dpath, r->path);
                for (int i = 0; i < f->nfiles; i++)
                        if (strcmp(f->files[i].path, full) == 0)
                                f->files[i].live = false;
                return unlinkat(r->fd, r->path, 0) < 0 ? -errno : 0;
        }
        }
        return -EINVAL;
}

static void complete(struct fio *f, struct fent *e)
{
        int res = perform(f, e);
        free(e->snap);
        struct log_io_req *r = e->req;
        free(e);
        f->io.inflight--;
        r->cb(r, res);
}

static int run(struct fio *f, bool at_least_one)
{
        struct fent *list = f->q;
        f->q = f->q_tail = NULL;
        int n = 0;
        for (struct fent *e = list; e; e = e->next)
                n++;
        if (!n)
                return 0;
        struct fent **v = malloc(sizeof(*v) * (size_t)n);
        SL_ASSERT(v);
        int i = 0, chosen = 0;
        for (struct fent *e = list; e; e = e->next)
                v[i++] = e;
        /* Chosen ones move to the front of v, in random order; the rest go
         * back on the queue in submission order. */
        struct fent **keep = malloc(sizeof(*keep) * (size_t)n);
        int nkeep = 0;
        for (i = 0; i < n; i++) {
                if (f->order == 0 || (fake_rand(f) & 1))
                        v[chosen++] = v[i];
                else
                        keep[nkeep++] = v[i];
        }
        if (chosen == 0 && at_least_one) {
                v[chosen++] = keep[0];
                memmove(keep, keep + 1, sizeof(*keep) * (size_t)--nkeep);
        }
        for (i = 0; i < nkeep; i++) {
                keep[i]->next = i + 1 < nkeep ? keep[i + 1] : NULL;
        }
        if (nkeep) {
                /* Requests submitted by callbacks below queue behind these. */
                f->q = keep[0];
                f->q_tail = keep[nkeep - 1];
        }
        if (f->order)
                for (i = chosen - 1; i > 0; i--) {
                        int j = (int)(fake_rand(f) % (uint64_t)(i + 1));
                        struct fent *t = v[i];
                        v[i] = v[j];
                        v[j] = t;
                }
        for (i = 0; i < chosen; i++)
                complete(f, v[i]);
        free(keep);
        free(v);
        return chosen;
}

static int fake_reap(struct log_io *io)
{
        return run((struct fio *)io, false);
}

static int fake_wait(struct log_io *io)
{
        return run((struct fio *)io, true);
}

static int fake_open(struct log_io *io, int dirfd, const char *name, int flags, mode_t mode)
{
        struct fio *f = (struct fio *)io;
        bool existed = faccessat(dirfd, name, F_OK, 0) == 0;
        int fd = openat(dirfd, name, flags | O_CLOEXEC, mode);
        if (fd < 0)
                return -errno;
        SL_ASSERT(fd < FAKE_FDS);
        char link[64], full[PATH_MAX];
        snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
        ssize_t m = readlink(link, full, sizeof(full) - 1);
        full[m > 0 ? m : 0] = 0;
        int idx = -1;
        for (int i = 0; i < f->nfiles; i++)
                if (f->files[i].live && strcmp(f->files[i].path, full) == 0)
                        idx = i;
        if (idx < 0) {
                if (f->nfiles == f->cap) {
                        f->cap = f->cap ? f->cap * 2 : 64;
                        f->files = realloc(f->files, sizeof(*f->files) * (size_t)f->cap);
                        SL_ASSERT(f->files);
                }
                idx = f->nfiles++;
                struct ffile *ff = &f->files[idx];
                memset(ff, 0, sizeof(*ff));
                snprintf(ff->path, sizeof(ff->path), "%s", full);
                snprintf(ff->dir, sizeof(ff->dir), "%s", full);
                char *slash = strrchr(ff->dir, '/');
                if (slash)
                        *slash = 0;
                ff->live = true;
                ff->create_seq = ++f->seq;
                /* Files found at open are taken as durable; new ones are not
                 * until their directory and their data are synced. */
                ff->name_durable = existed;
                if (existed)
                        read_whole(full, &ff->img, &ff->img_len);
        }
        f->fdmap[fd] = idx;
        return fd;
}

static int fake_fsync_now(struct log_io *io, int fd)
{
        struct fio *f = (struct fio *)io;
        struct log_io_req r = {.op = LOG_IO_FSYNC, .fd = fd};
        struct fent e = {.req = &r, .file = fd_file(f, fd)};
        if (e.file >= 0) {
                read_whole(f->files[e.file].path, &e.snap, &e.snap_len);
        } else {
                char link[64];
                snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
                ssize_t n = readlink(link, e.dpath, sizeof(e.dpath) - 1);
                e.dpath[n > 0 ? n : 0] = 0;
                e.seq = f->seq;
        }
        if (fsync(fd) < 0) {
                free(e.snap);
                return -errno;
        }
        int rc = perform(f, &e);
        free(e.snap);
        return rc;
}

void log_io_fake_power_cut(struct log_io *io)
{
        struct fio *f = (struct fio *)io;
        struct fent *e = f->q;
        while (e) {
                struct fent *n = e->next;
                free(e->snap);
                free(e);
                io->inflight--;
                e = n;
        }
        f->q = f->q_tail = NULL;
        for (int i = 0; i < f->nfiles; i++) {
                struct ffile *ff = &f->files[i];
                if (!ff->live)
                        continue;
                if (!ff->name_durable) {
                        unlink(ff->path);
                } else {
                        int fd = open(ff->path, O_WRONLY | O_TRUNC | O_CLOEXEC);
                        if (fd >= 0) {
                                if (ff->img_len)
                                        SL_ASSERT(pwrite(fd, ff->img, ff->img_len, 0) ==
                                                  (ssize_t)ff->img_len);
                                close(fd);
                        }
                }
                ff->live = false;
                free(ff->img);
                ff->img = NULL;
        }
        f->nfiles = 0;
        for (int i = 0; i < FAKE_FDS; i++)
                f->fdmap[i] = -1;
}

void log_io_fake_set_order(struct log_io *io, int mode)
{
        ((struct fio *)io)->order = mode;
}

void log_io_fake_fail(struct log_io *io, int op, int err, int skip, int count)
{
        struct fio *f = (struct fio *)io;
        f->fail_op = op;
        f->fail_err = err;
        f->fail_skip = skip;
        f->fail_count = count;
}

void log_io_fake_stats(struct log_io *io, struct log_io_fake_stats *st)
{
        *st = ((struct fio *)io)->st;
}

static void fake_destroy(struct log_io *io)
{
        struct fio *f = (struct fio *)io;
        if (!f)
                return;
        for (int i = 0; i < f->nfiles; i++)
                free(f->files[i].img);
        free(f->files);
        struct fent *e = f->q;
        while (e) {
                struct fent *n = e->next;
                free(e->snap);
                free(e);
                e = n;
        }
        free(f);
}

static const struct log_io_ops fake_ops = {
    .submit = fake_submit,
    .flush = fake_flush,
    .reap = fake_reap,
    .wait = fake_wait,
    .open = fake_open,
    .fsync_now = fake_fsync_now,
    .destroy = fake_destroy,
};

struct log_io *log_io_fake_create(uint64_t seed)
{
        struct fio *f = calloc(1, sizeof(*f));
        if (!f)
                return NULL;
        f->io.ops = &fake_ops;
        f->rng = seed * 0x9E3779B97F4A7C15ull + 1;
        f->order = 1;
        for (int i = 0; i < FAKE_FDS; i++)
                f->fdmap[i] = -1;
        return &f->io;
}
