/* image.c: JPEG decoding (libjpeg-turbo, EXIF orientation, PIL's colour
 * conversions) and torchvision's evaluation transform, bit-exact with Pillow. */

#include "engine.h"

#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h> /* before jpeglib.h, which uses FILE */
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

#include <jerror.h> /* after jpeglib.h: the JWRN_ and JERR_ codes */

/* ------------------------------------------------------------------------ */
/* Defaults and messages                                                    */
/* ------------------------------------------------------------------------ */

void eng_preproc_default(struct eng_preproc *pp) {
    *pp = (struct eng_preproc){
        .resize = 256,
        .crop = 224,
        .interp = ENG_INTERP_BILINEAR,
        .mean = {0.485f, 0.456f, 0.406f},
        .std = {0.229f, 0.224f, 0.225f},
    };
}

void eng_image_limits_default(struct eng_image_limits *lim) {
    *lim = (struct eng_image_limits){
        .max_width = 16384,
        .max_height = 16384,
        .max_pixels = 40000000,
        .max_coef_bytes = (int64_t)192 << 20,
        .max_scan_blocks = 16000000,
    };
}

/* Writes a message into the caller's optional buffer and returns st, so an
 * error path is one statement. */
static enum eng_status set_err(char *err, size_t errlen, enum eng_status st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static enum eng_status set_err(char *err, size_t errlen, enum eng_status st, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return st;
}

/* ------------------------------------------------------------------------ */
/* Format sniffing                                                          */
/* ------------------------------------------------------------------------ */

/* ISO base media files (HEIF, AVIF) start with an "ftyp" box: size, "ftyp",
 * major brand, minor version, compatible brands. AVIF is often labelled with
 * the generic "mif1" major brand and "avif" among the compatible ones. */
static const char *sniff_ftyp(const unsigned char *p, size_t len) {
    if (len < 12 || memcmp(p + 4, "ftyp", 4)) return NULL;
    size_t box = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
    if (box > len) box = len;
    static const char *const heif[] = {"heic", "heix", "heim", "heis",
                                       "hevc", "hevx", "mif1", "msf1"};
    const char *found = NULL;
    for (size_t off = 8; off + 4 <= box; off += off == 8 ? 8 : 4) { /* skip minor version */
        if (!memcmp(p + off, "avif", 4) || !memcmp(p + off, "avis", 4)) return "AVIF";
        for (size_t i = 0; i < sizeof heif / sizeof heif[0]; i++)
            if (!memcmp(p + off, heif[i], 4)) found = "HEIF";
    }
    return found;
}

const char *eng_image_sniff(const void *data, size_t len) {
    const unsigned char *p = data;
    if (!p || len < 2) return NULL;
    /* libjpeg itself only requires the SOI marker; whatever follows is its
     * business, and a broken stream after SOI is a corrupt JPEG. */
    if (p[0] == 0xFF && p[1] == 0xD8) return "JPEG";
    if (len >= 8 && !memcmp(p, "\x89PNG\r\n\x1a\n", 8)) return "PNG";
    if (len >= 6 && (!memcmp(p, "GIF87a", 6) || !memcmp(p, "GIF89a", 6))) return "GIF";
    if (len >= 12 && !memcmp(p, "RIFF", 4) && !memcmp(p + 8, "WEBP", 4)) return "WebP";
    if (len >= 4 && (!memcmp(p, "II*\0", 4) || !memcmp(p, "MM\0*", 4))) return "TIFF";
    if (len >= 4 && p[0] == 'P' && p[1] == 'K' &&
        ((p[2] == 3 && p[3] == 4) || (p[2] == 5 && p[3] == 6) || (p[2] == 7 && p[3] == 8)))
        return "ZIP";
    if (len >= 5 && !memcmp(p, "%PDF-", 5)) return "PDF";
    const char *iso = sniff_ftyp(p, len);
    if (iso) return iso;
    if (len >= 14 && p[0] == 'B' && p[1] == 'M') return "BMP"; /* 14-byte file header */
    return NULL;
}

/* Fills err for a buffer that is not a JPEG, naming what it looks like. */
static enum eng_status not_jpeg(const unsigned char *p, size_t len, char *err, size_t errlen) {
    const char *fmt = eng_image_sniff(p, len);
    if (fmt) return set_err(err, errlen, ENG_ERR_NOT_JPEG, "not a JPEG (looks like %s)", fmt);
    char hex[3 * 8] = "";
    for (size_t i = 0, n = 0; i < len && i < 8; i++)
        n += (size_t)snprintf(hex + n, sizeof hex - n, i ? " %02x" : "%02x", p[i]);
    return set_err(err, errlen, ENG_ERR_NOT_JPEG,
                   "not a JPEG (unknown format, %zu bytes starting %s)", len, hex);
}

/* ------------------------------------------------------------------------ */
/* EXIF orientation                                                         */
/* ------------------------------------------------------------------------ */

static unsigned rd16(const unsigned char *p, int le) {
    return le ? (unsigned)p[0] | (unsigned)p[1] << 8 : (unsigned)p[0] << 8 | p[1];
}

static uint32_t rd32(const unsigned char *p, int le) {
    return le ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24
              : (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Orientation tag (0x0112) of IFD0 in an APP1 payload "Exif\0\0" + TIFF.
 * Returns 1..8, or 1 when absent or unreadable. Follows Pillow's reading:
 * the first value of a SHORT/LONG/SSHORT/SLONG entry whatever its count,
 * the last entry when repeated, entries before a truncation kept. Every
 * offset is checked against n before use. */
static int exif_orientation(const unsigned char *p, size_t n) {
    if (n < 6 || memcmp(p, "Exif\0\0", 6)) return 1;
    p += 6, n -= 6; /* offsets below are relative to the TIFF header */
    if (n < 8) return 1;
    int le;
    if (p[0] == 'I' && p[1] == 'I')
        le = 1;
    else if (p[0] == 'M' && p[1] == 'M')
        le = 0;
    else
        return 1;
    if (rd16(p + 2, le) != 42) return 1;
    uint32_t ifd = rd32(p + 4, le);
    if (ifd > n - 2) return 1;
    unsigned count = rd16(p + ifd, le);
    int orientation = 1;
    for (size_t i = 0, e = (size_t)ifd + 2; i < count && n >= 12 && e <= n - 12; i++, e += 12) {
        if (rd16(p + e, le) != 0x0112) continue;
        unsigned type = rd16(p + e + 2, le);
        uint32_t cnt = rd32(p + e + 4, le);
        size_t size = type == 3 || type == 8 ? 2 : type == 4 || type == 9 ? 4 : 0;
        if (!size || !cnt) { /* Pillow reads e.g. a BYTE entry as bytes: no match */
            orientation = 1;
            continue;
        }
        const unsigned char *v = p + e + 8; /* values of up to 4 bytes sit inline */
        if (cnt > 4 / size) {
            uint32_t off = rd32(v, le);
            if (off > n || size > n - off) continue; /* Pillow skips such an entry */
            v = p + off;
        }
        long val = size == 2 ? (long)rd16(v, le) : (long)rd32(v, le);
        if (type == 8) val = (int16_t)val;
        if (type == 9) val = (int32_t)val;
        orientation = val >= 1 && val <= 8 ? (int)val : 1;
    }
    return orientation;
}

/* Pillow keeps the first APP1 that starts with "Exif\0". */
static int jpeg_orientation(j_decompress_ptr ci) {
    for (jpeg_saved_marker_ptr m = ci->marker_list; m; m = m->next)
        if (m->marker == JPEG_APP0 + 1 && m->data_length >= 5 && !memcmp(m->data, "Exif", 5))
            return exif_orientation(m->data, m->data_length);
    return 1;
}

/* Returns a new [oh][ow][3] copy of src turned upright, as PIL's
 * ImageOps.exif_transpose does (2 mirror, 3 rotate 180, 4 flip, 5
 * transpose, 6 rotate 90 clockwise, 7 transverse, 8 rotate 90 counter-
 * clockwise); NULL when out of memory. Each case gives the source index of
 * output pixel (0,0) and the source steps, in pixels, for x+1 and y+1. */
static uint8_t *orient_pixels(const uint8_t *src, int w, int h, int orientation, int *ow, int *oh) {
    ptrdiff_t W = w, last_row = (ptrdiff_t)(h - 1) * W, start, dx, dy;
    switch (orientation) {
    case 2:
        start = W - 1, dx = -1, dy = W;
        break;
    case 3:
        start = last_row + W - 1, dx = -1, dy = -W;
        break;
    case 4:
        start = last_row, dx = 1, dy = -W;
        break;
    case 5:
        start = 0, dx = W, dy = 1;
        break;
    case 6:
        start = last_row, dx = -W, dy = 1;
        break;
    case 7:
        start = last_row + W - 1, dx = -W, dy = -1;
        break;
    case 8:
        start = W - 1, dx = W, dy = -1;
        break;
    default:
        start = 0, dx = 1, dy = W;
        break;
    }
    *ow = orientation >= 5 ? h : w;
    *oh = orientation >= 5 ? w : h;
    uint8_t *dst = malloc((size_t)w * h * 3);
    if (!dst) return NULL;
    uint8_t *q = dst;
    for (int y = 0; y < *oh; y++) {
        const uint8_t *s = src + 3 * (start + y * dy);
        for (int x = 0; x < *ow; x++, s += 3 * dx, q += 3)
            q[0] = s[0], q[1] = s[1], q[2] = s[2];
    }
    return dst;
}

/* ------------------------------------------------------------------------ */
/* Colour conversion                                                        */
/* ------------------------------------------------------------------------ */

/* Pillow decodes every 4-component JPEG as "CMYK;I" (Adobe's inverted
 * polarity, assumed whether or not the Adobe marker is present), then
 * convert("RGB") runs Convert.c cmyk2rgb:
 *   nk = 255 - k; out = CLIP8(nk - MULDIV255(c, nk)),
 *   MULDIV255(a, b) = (t + (t >> 8)) >> 8 with t = a * b + 128. */
static void cmyk_inverted_to_rgb(uint8_t *dst, const uint8_t *src, int w) {
    for (int x = 0; x < w; x++, src += 4, dst += 3) {
        int nk = src[3]; /* 255 - (255 - raw k) */
        for (int c = 0; c < 3; c++) {
            int t = (255 - src[c]) * nk + 128;
            int v = nk - ((t + (t >> 8)) >> 8);
            dst[c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* libjpeg glue: the only place that uses setjmp                            */
/* ------------------------------------------------------------------------ */

/* Progressive scans beyond this mean a crafted file (real encoders write
 * about 10); libjpeg-turbo's own tools stop at 500 as well. The work limit
 * bounds large images; this bounds the per-scan overhead of small ones. */
#define MAX_SCANS 500

struct jpeg_fail {
    struct jpeg_error_mgr pub; /* first: libjpeg hands us &pub as cinfo->err */
    jmp_buf jmp;
    enum eng_status why; /* set before a longjmp of our own (limit, cancel) */
};

/* One decode or probe. libjpeg's state lives here rather than in
 * jpeg_run's frame, so after a longjmp it is still valid to clean up. */
struct jpeg_job {
    const unsigned char *data;
    size_t len;
    struct eng_image_limits lim;
    int decode;    /* 0: header only */
    int min_short; /* > 0: decode at a reduced DCT scale when possible */
    char *err;
    size_t errlen;

    struct eng_image_info info; /* out */
    uint8_t *px;                /* out: [h][w][3] as stored, before orientation */
    int w, h;

    struct jpeg_decompress_struct ci;
    struct jpeg_fail fail;
    struct jpeg_progress_mgr progress;
    int last_scan;       /* the scan whose blocks scan_blocks already counts */
    int64_t scan_blocks; /* blocks entropy-decoded so far, summed over scans */
    uint8_t *row;        /* [w][4] one CMYK scanline */
};

static void fail_exit(j_common_ptr ci) {
    longjmp(((struct jpeg_fail *)ci->err)->jmp, 1);
}

/* libjpeg reports corrupt data as warnings (level -1) and carries on,
 * filling what is missing with gray; e.g. a truncated file gets a fake EOI.
 * Those become errors. A few warnings are about harmless oddities that
 * Pillow accepts too and stay warnings. Trace messages (level >= 0) are
 * ignored. */
static void fail_emit(j_common_ptr ci, int level) {
    if (level >= 0) return;
    switch (ci->err->msg_code) {
    case JWRN_EXTRANEOUS_DATA: /* junk between segments, pixels intact */
    case JWRN_ADOBE_XFORM:     /* unknown transform code, decoded as usual */
    case JWRN_JFIF_MAJOR:
    case JWRN_BOGUS_ICC:
        ci->err->num_warnings++;
        return;
    default:
        fail_exit(ci);
    }
}

static void fail_output(j_common_ptr ci) {
    (void)ci; /* never print to stderr from a library */
}

/* libjpeg's progress hook, called before every iMCU row it reads or
 * writes. Each new scan is charged the blocks of the components it covers
 * when it starts, so a file whose scans would exceed the work limit stops
 * at the first scan over it, not after. The caller's check runs here too,
 * so a deadline or a departed client stops a long decode mid-way. */
static void work_guard(j_common_ptr c) {
    j_decompress_ptr ci = (j_decompress_ptr)c;
    struct jpeg_job *job = (struct jpeg_job *)((char *)c->progress - offsetof(struct jpeg_job, progress));
    if (ci->global_state >= 0 && ci->input_scan_number > job->last_scan && ci->comps_in_scan > 0) {
        job->last_scan = ci->input_scan_number;
        if (job->last_scan > MAX_SCANS) {
            job->fail.why = ENG_ERR_IMAGE;
            fail_exit(c);
        }
        for (int i = 0; i < ci->comps_in_scan; i++) {
            const jpeg_component_info *cp = ci->cur_comp_info[i];
            if (cp) job->scan_blocks += (int64_t)cp->width_in_blocks * cp->height_in_blocks;
        }
        if (job->scan_blocks > job->lim.max_scan_blocks) {
            job->fail.why = ENG_ERR_DECODE_LIMIT;
            fail_exit(c);
        }
    }
    if (job->lim.check && job->lim.check(job->lim.check_arg, job->scan_blocks)) {
        job->fail.why = ENG_ERR_CANCELLED;
        fail_exit(c);
    }
}

/* Turns the error that stopped libjpeg into a status and a message. */
static enum eng_status jpeg_status(struct jpeg_job *job) {
    struct jpeg_error_mgr *e = &job->fail.pub;
    char msg[JMSG_LENGTH_MAX];
    if (job->fail.why == ENG_ERR_DECODE_LIMIT)
        return set_err(job->err, job->errlen, ENG_ERR_DECODE_LIMIT,
                       "decoding this %dx%d JPEG (%d scans so far) needs more than %lld "
                       "block-scans of work, the decode work limit",
                       job->info.width, job->info.height, job->last_scan,
                       (long long)job->lim.max_scan_blocks);
    if (job->fail.why == ENG_ERR_IMAGE)
        return set_err(job->err, job->errlen, ENG_ERR_IMAGE,
                       "corrupt JPEG: more than %d progressive scans", MAX_SCANS);
    if (job->fail.why == ENG_ERR_CANCELLED)
        return set_err(job->err, job->errlen, ENG_ERR_CANCELLED, "decoding was stopped");
    e->format_message((j_common_ptr)&job->ci, msg);
    const char *m = msg;
    if (!strncmp(m, "Corrupt JPEG data: ", 19)) m += 19;
    switch (e->msg_code) {
    case JWRN_JPEG_EOF:
        return set_err(job->err, job->errlen, ENG_ERR_IMAGE,
                       "truncated JPEG: data ends before the image is complete");
    case JERR_OUT_OF_MEMORY:
        return set_err(job->err, job->errlen, ENG_ERR_NOMEM, "out of memory decoding a %dx%d JPEG",
                       job->info.width, job->info.height);
    case JERR_IMAGE_TOO_BIG:
        return set_err(job->err, job->errlen, ENG_ERR_TOO_LARGE, "JPEG too large: %s", m);
    case JERR_BAD_PRECISION:
        return set_err(job->err, job->errlen, ENG_ERR_UNSUPPORTED,
                       "unsupported JPEG: %d-bit samples (only 8-bit is supported)",
                       e->msg_parm.i[0]);
    case JERR_SOF_UNSUPPORTED:
    case JERR_ARITH_NOTIMPL:
    case JERR_NOT_COMPILED:
    case JERR_NOTIMPL:
    case JERR_CONVERSION_NOTIMPL:
    case JERR_CCIR601_NOTIMPL:
    case JERR_FRACT_SAMPLE_NOTIMPL:
        return set_err(job->err, job->errlen, ENG_ERR_UNSUPPORTED, "unsupported JPEG: %s", m);
    default:
        return set_err(job->err, job->errlen, ENG_ERR_IMAGE, "corrupt JPEG: %s", m);
    }
}

/* Picks the smallest scale n/8 whose shorter side is still >= min_short,
 * among 1/8, 2/8, 4/8 and 8/8 only: libjpeg-turbo has SIMD for the 8x8
 * IDCT alone, and its 3/8, 5/8, 6/8 and 7/8 IDCTs are slower than a full
 * decode (7/8 took 59 ms where 8/8 took 33 on a 3000x2250 photo, 4/8 12 ms),
 * so skipping them is faster and also decodes closer to full size. */
static void choose_scale(j_decompress_ptr ci, int min_short) {
    static const unsigned nums[] = {1, 2, 4, 8};
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        ci->scale_num = nums[i];
        ci->scale_denom = 8;
        jpeg_calc_output_dimensions(ci);
        JDIMENSION s = ci->output_width < ci->output_height ? ci->output_width : ci->output_height;
        if (s >= (JDIMENSION)min_short) return;
    }
}

/* Bytes of the whole-image coefficient buffer libjpeg allocates for a
 * multi-scan file: every component's blocks, rounded up to whole MCUs, at
 * 64 coefficients of 2 bytes. */
static int64_t coef_bytes(j_decompress_ptr ci) {
    int64_t total = 0;
    for (int i = 0; i < ci->num_components; i++) {
        const jpeg_component_info *cp = &ci->comp_info[i];
        int64_t bw = ((int64_t)ci->image_width * cp->h_samp_factor + 8 * ci->max_h_samp_factor - 1) /
                     (8 * ci->max_h_samp_factor);
        int64_t bh = ((int64_t)ci->image_height * cp->v_samp_factor + 8 * ci->max_v_samp_factor - 1) /
                     (8 * ci->max_v_samp_factor);
        bw += cp->h_samp_factor - 1;
        bh += cp->v_samp_factor - 1;
        total += bw * bh * (int64_t)sizeof(JBLOCK);
    }
    return total;
}

/* Reads the header, checks it against the limits and, when job->decode,
 * decodes to 8-bit RGB in job->px. libjpeg errors longjmp back here; this
 * is the only setjmp in the engine. On error nothing stays allocated. */
static enum eng_status jpeg_run(struct jpeg_job *job) {
    struct jpeg_decompress_struct *ci = &job->ci;
    ci->err = jpeg_std_error(&job->fail.pub);
    job->fail.pub.error_exit = fail_exit;
    job->fail.pub.emit_message = fail_emit;
    job->fail.pub.output_message = fail_output;
    if (setjmp(job->fail.jmp)) {
        enum eng_status st = jpeg_status(job);
        jpeg_destroy_decompress(ci);
        free(job->px);
        free(job->row);
        job->px = job->row = NULL;
        return st;
    }
    jpeg_create_decompress(ci);
    job->progress.progress_monitor = work_guard;
    ci->progress = &job->progress;
    jpeg_mem_src(ci, job->data, job->len);
    jpeg_save_markers(ci, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(ci, TRUE);

    struct eng_image_info *info = &job->info;
    info->width = (int)ci->image_width;
    info->height = (int)ci->image_height;
    info->components = ci->num_components;
    info->progressive = ci->progressive_mode ? 1 : 0;
    info->orientation = jpeg_orientation(ci);

    /* Decompression bombs stop here, before a pixel is decoded. */
    const struct eng_image_limits *lim = &job->lim;
    int64_t w = ci->image_width, h = ci->image_height;
    enum eng_status st = ENG_OK;
    if (w > lim->max_width || h > lim->max_height || w * h > lim->max_pixels)
        st = set_err(job->err, job->errlen, ENG_ERR_TOO_LARGE,
                     "image is %lldx%lld, over the limit of %dx%d / %lld pixels", (long long)w,
                     (long long)h, lim->max_width, lim->max_height, (long long)lim->max_pixels);
    else if (ci->num_components != 1 && ci->num_components != 3 && ci->num_components != 4)
        st = set_err(job->err, job->errlen, ENG_ERR_UNSUPPORTED,
                     "unsupported JPEG: %d colour components (expected 1, 3 or 4)",
                     ci->num_components);
    else if (jpeg_has_multiple_scans(ci) && coef_bytes(ci) > lim->max_coef_bytes)
        st = set_err(job->err, job->errlen, ENG_ERR_DECODE_LIMIT,
                     "this %lldx%lld %s JPEG needs %lld MiB of coefficient memory to decode, "
                     "over the limit of %lld MiB",
                     (long long)w, (long long)h, ci->progressive_mode ? "progressive" : "multi-scan",
                     (long long)(coef_bytes(ci) >> 20), (long long)(lim->max_coef_bytes >> 20));
    if (st != ENG_OK || !job->decode) {
        jpeg_destroy_decompress(ci);
        return st;
    }

    /* Pillow's settings, so pixels match bit for bit: accurate integer
     * IDCT, fancy upsampling, libjpeg's own YCbCr/YCCK conversion. Gray is
     * replicated to RGB by libjpeg, exactly as PIL's convert("RGB"). */
    int cmyk = ci->num_components == 4;
    ci->out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    ci->dct_method = JDCT_ISLOW;
    ci->do_fancy_upsampling = TRUE;
    if (job->min_short > 0) choose_scale(ci, job->min_short);

    jpeg_start_decompress(ci); /* reads every scan of a progressive file */
    job->w = (int)ci->output_width;
    job->h = (int)ci->output_height;
    size_t stride = (size_t)job->w * 3;
    job->px = malloc(stride * (size_t)job->h);
    if (cmyk) job->row = malloc((size_t)job->w * 4);
    if (!job->px || (cmyk && !job->row)) {
        ci->err->msg_code = JERR_OUT_OF_MEMORY;
        ci->err->msg_parm.i[0] = 0;
        fail_exit((j_common_ptr)ci);
    }
    while (ci->output_scanline < ci->output_height) {
        uint8_t *dst = job->px + stride * ci->output_scanline;
        JSAMPROW row = cmyk ? job->row : dst;
        if (jpeg_read_scanlines(ci, &row, 1) != 1) break; /* cannot happen with jpeg_mem_src */
        if (cmyk) cmyk_inverted_to_rgb(dst, job->row, job->w);
    }
    jpeg_finish_decompress(ci);
    jpeg_destroy_decompress(ci);
    free(job->row);
    job->row = NULL;
    return ENG_OK;
}

/* ------------------------------------------------------------------------ */
/* Probe and decode                                                         */
/* ------------------------------------------------------------------------ */

/* Checks the buffer and the limits before libjpeg sees anything. */
static enum eng_status job_init(struct jpeg_job *job, const void *data, size_t len,
                                const struct eng_image_limits *lim, char *err, size_t errlen) {
    memset(job, 0, sizeof *job);
    job->data = data;
    job->len = len;
    job->err = err;
    job->errlen = errlen;
    if (lim)
        job->lim = *lim;
    else
        eng_image_limits_default(&job->lim);
    if (job->lim.max_width <= 0 || job->lim.max_height <= 0 || job->lim.max_pixels <= 0 ||
        job->lim.max_coef_bytes <= 0 || job->lim.max_scan_blocks <= 0)
        return set_err(err, errlen, ENG_ERR_ARG, "image limits must be positive");
    if (!data || len == 0) return set_err(err, errlen, ENG_ERR_IMAGE, "empty image (0 bytes)");
    const char *fmt = eng_image_sniff(data, len);
    if (!fmt || strcmp(fmt, "JPEG")) return not_jpeg(data, len, err, errlen);
    return ENG_OK;
}

enum eng_status eng_image_probe(const void *data, size_t len, const struct eng_image_limits *lim,
                                struct eng_image_info *info, char *err, size_t errlen) {
    struct jpeg_job job;
    enum eng_status st = job_init(&job, data, len, lim, err, errlen);
    if (st == ENG_OK) st = jpeg_run(&job);
    if (info) *info = job.info;
    return st;
}

void eng_rgb_free(struct eng_rgb *img) {
    if (!img) return;
    free(img->px);
    img->px = NULL;
    img->w = img->h = 0;
}

/* eng_image_decode, with the EXIF orientation applied only when orient. */
static enum eng_status decode_rgb(const void *data, size_t len, const struct eng_image_limits *lim,
                                  int min_short, int orient, struct eng_rgb *out, char *err,
                                  size_t errlen) {
    if (!out) return set_err(err, errlen, ENG_ERR_ARG, "eng_image_decode: out is NULL");
    *out = (struct eng_rgb){0};
    struct jpeg_job job;
    enum eng_status st = job_init(&job, data, len, lim, err, errlen);
    if (st != ENG_OK) return st;
    job.decode = 1;
    job.min_short = min_short;
    st = jpeg_run(&job);
    if (st != ENG_OK) return st;

    int o = job.info.orientation;
    if (orient && o >= 2 && o <= 8) {
        int w, h;
        uint8_t *turned = orient_pixels(job.px, job.w, job.h, o, &w, &h);
        free(job.px);
        if (!turned)
            return set_err(err, errlen, ENG_ERR_NOMEM, "out of memory applying EXIF orientation");
        job.px = turned;
        job.w = w;
        job.h = h;
    }
    *out = (struct eng_rgb){.px = job.px, .w = job.w, .h = job.h};
    return ENG_OK;
}

enum eng_status eng_image_decode(const void *data, size_t len, const struct eng_image_limits *lim,
                                 int min_short, struct eng_rgb *out, char *err, size_t errlen) {
    return decode_rgb(data, len, lim, min_short, 1, out, err, errlen);
}

/* ------------------------------------------------------------------------ */
/* Resampling: Pillow's ImagingResample for 8-bit images                    */
/* ------------------------------------------------------------------------ */

/* Separable convolution with fixed-point weights, as Pillow's Resample.c:
 * weights are computed in double exactly as precompute_coeffs does, then
 * rounded to PRECISION_BITS; the horizontal pass runs first into an 8-bit
 * image and the vertical pass reads that. Each output pixel depends only
 * on its own weights, so computing just the pixels the center crop keeps
 * gives the same values Pillow computes for them. */

#define PRECISION_BITS (32 - 8 - 2) /* 8 bits of result, 2 for overshoot */

struct filter {
    double (*fn)(double x);
    double support;
};

static double bilinear_filter(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

static double bicubic_filter(double x) {
    const double a = -0.5; /* Pillow's choice, as Keys' cubic convolution */
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

static const struct filter filters[] = {
    [ENG_INTERP_BILINEAR] = {bilinear_filter, 1.0},
    [ENG_INTERP_BICUBIC] = {bicubic_filter, 2.0},
};

/* Weights for outputs first .. first+n-1 of a resize from in_size to
 * out_size samples. */
struct coeffs {
    int ksize;   /* weights per output (the maximum tap count) */
    int *bounds; /* [n][2]: first input sample, number of taps */
    int32_t *k;  /* [n][ksize] fixed point, PRECISION_BITS */
};

static void coeffs_free(struct coeffs *c) {
    free(c->bounds);
    free(c->k);
}

static enum eng_status coeffs_init(struct coeffs *c, int in_size, int out_size, int first, int n,
                                   const struct filter *f) {
    /* Pillow's box is floats (0, in_size); the difference is exact. */
    double scale = (double)(float)in_size / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = f->support * filterscale;
    c->ksize = (int)ceil(support) * 2 + 1;
    c->bounds = malloc(sizeof(int) * 2 * (size_t)n);
    c->k = malloc(sizeof(int32_t) * (size_t)c->ksize * (size_t)n);
    double *w = malloc(sizeof(double) * (size_t)c->ksize);
    if (!c->bounds || !c->k || !w) {
        free(w);
        coeffs_free(c);
        return ENG_ERR_NOMEM;
    }
    for (int i = 0; i < n; i++) {
        int xx = first + i;
        double center = (xx + 0.5) * scale;
        double ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        if (xmax > c->ksize) xmax = c->ksize; /* cannot happen; keeps writes in bounds */
        for (int x = 0; x < xmax; x++) {
            w[x] = f->fn((x + xmin - center + 0.5) * ss);
            ww += w[x];
        }
        int32_t *k = c->k + (size_t)i * c->ksize;
        for (int x = 0; x < c->ksize; x++) {
            double v = x < xmax ? (ww != 0.0 ? w[x] / ww : w[x]) : 0.0;
            k[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS))
                         : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
        }
        c->bounds[2 * i] = xmin;
        c->bounds[2 * i + 1] = xmax;
    }
    free(w);
    return ENG_OK;
}

/* Pillow's clip8: drop the fraction (floor) and clamp to 0..255. */
static inline uint8_t clip8(int32_t ss) {
    if (ss < 0) return 0;
    ss >>= PRECISION_BITS;
    return (uint8_t)(ss > 255 ? 255 : ss);
}

/* Horizontal pass over rows [y0, y1) of src ([h][w][3]) into dst
 * ([y1-y0][n][3]) for the n outputs described by c. */
static void resample_rows(uint8_t *dst, const uint8_t *src, int w, int y0, int y1,
                          const struct coeffs *c, int n) {
    for (int y = y0; y < y1; y++) {
        const uint8_t *row = src + (size_t)y * w * 3;
        for (int i = 0; i < n; i++, dst += 3) {
            const int32_t *k = c->k + (size_t)i * c->ksize;
            const uint8_t *p = row + (size_t)c->bounds[2 * i] * 3;
            int taps = c->bounds[2 * i + 1];
            int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
            for (int x = 0; x < taps; x++, p += 3) {
                s0 += p[0] * k[x];
                s1 += p[1] * k[x];
                s2 += p[2] * k[x];
            }
            dst[0] = clip8(s0), dst[1] = clip8(s1), dst[2] = clip8(s2);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* torchvision transform                                                    */
/* ------------------------------------------------------------------------ */

/* Largest resize and crop accepted: keeps every size product far from int
 * overflow. */
#define MAX_SIDE 16384

/* int(round(d / 2.0)) for d >= 0 with Python's round: ties to even. */
static int half_round_even(int d) {
    int q = d / 2;
    return (d % 2 == 0 || q % 2 == 0) ? q : q + 1;
}

/* One axis of CenterCrop on a resized axis of n samples: output o reads
 * resized sample o + start, which exists for o in [lo, hi). A crop larger
 * than the image pads with zeros as torchvision does ((crop-n)//2 before). */
struct axis {
    int start, lo, hi;
};

static struct axis crop_axis(int n, int crop) {
    struct axis a;
    a.start = crop > n ? -((crop - n) / 2) : half_round_even(n - crop);
    a.lo = a.start < 0 ? -a.start : 0;
    a.hi = n - a.start < crop ? n - a.start : crop;
    return a;
}

enum eng_status eng_image_transform(const struct eng_rgb *img, const struct eng_preproc *pp,
                                    float *out, char *err, size_t errlen) {
    if (!img || !img->px || img->w <= 0 || img->h <= 0 || !pp || !out)
        return set_err(err, errlen, ENG_ERR_ARG, "eng_image_transform: missing image or output");
    if (pp->resize < 1 || pp->resize > MAX_SIDE || pp->crop < 1 || pp->crop > MAX_SIDE)
        return set_err(err, errlen, ENG_ERR_ARG, "resize %d and crop %d must be in 1..%d",
                       pp->resize, pp->crop, MAX_SIDE);
    if (pp->interp != ENG_INTERP_BILINEAR && pp->interp != ENG_INTERP_BICUBIC)
        return set_err(err, errlen, ENG_ERR_ARG, "unknown interpolation %d", (int)pp->interp);
    for (int c = 0; c < 3; c++)
        if (!(pp->std[c] != 0.0f))
            return set_err(err, errlen, ENG_ERR_ARG, "std[%d] is %g", c, (double)pp->std[c]);

    /* torchvision's _compute_resized_output_size: the shorter side becomes
     * resize, the longer int(resize * long / short) in double arithmetic. */
    int w = img->w, h = img->h, nw, nh;
    int shorter = w <= h ? w : h, longer = w <= h ? h : w;
    double lr = (double)((int64_t)pp->resize * longer) / shorter;
    if (lr > INT_MAX / 4)
        return set_err(err, errlen, ENG_ERR_ARG, "image %dx%d resized to %d is too elongated", w, h,
                       pp->resize);
    if (w <= h)
        nw = pp->resize, nh = (int)lr;
    else
        nh = pp->resize, nw = (int)lr;

    /* ToTensor then Normalize, in float32 as torch does: (v / 255 - mean) /
     * std for each of the 256 possible bytes. */
    float lut[3][256];
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++)
            lut[c][v] = ((float)v / 255.0f - pp->mean[c]) / pp->std[c];

    int crop = pp->crop;
    size_t plane = (size_t)crop * crop;
    struct axis ax = crop_axis(nw, crop), ay = crop_axis(nh, crop);
    if (ax.lo > 0 || ax.hi < crop || ay.lo > 0 || ay.hi < crop)
        for (int c = 0; c < 3; c++)
            for (size_t i = 0; i < plane; i++)
                out[c * plane + i] = lut[c][0];

    /* Resized columns [x0, x0 + cw) and rows [y0, y0 + ch) survive the crop. */
    int x0 = ax.lo + ax.start, cw = ax.hi - ax.lo;
    int y0 = ay.lo + ay.start, ch = ay.hi - ay.lo;
    int need_h = nw != w, need_v = nh != h; /* Pillow skips an unchanged axis */
    const struct filter *f = &filters[pp->interp];
    struct coeffs kx = {0}, ky = {0};
    uint8_t *mid = NULL;
    int32_t *acc = NULL;
    enum eng_status st = ENG_OK;

    if (need_h && (st = coeffs_init(&kx, w, nw, x0, cw, f)) != ENG_OK) goto out;
    if (need_v && (st = coeffs_init(&ky, h, nh, y0, ch, f)) != ENG_OK) goto out;

    /* The 8-bit image the vertical pass reads: mid rows are source rows
     * [r0, r1), its columns resized columns [x0, x0 + cw). Without a
     * horizontal pass it is a window on the source. */
    int r0 = need_v ? ky.bounds[0] : y0;
    int r1 = need_v ? ky.bounds[2 * (ch - 1)] + ky.bounds[2 * (ch - 1) + 1] : y0 + ch;
    const uint8_t *base;
    size_t mid_stride;
    if (need_h) {
        mid_stride = (size_t)cw * 3;
        mid = malloc(mid_stride * (size_t)(r1 - r0));
        if (!mid) {
            st = ENG_ERR_NOMEM;
            goto out;
        }
        resample_rows(mid, img->px, w, r0, r1, &kx, cw);
        base = mid;
    } else {
        mid_stride = (size_t)w * 3;
        base = img->px + (size_t)r0 * mid_stride + (size_t)x0 * 3;
    }

    /* Vertical pass, a row at a time so the inner loop runs along memory,
     * straight into the normalized CHW output. */
    size_t n3 = (size_t)cw * 3;
    if (need_v && !(acc = malloc(sizeof(int32_t) * n3))) {
        st = ENG_ERR_NOMEM;
        goto out;
    }
    for (int j = 0; j < ch; j++) {
        int oy = ay.lo + j;
        float *o0 = out + (size_t)oy * crop + ax.lo, *o1 = o0 + plane, *o2 = o1 + plane;
        if (need_v) {
            const int32_t *k = ky.k + (size_t)j * ky.ksize;
            int ymin = ky.bounds[2 * j], taps = ky.bounds[2 * j + 1];
            for (size_t i = 0; i < n3; i++)
                acc[i] = 1 << (PRECISION_BITS - 1);
            for (int t = 0; t < taps; t++) {
                const uint8_t *row = base + (size_t)(ymin + t - r0) * mid_stride;
                int32_t kt = k[t];
                for (size_t i = 0; i < n3; i++)
                    acc[i] += row[i] * kt;
            }
            for (int i = 0; i < cw; i++) {
                o0[i] = lut[0][clip8(acc[3 * i])];
                o1[i] = lut[1][clip8(acc[3 * i + 1])];
                o2[i] = lut[2][clip8(acc[3 * i + 2])];
            }
        } else {
            const uint8_t *row = base + (size_t)(y0 + j - r0) * mid_stride;
            for (int i = 0; i < cw; i++) {
                o0[i] = lut[0][row[3 * i]];
                o1[i] = lut[1][row[3 * i + 1]];
                o2[i] = lut[2][row[3 * i + 2]];
            }
        }
    }

out:
    coeffs_free(&kx);
    coeffs_free(&ky);
    free(mid);
    free(acc);
    if (st == ENG_ERR_NOMEM)
        set_err(err, errlen, st, "out of memory resizing %dx%d to %dx%d", w, h, nw, nh);
    return st;
}

enum eng_status eng_image_preprocess(const void *data, size_t len, const struct eng_preproc *pp,
                                     const struct eng_image_limits *lim, float *out, char *err,
                                     size_t errlen) {
    if (!pp || !out) return set_err(err, errlen, ENG_ERR_ARG, "eng_image_preprocess: NULL");
    struct eng_rgb img;
    /* Fast mode: decoding at a reduced DCT scale is much faster for large
     * photos; the shorter side stays at least twice the resize target, so
     * the resize still shrinks and the antialiasing filter still averages.
     * Exact mode decodes what PIL decodes: every pixel, not rotated. */
    int exact = pp->decode == ENG_DECODE_EXACT;
    int min_short = exact ? 0 : pp->resize <= INT_MAX / 2 ? 2 * pp->resize : pp->resize;
    enum eng_status st = decode_rgb(data, len, lim, min_short, !exact, &img, err, errlen);
    if (st != ENG_OK) return st;
    st = eng_image_transform(&img, pp, out, err, errlen);
    eng_rgb_free(&img);
    return st;
}
