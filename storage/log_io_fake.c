/* Test backend of the log I/O seam. It performs requests on the real files
 * but completes them in a random order chosen by a seeded PRNG, can fail
 * them with a chosen errno, detects overlapping writes in flight on one file,
 * and keeps for every file it opened the image its last completed fsync
 * covered, and for every directory entry it created, unlinked or renamed the
 * name its last completed directory fsync covered, so a simulated power cut
 * can put the disk back to exactly that. */
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
        char path[PATH_MAX]; /* current name, while live */
        char dir[PATH_MAX];
        bool live; /* not unlinked (nor replaced by a rename) */
        /* The name that survives a power cut ("" = none): the file's
         * namespace as of the last directory fsync that covered it. */
        char durable_path[PATH_MAX];
        uint8_t *img; /* durable content */
        size_t img_len;
        uint64_t written_end; /* highest byte any write submitted covered */
};

/* A create, unlink or rename not yet covered by a directory fsync: what
 * the file's surviving name becomes once one is ("" = gone). */
struct fns {
        uint64_t seq;
        int file;
        char result[PATH_MAX];
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
        struct fns *ns;
        int nns, ns_cap;
        int fdmap[FAKE_FDS];
        uint64_t seq;
        int fail_op, fail_err, fail_skip, fail_count;
        struct log_io_fake_stats st;
        uint8_t *stale;
        size_t stale_len;
};

/* New space holds old bytes: overwrite what fallocate just added. */
static int fill_stale(struct fio *f, int fd, uint64_t off, uint64_t len)
{
        for (uint64_t pos = 0; pos < len;) {
                size_t n = (size_t)SL_MIN((uint64_t)f->stale_len, len - pos);
                if (pwrite(fd, f->stale, n, (off_t)(off + pos)) != (ssize_t)n)
                        return -EIO;
                pos += n;
        }
        return 0;
}

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
                /* ext4 issues an O_DIRECT write inline only when one extent
                 * maps it: a write over blocks written before and blocks
                 * never written is punted to io-wq (the log appends in
                 * order, so "written" is everything below the high mark) */
                size_t pl = e->file >= 0 ? strlen(f->files[e->file].path) : 0;
                if (pl > 4 && !strcmp(f->files[e->file].path + pl - 4, ".log")) {
                        /* segments only: index files are rewritten whole */
                        struct ffile *ff = &f->files[e->file];
                        if (r->off < ff->written_end && r->off + r->len > ff->written_end)
                                f->st.writes_over_old_and_new++;
                        if (r->off < ff->written_end)
                                f->st.block_rewrites++;
                        if (r->off + r->len > ff->written_end)
                                ff->written_end = r->off + r->len;
                }
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

static void ns_push(struct fio *f, int file, const char *result)
{
        if (f->nns == f->ns_cap) {
                f->ns_cap = f->ns_cap ? f->ns_cap * 2 : 64;
                f->ns = realloc(f->ns, sizeof(*f->ns) * (size_t)f->ns_cap);
                SL_ASSERT(f->ns);
        }
        struct fns *n = &f->ns[f->nns++];
        n->seq = ++f->seq;
        if (getenv("FAKE_NS_DEBUG"))
                fprintf(stderr, "ns %llu: %s -> %s\n", (unsigned long long)n->seq,
                        f->files[file].path, result);
        n->file = file;
        snprintf(n->result, sizeof(n->result), "%s", result);
}

/* A directory fsync issued at `seq` makes every earlier namespace change in
 * that directory durable, in order; later ones stay undoable. */
static void mark_dir_durable(struct fio *f, const char *dpath, uint64_t seq)
{
        int keep = 0;
        for (int i = 0; i < f->nns; i++) {
                struct fns *n = &f->ns[i];
                struct ffile *ff = &f->files[n->file];
                if (n->seq <= seq && strcmp(ff->dir, dpath) == 0)
                        snprintf(ff->durable_path, sizeof(ff->durable_path), "%s", n->result);
                else
                        f->ns[keep++] = *n;
        }
        f->nns = keep;
}

static int file_add(struct fio *f, const char *full)
{
        if (f->nfiles == f->cap) {
                f->cap = f->cap ? f->cap * 2 : 64;
                f->files = realloc(f->files, sizeof(*f->files) * (size_t)f->cap);
                SL_ASSERT(f->files);
        }
        int idx = f->nfiles++;
        struct ffile *ff = &f->files[idx];
        memset(ff, 0, sizeof(*ff));
        snprintf(ff->path, sizeof(ff->path), "%s", full);
        snprintf(ff->dir, sizeof(ff->dir), "%s", full);
        char *slash = strrchr(ff->dir, '/');
        if (slash)
                *slash = 0;
        ff->live = true;
        return idx;
}

static void dir_path(int dirfd, char *out, size_t n)
{
        char link[64];
        snprintf(link, sizeof(link), "/proc/self/fd/%d", dirfd);
        ssize_t m = readlink(link, out, n - 1);
        out[m > 0 ? m : 0] = 0;
}

/* The tracked live file at `full`; one we never saw is taken as durable
 * (as files found at open are) and adopted with its current content, so
 * an unlink or rename of it can be undone. -1 if there is no such file. */
static int file_at(struct fio *f, const char *full)
{
        for (int i = 0; i < f->nfiles; i++)
                if (f->files[i].live && strcmp(f->files[i].path, full) == 0)
                        return i;
        uint8_t *img;
        size_t len;
        if (read_whole(full, &img, &len) < 0)
                return -1;
        int idx = file_add(f, full);
        struct ffile *ff = &f->files[idx];
        snprintf(ff->durable_path, sizeof(ff->durable_path), "%s", full);
        ff->img = img;
        ff->img_len = len;
        return idx;
}

static int ns_unlink(struct fio *f, int dirfd, const char *name)
{
        char dpath[PATH_MAX - NAME_MAX - 2], full[PATH_MAX];
        dir_path(dirfd, dpath, sizeof(dpath));
        snprintf(full, sizeof(full), "%s/%s", dpath, name);
        int idx = file_at(f, full);
        if (unlinkat(dirfd, name, 0) < 0)
                return -errno;
        if (idx >= 0) {
                f->files[idx].live = false;
                ns_push(f, idx, "");
        }
        return 0;
}

static int fake_openat(struct fio *f, int dirfd, const char *name, int flags, mode_t mode);
static int fake_rename_now(struct log_io *io, int dirfd, const char *from, const char *to);

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
                        if (getenv("FAKE_NS_DEBUG"))
                                fprintf(stderr, "dirsync %s upto %llu\n", e->dpath,
                                        (unsigned long long)e->seq);
                        mark_dir_durable(f, e->dpath, e->seq);
                }
                return 0;
        case LOG_IO_FALLOCATE:
                if (fallocate(r->fd, 0, (off_t)r->off, r->len) < 0)
                        return -errno;
                return f->stale ? fill_stale(f, r->fd, r->off, r->len) : 0;
        case LOG_IO_UNLINK:
                return ns_unlink(f, r->fd, r->path);
        case LOG_IO_OPENAT:
                f->st.opens_async++;
                return fake_openat(f, r->fd, r->path, r->open_flags, (mode_t)r->open_mode);
        case LOG_IO_RENAMEAT:
                return fake_rename_now(&f->io, r->fd, r->path, r->path2);
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
                if (f->order == 0 || (f->order == 1 && (fake_rand(f) & 1)))
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
        if (f->order == 1)
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
        f->st.opens_sync++;
        return fake_openat(f, dirfd, name, flags, mode);
}

static int fake_openat(struct fio *f, int dirfd, const char *name, int flags, mode_t mode)
{
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
                idx = file_add(f, full);
                struct ffile *ff = &f->files[idx];
                /* Files found at open are taken as durable; new ones are not
                 * until their directory and their data are synced. */
                if (existed) {
                        snprintf(ff->durable_path, sizeof(ff->durable_path), "%s", full);
                        read_whole(full, &ff->img, &ff->img_len);
                } else {
                        ns_push(f, idx, full);
                }
        }
        f->fdmap[fd] = idx;
        return fd;
}

static int fake_unlink_now(struct log_io *io, int dirfd, const char *name)
{
        return ns_unlink((struct fio *)io, dirfd, name);
}

static int fake_rename_now(struct log_io *io, int dirfd, const char *from, const char *to)
{
        struct fio *f = (struct fio *)io;
        char dpath[PATH_MAX - NAME_MAX - 2], src[PATH_MAX], dst[PATH_MAX];
        dir_path(dirfd, dpath, sizeof(dpath));
        snprintf(src, sizeof(src), "%s/%s", dpath, from);
        snprintf(dst, sizeof(dst), "%s/%s", dpath, to);
        int si = file_at(f, src), di = file_at(f, dst);
        if (renameat(dirfd, from, dirfd, to) < 0)
                return -errno;
        if (di >= 0 && di != si) {
                f->files[di].live = false; /* replaced: its old content may come back */
                ns_push(f, di, "");
        }
        if (si >= 0) {
                snprintf(f->files[si].path, sizeof(f->files[si].path), "%s", dst);
                ns_push(f, si, dst);
        }
        return 0;
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
        /* First every name that would not survive goes, then every durable
         * name comes back with its durable content: a file renamed over
         * another gets the old one back under that name. */
        for (int i = 0; i < f->nfiles; i++) {
                struct ffile *ff = &f->files[i];
                if (ff->live && strcmp(ff->durable_path, ff->path) != 0)
                        unlink(ff->path);
        }
        for (int i = 0; i < f->nfiles; i++) {
                struct ffile *ff = &f->files[i];
                if (ff->durable_path[0]) {
                        int fd =
                            open(ff->durable_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                        if (fd >= 0) {
                                if (ff->img_len)
                                        SL_ASSERT(pwrite(fd, ff->img, ff->img_len, 0) ==
                                                  (ssize_t)ff->img_len);
                                close(fd);
                        }
                }
                free(ff->img);
                ff->img = NULL;
        }
        f->nfiles = 0;
        f->nns = 0;
        for (int i = 0; i < FAKE_FDS; i++)
                f->fdmap[i] = -1;
}

void log_io_fake_set_stale(struct log_io *io, const void *pattern, size_t len)
{
        struct fio *f = (struct fio *)io;
        free(f->stale);
        f->stale = NULL;
        f->stale_len = 0;
        if (pattern && len) {
                f->stale = malloc(len);
                SL_ASSERT(f->stale);
                memcpy(f->stale, pattern, len);
                f->stale_len = len;
        }
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
        free(f->ns);
        free(f->stale);
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
    .unlink_now = fake_unlink_now,
    .rename_now = fake_rename_now,
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
