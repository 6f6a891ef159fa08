/* Implementation of ctl_text.h. */
#include "ctl_text.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int text_reserve(struct ctl_text *t, size_t more)
{
        if (t->len + more + 1 <= t->cap)
                return 0;
        size_t cap = t->cap ? t->cap : 4096;
        while (cap < t->len + more + 1)
                cap *= 2;
        char *p = realloc(t->p, cap);
        if (!p) {
                t->oom = 1;
                return -1;
        }
        t->p = p;
        t->cap = cap;
        return 0;
}

void ctl_text_printf(struct ctl_text *t, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        char small[512];
        int n = vsnprintf(small, sizeof(small), fmt, ap);
        va_end(ap);
        if (n < 0 || text_reserve(t, (size_t)n))
                return;
        if ((size_t)n < sizeof(small)) {
                memcpy(t->p + t->len, small, (size_t)n + 1);
        } else {
                va_start(ap, fmt);
                vsnprintf(t->p + t->len, (size_t)n + 1, fmt, ap);
                va_end(ap);
        }
        t->len += (size_t)n;
}

void ctl_text_json_str(struct ctl_text *t, const char *s)
{
        ctl_text_printf(t, "\"");
        for (; *s; s++) {
                unsigned char ch = (unsigned char)*s;
                if (ch == '"' || ch == '\\')
                        ctl_text_printf(t, "\\%c", ch);
                else if (ch < 0x20)
                        ctl_text_printf(t, "\\u%04x", ch);
                else
                        ctl_text_printf(t, "%c", ch);
        }
        ctl_text_printf(t, "\"");
}

void ctl_text_free(struct ctl_text *t)
{
        free(t->p);
        memset(t, 0, sizeof(*t));
}
