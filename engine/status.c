/* status.c: status names and the error-message helper every engine file uses. */
#include "engine_impl.h"

#include <stdarg.h>
#include <stdio.h>

const char *eng_status_name(enum eng_status s) {
    switch (s) {
    case ENG_OK: return "ok";
    case ENG_ERR_ARG: return "invalid_argument";
    case ENG_ERR_NOMEM: return "out_of_memory";
    case ENG_ERR_IO: return "io";
    case ENG_ERR_FORMAT: return "format";
    case ENG_ERR_MISSING: return "missing_tensor";
    case ENG_ERR_SHAPE: return "shape";
    case ENG_ERR_DTYPE: return "dtype";
    case ENG_ERR_NOT_JPEG: return "not_jpeg";
    case ENG_ERR_IMAGE: return "invalid_image";
    case ENG_ERR_TOO_LARGE: return "too_large";
    case ENG_ERR_UNSUPPORTED: return "unsupported_image";
    case ENG_ERR_CANCELLED: return "cancelled";
    case ENG_ERR_DECODE_LIMIT: return "decode_limit";
    }
    return "unknown";
}

enum eng_status eng_errf(enum eng_status st, char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return st;
}
