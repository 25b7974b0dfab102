/* safetensors.c: reads safetensors weight files (mmap + jansson header) and
 * converts F16/BF16 tensors to float32. Every malformed input is a status. */
#include "engine_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* A real header is a few tens of kilobytes; anything past this is not a
 * weights file we want to parse into memory. */
#define ST_MAX_HEADER (100u << 20)

/* ------------------------------------------------------------------------ */
/* Half-precision conversion                                                */
/* ------------------------------------------------------------------------ */

float eng_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13); /* inf or nan */
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else {
        /* subnormal half: normalise into a float exponent */
        int e = -1;
        do {
            e++;
            man <<= 1;
        } while (!(man & 0x400));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

float eng_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* ------------------------------------------------------------------------ */
/* Header parsing                                                           */
/* ------------------------------------------------------------------------ */

static int dtype_size(const char *s, enum st_dtype *dt) {
    static const struct {
        const char *name;
        int size;
        enum st_dtype dt;
    } tab[] = {
        {"F32", 4, ST_F32},   {"F16", 2, ST_F16},   {"BF16", 2, ST_BF16}, {"F64", 8, ST_OTHER},
        {"I64", 8, ST_OTHER}, {"I32", 4, ST_OTHER}, {"I16", 2, ST_OTHER}, {"I8", 1, ST_OTHER},
        {"U8", 1, ST_OTHER},  {"BOOL", 1, ST_OTHER}, {"U16", 2, ST_OTHER}, {"U32", 4, ST_OTHER},
        {"U64", 8, ST_OTHER}, {"F8_E4M3", 1, ST_OTHER}, {"F8_E5M2", 1, ST_OTHER},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (!strcmp(s, tab[i].name)) {
            *dt = tab[i].dt;
            return tab[i].size;
        }
    return 0;
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const struct st_tensor *)a)->name, ((const struct st_tensor *)b)->name);
}

static int cmp_tensor_offset(const void *a, const void *b) {
    const struct st_tensor *x = *(const struct st_tensor *const *)a;
    const struct st_tensor *y = *(const struct st_tensor *const *)b;
    return x->data < y->data ? -1 : x->data > y->data;
}

/* Fills t from one header entry; data_base/data_size describe the byte
 * buffer after the header. */
static enum eng_status parse_entry(const char *path, const char *name, json_t *v,
                                   const unsigned char *data_base, size_t data_size,
                                   struct st_tensor *t, char *err, size_t errlen) {
    json_t *dtype = json_object_get(v, "dtype");
    json_t *shape = json_object_get(v, "shape");
    json_t *offs = json_object_get(v, "data_offsets");
    if (!json_is_object(v) || !json_is_string(dtype) || !json_is_array(shape) ||
        !json_is_array(offs) || json_array_size(offs) != 2)
        return eng_errf(ENG_ERR_FORMAT, err, errlen,
                        "%s: tensor %s: header entry needs dtype, shape and data_offsets", path,
                        name);
    int esize = dtype_size(json_string_value(dtype), &t->dtype);
    if (!esize)
        return eng_errf(ENG_ERR_DTYPE, err, errlen, "%s: tensor %s: unknown dtype %s", path, name,
                        json_string_value(dtype));
    snprintf(t->dtype_name, sizeof t->dtype_name, "%s", json_string_value(dtype));
    if (json_array_size(shape) > ST_MAX_DIMS)
        return eng_errf(ENG_ERR_FORMAT, err, errlen, "%s: tensor %s: %zu dimensions", path, name,
                        json_array_size(shape));
    t->ndim = (int)json_array_size(shape);
    t->numel = 1;
    for (int i = 0; i < t->ndim; i++) {
        json_t *d = json_array_get(shape, (size_t)i);
        json_int_t n = json_is_integer(d) ? json_integer_value(d) : -1;
        if (n < 0 || n > ((json_int_t)1 << 40))
            return eng_errf(ENG_ERR_FORMAT, err, errlen, "%s: tensor %s: bad dimension %d", path,
                            name, i);
        t->shape[i] = n;
        if (n && t->numel > ((int64_t)1 << 40) / n)
            return eng_errf(ENG_ERR_FORMAT, err, errlen, "%s: tensor %s: shape too large", path,
                            name);
        t->numel *= n;
    }
    json_t *b = json_array_get(offs, 0), *e = json_array_get(offs, 1);
    if (!json_is_integer(b) || !json_is_integer(e))
        return eng_errf(ENG_ERR_FORMAT, err, errlen, "%s: tensor %s: data_offsets not integers",
                        path, name);
    json_int_t begin = json_integer_value(b), end = json_integer_value(e);
    if (begin < 0 || end < begin || (uint64_t)end > data_size)
        return eng_errf(ENG_ERR_FORMAT, err, errlen,
                        "%s: tensor %s: data_offsets [%lld, %lld] outside the %zu data bytes",
                        path, name, (long long)begin, (long long)end, data_size);
    if ((uint64_t)(end - begin) != (uint64_t)t->numel * (uint64_t)esize)
        return eng_errf(ENG_ERR_FORMAT, err, errlen,
                        "%s: tensor %s: %lld bytes for %lld elements of %s", path, name,
                        (long long)(end - begin), (long long)t->numel, t->dtype_name);
    t->data = data_base + begin;
    t->nbytes = (size_t)(end - begin);
    return ENG_OK;
}

static enum eng_status parse_header(struct st_file *f, const char *hdr, size_t hlen,
                                    const unsigned char *data_base, size_t data_size, char *err,
                                    size_t errlen) {
    json_error_t jerr;
    json_t *root = json_loadb(hdr, hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return eng_errf(ENG_ERR_FORMAT, err, errlen, "%s: header is not valid JSON: %s (at byte %d)",
                        f->path, jerr.text, jerr.position);
    enum eng_status st = ENG_OK;
    if (!json_is_object(root)) {
        st = eng_errf(ENG_ERR_FORMAT, err, errlen, "%s: header is not a JSON object", f->path);
        goto out;
    }
    size_t n = json_object_size(root);
    f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
    if (!f->tensors) {
        st = eng_errf(ENG_ERR_NOMEM, err, errlen, "%s: out of memory", f->path);
        goto out;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (!strcmp(key, "__metadata__")) continue;
        struct st_tensor *t = &f->tensors[f->ntensors];
        st = parse_entry(f->path, key, val, data_base, data_size, t, err, errlen);
        if (st != ENG_OK) goto out;
        if (!(t->name = strdup(key))) {
            st = eng_errf(ENG_ERR_NOMEM, err, errlen, "%s: out of memory", f->path);
            goto out;
        }
        f->ntensors++;
    }
    /* Overlapping tensors would alias each other's bytes: a corrupt or
     * hostile file. Check by sorting on the start offset. */
    struct st_tensor **by_off = malloc((size_t)(f->ntensors ? f->ntensors : 1) * sizeof *by_off);
    if (!by_off) {
        st = eng_errf(ENG_ERR_NOMEM, err, errlen, "%s: out of memory", f->path);
        goto out;
    }
    for (int i = 0; i < f->ntensors; i++) by_off[i] = &f->tensors[i];
    qsort(by_off, (size_t)f->ntensors, sizeof *by_off, cmp_tensor_offset);
    for (int i = 1; i < f->ntensors && st == ENG_OK; i++) {
        const struct st_tensor *p = by_off[i - 1], *q = by_off[i];
        if (q->data < p->data + p->nbytes)
            st = eng_errf(ENG_ERR_FORMAT, err, errlen,
                          "%s: tensors %s and %s overlap in the data section", f->path, p->name,
                          q->name);
    }
    free(by_off);
    qsort(f->tensors, (size_t)f->ntensors, sizeof *f->tensors, cmp_tensor_name);
out:
    json_decref(root);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Public (engine-internal) API                                             */
/* ------------------------------------------------------------------------ */

enum eng_status st_open(const char *path, struct st_file *f, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    snprintf(f->path, sizeof f->path, "%s", path);
    /* O_NONBLOCK: a FIFO given as the weights would block open() until a
     * writer appears; it is refused below as not a regular file. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return eng_errf(ENG_ERR_IO, err, errlen, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return eng_errf(ENG_ERR_IO, err, errlen, "%s: not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    if (size < 8) {
        close(fd);
        return eng_errf(ENG_ERR_FORMAT, err, errlen,
                        "%s: %zu bytes, too short for a safetensors header", path, size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return eng_errf(ENG_ERR_IO, err, errlen, "%s: mmap: %s", path, strerror(errno));
    f->map = map;
    f->map_size = size;

    const unsigned char *p = map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | p[i];
    enum eng_status st;
    if (hlen > size - 8) {
        st = eng_errf(ENG_ERR_FORMAT, err, errlen,
                      "%s: header length %llu runs past the end of the file (%zu bytes)", path,
                      (unsigned long long)hlen, size);
    } else if (hlen < 2 || hlen > ST_MAX_HEADER) {
        st = eng_errf(ENG_ERR_FORMAT, err, errlen, "%s: implausible header length %llu", path,
                      (unsigned long long)hlen);
    } else {
        st = parse_header(f, (const char *)p + 8, (size_t)hlen, p + 8 + hlen,
                          size - 8 - (size_t)hlen, err, errlen);
    }
    if (st != ENG_OK) st_close(f);
    return st;
}

void st_close(struct st_file *f) {
    for (int i = 0; i < f->ntensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    if (f->map) munmap(f->map, f->map_size);
    f->tensors = NULL;
    f->map = NULL;
    f->ntensors = 0;
}

const struct st_tensor *st_find(const struct st_file *f, const char *name) {
    struct st_tensor key = {.name = (char *)name};
    return bsearch(&key, f->tensors, (size_t)f->ntensors, sizeof key, cmp_tensor_name);
}

static void format_shape(char *buf, size_t len, int ndim, const int64_t *shape) {
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < len) snprintf(buf + o, len - o, "]");
}

enum eng_status st_read_f32(const struct st_file *f, const char *name, int ndim,
                            const int64_t *shape, float *dst, char *err, size_t errlen) {
    const struct st_tensor *t = st_find(f, name);
    if (!t) return eng_errf(ENG_ERR_MISSING, err, errlen, "%s: missing tensor %s", f->path, name);
    bool same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char want[96], got[96];
        format_shape(want, sizeof want, ndim, shape);
        format_shape(got, sizeof got, t->ndim, t->shape);
        return eng_errf(ENG_ERR_SHAPE, err, errlen, "%s: tensor %s has shape %s, expected %s",
                        f->path, name, got, want);
    }
    /* Element-wise copies: the mapping gives no alignment guarantee. */
    switch (t->dtype) {
    case ST_F32:
        memcpy(dst, t->data, t->nbytes);
        break;
    case ST_F16:
    case ST_BF16:
        for (int64_t i = 0; i < t->numel; i++) {
            uint16_t h = (uint16_t)(t->data[2 * i] | (t->data[2 * i + 1] << 8));
            dst[i] = t->dtype == ST_F16 ? eng_f16_to_f32(h) : eng_bf16_to_f32(h);
        }
        break;
    default:
        return eng_errf(ENG_ERR_DTYPE, err, errlen,
                        "%s: tensor %s has dtype %s; F32, F16 or BF16 required", f->path, name,
                        t->dtype_name);
    }
    return ENG_OK;
}
