/* labels.c: class names, built in (ImageNet-1k) or read from a text file. */
#include "engine_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* build/gen/labels_data.c, generated from engine/imagenet_labels.txt */
extern const char eng_builtin_labels[];

struct eng_labels {
    int count;
    char **names; /* [count], pointers into text */
    char *text;   /* owned copy of the file, newlines replaced by NULs */
};

/* Splits text (owned by l) into lines; a final newline is optional and
 * '\r' before '\n' is dropped. */
static enum eng_status split_lines(struct eng_labels *l, const char *what, char *err,
                                   size_t errlen) {
    size_t len = strlen(l->text);
    int n = 0;
    for (size_t i = 0; i < len; i++)
        if (l->text[i] == '\n') n++;
    if (len && l->text[len - 1] != '\n') n++;
    l->names = calloc((size_t)(n ? n : 1), sizeof *l->names);
    if (!l->names) return eng_errf(ENG_ERR_NOMEM, err, errlen, "out of memory");
    char *p = l->text;
    for (int i = 0; i < n; i++) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        size_t ll = strlen(p);
        if (ll && p[ll - 1] == '\r') p[--ll] = 0;
        if (!ll)
            return eng_errf(ENG_ERR_FORMAT, err, errlen, "%s: line %d is empty", what, i + 1);
        l->names[i] = p;
        p = nl ? nl + 1 : p + ll;
    }
    l->count = n;
    return ENG_OK;
}

enum eng_status eng_labels_load(const char *path, int expected, struct eng_labels **out,
                                char *err, size_t errlen) {
    *out = NULL;
    struct eng_labels *l = calloc(1, sizeof *l);
    if (!l) return eng_errf(ENG_ERR_NOMEM, err, errlen, "out of memory");
    enum eng_status st = ENG_OK;
    const char *what = path ? path : "built-in ImageNet labels";
    if (!path) {
        l->text = strdup(eng_builtin_labels);
        if (!l->text) st = eng_errf(ENG_ERR_NOMEM, err, errlen, "out of memory");
    } else {
        /* Opened without blocking and checked to be a regular file: a FIFO
         * would otherwise block open() (and the start-up) until a writer
         * appears. */
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        struct stat sb;
        FILE *f = NULL;
        if (fd < 0) {
            st = eng_errf(ENG_ERR_IO, err, errlen, "%s: %s", path, strerror(errno));
        } else if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            close(fd);
            st = eng_errf(ENG_ERR_IO, err, errlen, "%s: not a regular file", path);
        } else if (!(f = fdopen(fd, "rb"))) {
            close(fd);
            st = eng_errf(ENG_ERR_IO, err, errlen, "%s: %s", path, strerror(errno));
        } else {
            /* labels files are small; refuse anything absurd */
            if (fseek(f, 0, SEEK_END) == 0) {
                long n = ftell(f);
                rewind(f);
                if (n < 0 || n > (64 << 20))
                    st = eng_errf(ENG_ERR_FORMAT, err, errlen, "%s: not a labels file (%ld bytes)", path, n);
                else if (!(l->text = malloc((size_t)n + 1)))
                    st = eng_errf(ENG_ERR_NOMEM, err, errlen, "out of memory");
                else if (fread(l->text, 1, (size_t)n, f) != (size_t)n)
                    st = eng_errf(ENG_ERR_IO, err, errlen, "%s: read error", path);
                else {
                    l->text[n] = 0;
                    if (strlen(l->text) != (size_t)n)
                        st = eng_errf(ENG_ERR_FORMAT, err, errlen, "%s: contains a NUL byte", path);
                }
            } else {
                st = eng_errf(ENG_ERR_IO, err, errlen, "%s: cannot seek", path);
            }
            fclose(f);
        }
    }
    if (st == ENG_OK) st = split_lines(l, what, err, errlen);
    if (st == ENG_OK && expected > 0 && l->count != expected)
        st = eng_errf(ENG_ERR_FORMAT, err, errlen, "%s: %d labels, the model has %d classes", what,
                      l->count, expected);
    if (st != ENG_OK) {
        eng_labels_free(l);
        return st;
    }
    *out = l;
    return ENG_OK;
}

void eng_labels_free(struct eng_labels *l) {
    if (!l) return;
    free(l->names);
    free(l->text);
    free(l);
}

int eng_labels_count(const struct eng_labels *l) {
    return l->count;
}

const char *eng_labels_get(const struct eng_labels *l, int i) {
    return (l && i >= 0 && i < l->count) ? l->names[i] : NULL;
}
