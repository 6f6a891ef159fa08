/* A growable text buffer for admin responses (control thread only: not a
 * hot path, so it may allocate). */
#ifndef CTL_TEXT_H
#define CTL_TEXT_H

#include <stddef.h>

struct ctl_text {
        char *p;
        size_t len;
        size_t cap;
        int oom;
};

void ctl_text_printf(struct ctl_text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void ctl_text_json_str(struct ctl_text *t, const char *s); /* quoted, escaped */
void ctl_text_free(struct ctl_text *t);

#endif
