/* test_image.c: unit tests of engine/image.c (sniffing, JPEG decoding and its
 * failure modes, EXIF orientation, DCT scaling, the torchvision transform),
 * and parity with PIL + torchvision on the references in build/ref/. */

#include "engine.h"
#include "test.h"

#include "jpeg_bomb.h"

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <jpeglib.h>

/* ------------------------------------------------------------------------ */
/* Helpers: synthetic images and an in-memory JPEG encoder                  */
/* ------------------------------------------------------------------------ */

static uint32_t rng_state = 12345;

static uint32_t rng(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}

/* [h][w][comps] smooth gradients plus a little noise: compresses like a
 * photo, and every pixel differs from its neighbours. */
static uint8_t *make_pixels(int w, int h, int comps) {
    uint8_t *px = malloc((size_t)w * h * comps);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < comps; c++)
                px[((size_t)y * w + x) * comps + c] =
                    (uint8_t)((x * (c + 2) * 5 + y * (3 - c % 3) * 3 + (int)(rng() % 9)) & 255);
    return px;
}

struct enc {
    int comps;             /* 1, 3 or 4 */
    J_COLOR_SPACE in_cs;   /* JCS_GRAYSCALE, JCS_RGB, JCS_CMYK, JCS_UNKNOWN */
    J_COLOR_SPACE jpeg_cs; /* colour space in the file; JCS_UNKNOWN: libjpeg's default */
    int quality;           /* 0: 90 */
    int progressive, arith;
    int full_chroma;     /* no subsampling of any component */
    const uint8_t *app1; /* an APP1 payload to write, or NULL */
    size_t app1_len;
};

/* Encodes px ([h][w][o->comps]) with libjpeg into a malloc'd buffer. */
static uint8_t *encode(const uint8_t *px, int w, int h, const struct enc *o, size_t *len) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    unsigned char *buf = NULL;
    unsigned long size = 0;
    jpeg_mem_dest(&c, &buf, &size);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = o->comps;
    c.in_color_space = o->in_cs;
    jpeg_set_defaults(&c);
    if (o->jpeg_cs != JCS_UNKNOWN) jpeg_set_colorspace(&c, o->jpeg_cs);
    jpeg_set_quality(&c, o->quality ? o->quality : 90, TRUE);
    for (int i = 0; o->full_chroma && i < c.num_components; i++)
        c.comp_info[i].h_samp_factor = c.comp_info[i].v_samp_factor = 1;
    if (o->progressive) jpeg_simple_progression(&c);
    c.arith_code = o->arith ? TRUE : FALSE;
    jpeg_start_compress(&c, TRUE);
    if (o->app1) jpeg_write_marker(&c, JPEG_APP0 + 1, o->app1, (unsigned)o->app1_len);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(px + (size_t)c.next_scanline * w * o->comps);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    *len = size;
    return buf;
}

static uint8_t *encode_rgb(int w, int h, size_t *len) {
    uint8_t *px = make_pixels(w, h, 3);
    uint8_t *jpg = encode(px, w, h, &(struct enc){.comps = 3, .in_cs = JCS_RGB}, len);
    free(px);
    return jpg;
}

/* Offset of the first SOFn marker's segment (at the FF), or 0. */
static size_t find_sof(const uint8_t *p, size_t len) {
    for (size_t i = 2; i + 9 < len; i++)
        if (p[i] == 0xFF && p[i + 1] >= 0xC0 && p[i + 1] <= 0xCF && p[i + 1] != 0xC4 &&
            p[i + 1] != 0xC8 && p[i + 1] != 0xCC)
            return i;
    return 0;
}

static int max_abs_diff(const uint8_t *a, const uint8_t *b, size_t n) {
    int m = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs(a[i] - b[i]);
        if (d > m) m = d;
    }
    return m;
}

/* ------------------------------------------------------------------------ */
/* Sniffing and rejected inputs                                             */
/* ------------------------------------------------------------------------ */

static void test_sniff(void) {
    static const struct {
        const char *bytes;
        size_t len;
        const char *want;
    } cases[] = {
        {"\xFF\xD8\xFF\xE0", 4, "JPEG"},
        {"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16, "PNG"},
        {"GIF89a\x01\0\x01\0", 10, "GIF"},
        {"GIF87a\x01\0\x01\0", 10, "GIF"},
        {"RIFF\x24\0\0\0WEBPVP8 ", 16, "WebP"},
        {"BM\x36\0\0\0\0\0\0\0\x36\0\0\0", 14, "BMP"},
        {"II*\0\x08\0\0\0", 8, "TIFF"},
        {"MM\0*\0\0\0\x08", 8, "TIFF"},
        {"\0\0\0\x18"
         "ftypheic\0\0\0\0mif1heic",
         24, "HEIF"},
        {"\0\0\0\x1c"
         "ftypavif\0\0\0\0avifmif1miaf",
         28, "AVIF"},
        {"\0\0\0\x1c"
         "ftypmif1\0\0\0\0mif1avifmiaf",
         28, "AVIF"},
        {"PK\x03\x04\x14\0", 6, "ZIP"},
        {"%PDF-1.7\n", 9, "PDF"},
        {"<html><body>", 12, NULL},
        {"\0\0\0\x18"
         "ftypisom\0\0\0\0isomiso2",
         24, NULL}, /* MP4 video */
        {"RIFF\x24\0\0\0WAVEfmt ", 16, NULL},
        {"\xFF", 1, NULL},
        {"B", 1, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *got = eng_image_sniff(cases[i].bytes, cases[i].len);
        CHECK((got == NULL) == (cases[i].want == NULL) && (!got || !strcmp(got, cases[i].want)),
              "case %zu: got %s, want %s", i, got ? got : "NULL",
              cases[i].want ? cases[i].want : "NULL");
    }
    CHECK(eng_image_sniff(NULL, 0) == NULL);
    CHECK(eng_image_sniff("", 0) == NULL);
}

static void test_empty(void) {
    char err[256] = "";
    struct eng_rgb img = {(uint8_t *)1, 5, 5};
    CHECK(eng_image_decode("", 0, NULL, 0, &img, err, sizeof err) == ENG_ERR_IMAGE);
    CHECK(strstr(err, "empty"), "message: %s", err);
    CHECK(img.px == NULL && img.w == 0 && img.h == 0);
    CHECK(eng_image_decode(NULL, 0, NULL, 0, &img, NULL, 0) == ENG_ERR_IMAGE);
    struct eng_image_info info;
    err[0] = 0;
    CHECK(eng_image_probe("", 0, NULL, &info, err, sizeof err) == ENG_ERR_IMAGE);
    CHECK(strstr(err, "empty"), "message: %s", err);
    float out[3];
    struct eng_preproc pp;
    eng_preproc_default(&pp);
    CHECK(eng_image_preprocess("", 0, &pp, NULL, out, NULL, 0) == ENG_ERR_IMAGE);
}

static void test_not_jpeg(void) {
    char err[256];
    struct eng_rgb img;
    static const unsigned char png[] = "\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02";
    CHECK(eng_image_decode(png, sizeof png - 1, NULL, 0, &img, err, sizeof err) ==
          ENG_ERR_NOT_JPEG);
    CHECK(!strcmp(err, "not a JPEG (looks like PNG)"), "message: %s", err);
    CHECK(img.px == NULL);
    struct eng_image_info info;
    CHECK(eng_image_probe("GIF89a\1\0\1\0", 10, NULL, &info, err, sizeof err) == ENG_ERR_NOT_JPEG);
    CHECK(strstr(err, "GIF"), "message: %s", err);
    CHECK(eng_image_probe("<html>", 6, NULL, &info, err, sizeof err) == ENG_ERR_NOT_JPEG);
    CHECK(strstr(err, "unknown format") && strstr(err, "3c 68 74 6d"), "message: %s", err);
    CHECK(eng_image_probe("\xFF", 1, NULL, &info, err, sizeof err) == ENG_ERR_NOT_JPEG);
    /* A tiny err buffer truncates, never overflows. */
    char small[8];
    CHECK(eng_image_probe(png, sizeof png - 1, NULL, &info, small, sizeof small) ==
          ENG_ERR_NOT_JPEG);
    CHECK(strlen(small) == sizeof small - 1);
}

static void test_garbage_after_soi(void) {
    uint8_t buf[4096];
    char err[256];
    struct eng_rgb img;
    /* Only SOI, then SOI plus random bytes of many lengths. */
    for (size_t len = 2; len <= sizeof buf; len = len * 3 / 2 + 1) {
        buf[0] = 0xFF, buf[1] = 0xD8;
        for (size_t i = 2; i < len; i++)
            buf[i] = (uint8_t)rng();
        enum eng_status st = eng_image_decode(buf, len, NULL, 0, &img, err, sizeof err);
        CHECK(st == ENG_ERR_IMAGE || st == ENG_ERR_UNSUPPORTED || st == ENG_ERR_TOO_LARGE,
              "len %zu: status %d", len, st);
        CHECK(img.px == NULL && err[0]);
        struct eng_image_info info;
        st = eng_image_probe(buf, len, NULL, &info, err, sizeof err);
        CHECK(st == ENG_ERR_IMAGE || st == ENG_ERR_UNSUPPORTED || st == ENG_ERR_TOO_LARGE,
              "len %zu: probe %d", len, st);
    }
}

/* Every prefix of a valid file is an error, never a gray-filled image; so
 * is a file missing only its EOI marker, as in PIL. */
static void check_truncations(const uint8_t *jpg, size_t len, const char *what) {
    char err[256];
    struct eng_rgb img;
    size_t step = len / 97 + 1;
    for (size_t cut = 2; cut < len; cut = cut + step < len - 2 ? cut + step : cut + 1) {
        enum eng_status st = eng_image_decode(jpg, cut, NULL, 0, &img, err, sizeof err);
        CHECK(st == ENG_ERR_IMAGE, "%s cut at %zu of %zu: status %d (%s)", what, cut, len, st, err);
        CHECK(img.px == NULL);
    }
    /* Cut in the middle of the entropy-coded data: named as truncated. */
    CHECK(eng_image_decode(jpg, len * 3 / 4, NULL, 0, &img, err, sizeof err) == ENG_ERR_IMAGE);
    CHECK(strstr(err, "truncated"), "%s: message: %s", what, err);
}

static void test_truncated(void) {
    size_t len;
    uint8_t *px = make_pixels(97, 61, 3);
    uint8_t *jpg = encode(px, 97, 61, &(struct enc){.comps = 3, .in_cs = JCS_RGB}, &len);
    check_truncations(jpg, len, "baseline");
    free(jpg);
    if (t_failed_case) goto out;
    jpg = encode(px, 97, 61, &(struct enc){.comps = 3, .in_cs = JCS_RGB, .progressive = 1}, &len);
    check_truncations(jpg, len, "progressive");
    free(jpg);
out:
    free(px);
}

/* Harmless extra bytes that PIL accepts too: data after EOI (some cameras
 * append some), and junk between the image data and EOI (libjpeg's
 * "extraneous bytes before marker" warning). The pixels are unchanged. */
static void test_extra_bytes(void) {
    size_t len;
    uint8_t *jpg = encode_rgb(40, 24, &len);
    uint8_t *after = malloc(len + 1000), *before = malloc(len + 64);
    memcpy(after, jpg, len);
    for (int i = 0; i < 1000; i++)
        after[len + i] = (uint8_t)rng();
    /* More junk than the Huffman decoder's read-ahead swallows unnoticed. */
    memcpy(before, jpg, len - 2);
    for (int i = 0; i < 64; i++)
        before[len - 2 + i] = (uint8_t)(rng() % 255);
    memcpy(before + len + 62, "\xFF\xD9", 2);
    struct eng_rgb a = {0}, b = {0}, c = {0};
    enum eng_status sa = eng_image_decode(jpg, len, NULL, 0, &a, NULL, 0);
    enum eng_status sb = eng_image_decode(after, len + 1000, NULL, 0, &b, NULL, 0);
    enum eng_status sc = eng_image_decode(before, len + 64, NULL, 0, &c, NULL, 0);
    size_t n = (size_t)40 * 24 * 3;
    int ok = sa == ENG_OK && sb == ENG_OK && sc == ENG_OK && b.w == 40 && b.h == 24 && c.w == 40 &&
             c.h == 24 && !memcmp(a.px, b.px, n) && !memcmp(a.px, c.px, n);
    eng_rgb_free(&a);
    eng_rgb_free(&b);
    eng_rgb_free(&c);
    free(jpg);
    free(after);
    free(before);
    CHECK(ok, "status %d, after EOI %d, before EOI %d", sa, sb, sc);
}

/* The default limits with the size limits replaced. */
static struct eng_image_limits size_limits(int w, int h, int64_t pixels) {
    struct eng_image_limits lim;
    eng_image_limits_default(&lim);
    lim.max_width = w;
    lim.max_height = h;
    lim.max_pixels = pixels;
    return lim;
}

struct stop_at {
    int64_t blocks; /* stop once this many block-scans are reported */
    int calls;
    int64_t last;
};

static int stop_check(void *arg, int64_t blocks) {
    struct stop_at *s = arg;
    s->calls++;
    s->last = blocks;
    return blocks >= s->blocks;
}

/* Issue 14: the decode work limit stops a 9 KB file of 16384x2441 with 505
 * scans at the first scan over the limit (each scan costs every block of
 * its component: 2048 x 306 = 626688); the coefficient memory limit refuses
 * a 4-component 40 MP progressive file before a scan is decoded; the
 * caller's check is called with the running count and can stop a decode;
 * a normal progressive photo decodes under the defaults. */
static void test_decode_work_limits(void) {
    size_t len;
    char err[256] = "";
    struct eng_rgb img;
    uint8_t *bomb = t_scan_heavy_jpeg(16384, 2441, 1, 1, 505, &len);
    CHECK(len < 16384, "the bomb is %zu bytes", len);
    struct eng_image_limits lim;
    eng_image_limits_default(&lim);
    lim.max_scan_blocks = 4 * 626688; /* four whole scans */
    struct stop_at seen = {INT64_MAX, 0, 0};
    lim.check = stop_check;
    lim.check_arg = &seen;
    enum eng_status st = eng_image_decode(bomb, len, &lim, 0, &img, err, sizeof err);
    CHECK(st == ENG_ERR_DECODE_LIMIT && !img.px, "status %d (%s)", st, err);
    CHECK(strstr(err, "(5 scans so far)") && strstr(err, "work limit"), "message: %s", err);
    CHECK(seen.calls > 0 && seen.last == 4 * 626688, "check saw %lld after %d calls",
          (long long)seen.last, seen.calls);

    /* The caller's check stops it too, at the scan it asked for. */
    eng_image_limits_default(&lim);
    seen = (struct stop_at){3 * 626688, 0, 0};
    lim.check = stop_check;
    lim.check_arg = &seen;
    st = eng_image_decode(bomb, len, &lim, 0, &img, err, sizeof err);
    CHECK(st == ENG_ERR_CANCELLED && !img.px && seen.last == 3 * 626688, "status %d (%s), %lld",
          st, err, (long long)seen.last);
    free(bomb);

    /* 4 x 40 MP of coefficients (305 MiB) is refused from the header. */
    bomb = t_scan_heavy_jpeg(6324, 6324, 4, 0, 5, &len);
    eng_image_limits_default(&lim);
    seen = (struct stop_at){INT64_MAX, 0, 0};
    lim.check = stop_check;
    lim.check_arg = &seen;
    st = eng_image_decode(bomb, len, &lim, 0, &img, err, sizeof err);
    CHECK(st == ENG_ERR_DECODE_LIMIT && seen.calls == 0, "status %d (%s)", st, err);
    CHECK(strstr(err, "305 MiB of coefficient memory") && strstr(err, "192 MiB"), "message: %s",
          err);
    lim.max_coef_bytes = (int64_t)320 << 20;
    struct eng_image_info info;
    CHECK(eng_image_probe(bomb, len, &lim, &info, err, sizeof err) == ENG_OK, "%s", err);
    free(bomb);

    /* An ordinary progressive image is well inside the defaults. */
    uint8_t *px = make_pixels(640, 480, 3);
    uint8_t *jpg = encode(px, 640, 480, &(struct enc){.comps = 3, .in_cs = JCS_RGB, .progressive = 1},
                          &len);
    eng_image_limits_default(&lim);
    seen = (struct stop_at){INT64_MAX, 0, 0};
    lim.check = stop_check;
    lim.check_arg = &seen;
    st = eng_image_decode(jpg, len, &lim, 0, &img, err, sizeof err);
    CHECK(st == ENG_OK && img.w == 640, "status %d (%s)", st, err);
    CHECK(seen.last > 0 && seen.last < 40 * 7200, "a 640x480 progressive file cost %lld",
          (long long)seen.last);
    eng_rgb_free(&img);
    free(jpg);
    free(px);
}

/* A valid progressive file with 568 scans (one per coefficient, component
 * and bit plane) is stopped at 500 scans instead of costing 568 passes. */
static void test_scan_limit(void) {
    size_t len;
    unsigned char *jpg = t_scan_heavy_jpeg(16, 16, 3, 0, 568, &len);
    struct eng_rgb img;
    char err[256] = "";
    enum eng_status st = eng_image_decode(jpg, len, NULL, 0, &img, err, sizeof err);
    free(jpg);
    CHECK(st == ENG_ERR_IMAGE && img.px == NULL, "status %d (%s)", st, err);
    CHECK(strstr(err, "500 progressive scans"), "message: %s", err);
}

/* Random byte damage must never crash, leak or hang; a success is a whole
 * image of the right size (libjpeg may legitimately decode some damage). */
static void test_corrupt_fuzz(void) {
    size_t len;
    uint8_t *px = make_pixels(64, 48, 3);
    for (int prog = 0; prog < 2; prog++) {
        uint8_t *jpg = encode(
            px, 64, 48, &(struct enc){.comps = 3, .in_cs = JCS_RGB, .progressive = prog}, &len);
        uint8_t *bad = malloc(len);
        int ok = 0, failed = 0;
        for (int iter = 0; iter < 400; iter++) {
            memcpy(bad, jpg, len);
            int flips = 1 + (int)(rng() % 4);
            for (int f = 0; f < flips; f++)
                bad[2 + rng() % (len - 2)] = (uint8_t)rng();
            struct eng_rgb img;
            char err[256];
            enum eng_status st = eng_image_decode(bad, len, NULL, 0, &img, err, sizeof err);
            if (st == ENG_OK) {
                ok++;
                if (!(img.px && img.w > 0 && img.h > 0 && (int64_t)img.w * img.h <= 1 << 24))
                    failed = 1;
                eng_rgb_free(&img);
            } else if (img.px || !err[0]) {
                failed = 1;
            }
        }
        free(bad);
        free(jpg);
        CHECK(!failed, "progressive=%d: inconsistent result (%d decoded)", prog, ok);
    }
    free(px);
}

static void test_too_large(void) {
    size_t len;
    uint8_t *jpg = encode_rgb(16, 16, &len);
    size_t sof = find_sof(jpg, len);
    CHECK(sof, "no SOF marker");
    /* SOF: FF Cn, length(2), precision(1), height(2), width(2). */
    jpg[sof + 5] = 60000 >> 8, jpg[sof + 6] = 60000 & 255;
    jpg[sof + 7] = 60000 >> 8, jpg[sof + 8] = 60000 & 255;
    char err[256];
    struct eng_image_info info;
    enum eng_status st = eng_image_probe(jpg, len, NULL, &info, err, sizeof err);
    CHECK(st == ENG_ERR_TOO_LARGE, "probe: %d (%s)", st, err);
    CHECK(!strcmp(err, "image is 60000x60000, over the limit of 16384x16384 / 40000000 pixels"),
          "message: %s", err);
    CHECK(info.width == 60000 && info.height == 60000);
    /* decode stops at the header too: decoding would have reported the
     * missing data as a truncated image (and tried to allocate 10 GB). */
    struct eng_rgb img;
    st = eng_image_decode(jpg, len, NULL, 0, &img, err, sizeof err);
    CHECK(st == ENG_ERR_TOO_LARGE && img.px == NULL, "decode: %d (%s)", st, err);
    float *out = malloc(sizeof(float) * 3 * 224 * 224);
    struct eng_preproc pp;
    eng_preproc_default(&pp);
    st = eng_image_preprocess(jpg, len, &pp, NULL, out, err, sizeof err);
    free(out);
    CHECK(st == ENG_ERR_TOO_LARGE);
    free(jpg);

    /* Each limit on its own, on a real 40x30 image. */
    jpg = encode_rgb(40, 30, &len);
    struct eng_image_limits lim = size_limits(40, 30, 1200);
    st = eng_image_decode(jpg, len, &lim, 0, &img, err, sizeof err);
    CHECK(st == ENG_OK && img.w == 40 && img.h == 30, "at the limits: %d (%s)", st, err);
    eng_rgb_free(&img);
    struct eng_image_limits over[] = {size_limits(39, 30, 1200), size_limits(40, 29, 1200),
                                      size_limits(40, 30, 1199)};
    for (int i = 0; i < 3; i++) {
        st = eng_image_decode(jpg, len, &over[i], 0, &img, err, sizeof err);
        CHECK(st == ENG_ERR_TOO_LARGE && img.px == NULL, "limit %d: %d", i, st);
        CHECK(strstr(err, "40x30"), "message: %s", err);
    }
    struct eng_image_limits zero = size_limits(0, 0, 0);
    CHECK(eng_image_probe(jpg, len, &zero, &info, NULL, 0) == ENG_ERR_ARG);
    struct eng_image_limits no_work = size_limits(40, 30, 1200);
    no_work.max_scan_blocks = 0;
    CHECK(eng_image_probe(jpg, len, &no_work, &info, NULL, 0) == ENG_ERR_ARG);
    free(jpg);
}

static void test_unsupported(void) {
    size_t len;
    char err[256];
    struct eng_image_info info;
    struct eng_rgb img;
    uint8_t *jpg = encode_rgb(16, 16, &len);
    size_t sof = find_sof(jpg, len);
    CHECK(sof);

    /* 12-bit samples: this libjpeg decodes 8-bit only. */
    jpg[sof + 4] = 12;
    enum eng_status st = eng_image_probe(jpg, len, NULL, &info, err, sizeof err);
    CHECK(st == ENG_ERR_UNSUPPORTED, "12-bit probe: %d (%s)", st, err);
    CHECK(strstr(err, "12-bit"), "message: %s", err);
    CHECK(eng_image_decode(jpg, len, NULL, 0, &img, err, sizeof err) == ENG_ERR_UNSUPPORTED);
    jpg[sof + 4] = 8;

    /* Lossless (SOF3). */
    jpg[sof + 1] = 0xC3;
    st = eng_image_decode(jpg, len, NULL, 0, &img, err, sizeof err);
    CHECK(st == ENG_ERR_UNSUPPORTED && img.px == NULL, "SOF3: %d (%s)", st, err);
    CHECK(strstr(err, "unsupported JPEG"), "message: %s", err);
    free(jpg);

    /* Two colour components. */
    uint8_t *px = make_pixels(16, 16, 2);
    jpg = encode(px, 16, 16, &(struct enc){.comps = 2, .in_cs = JCS_UNKNOWN}, &len);
    free(px);
    st = eng_image_probe(jpg, len, NULL, &info, err, sizeof err);
    CHECK(st == ENG_ERR_UNSUPPORTED && strstr(err, "2 colour components"), "%d (%s)", st, err);
    CHECK(eng_image_decode(jpg, len, NULL, 0, &img, err, sizeof err) == ENG_ERR_UNSUPPORTED);
    free(jpg);
}

/* ------------------------------------------------------------------------ */
/* Decoding                                                                 */
/* ------------------------------------------------------------------------ */

static void test_baseline_roundtrip(void) {
    int w = 75, h = 41;
    size_t len;
    uint8_t *px = make_pixels(w, h, 3);
    uint8_t *jpg =
        encode(px, w, h,
               &(struct enc){.comps = 3, .in_cs = JCS_RGB, .quality = 100, .full_chroma = 1}, &len);
    struct eng_image_info info;
    CHECK(eng_image_probe(jpg, len, NULL, &info, NULL, 0) == ENG_OK);
    CHECK(info.width == w && info.height == h && info.components == 3 && !info.progressive &&
          info.orientation == 1);
    struct eng_rgb img;
    char err[256];
    enum eng_status st = eng_image_decode(jpg, len, NULL, 0, &img, err, sizeof err);
    CHECK(st == ENG_OK, "%s", err);
    int d = max_abs_diff(img.px, px, (size_t)w * h * 3);
    eng_rgb_free(&img);
    free(jpg);
    free(px);
    CHECK(img.px == NULL);
    CHECK(d <= 8, "max diff %d at quality 100", d);
}

static void test_gray_roundtrip(void) {
    int w = 33, h = 17;
    size_t len;
    uint8_t *px = make_pixels(w, h, 1);
    uint8_t *jpg =
        encode(px, w, h, &(struct enc){.comps = 1, .in_cs = JCS_GRAYSCALE, .quality = 100}, &len);
    struct eng_image_info info;
    CHECK(eng_image_probe(jpg, len, NULL, &info, NULL, 0) == ENG_OK && info.components == 1);
    struct eng_rgb img;
    CHECK(eng_image_decode(jpg, len, NULL, 0, &img, NULL, 0) == ENG_OK);
    CHECK(img.w == w && img.h == h);
    int bad = 0, d = 0;
    for (int i = 0; i < w * h; i++) {
        const uint8_t *p = img.px + 3 * i;
        if (p[0] != p[1] || p[1] != p[2]) bad++;
        if (abs(p[0] - px[i]) > d) d = abs(p[0] - px[i]);
    }
    eng_rgb_free(&img);
    free(jpg);
    free(px);
    CHECK(!bad, "%d pixels not gray", bad);
    CHECK(d <= 4, "max diff %d", d);
}

/* Pillow's cmyk2rgb on Adobe-inverted data. */
static void cmyk_expect(const uint8_t *cmyk, uint8_t *rgb) {
    int nk = 255 - cmyk[3];
    for (int c = 0; c < 3; c++) {
        int t = cmyk[c] * nk + 128;
        int v = nk - ((t + (t >> 8)) >> 8);
        rgb[c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
}

static void test_cmyk_roundtrip(void) {
    /* Flat 8x8 blocks of one CMYK colour each survive JPEG almost exactly. */
    int w = 32, h = 16;
    uint8_t *cmyk = malloc((size_t)w * h * 4), *stored = malloc((size_t)w * h * 4);
    uint8_t pal[8][4];
    for (int i = 0; i < 8; i++)
        for (int c = 0; c < 4; c++)
            pal[i][c] = (uint8_t)(rng() % 200 + (c == 3 ? 0 : 40));
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 4; c++) {
                size_t i = ((size_t)y * w + x) * 4 + c;
                cmyk[i] = pal[(y / 8) * 4 + x / 8][c];
                stored[i] = (uint8_t)(255 - cmyk[i]); /* Adobe stores CMYK inverted */
            }
    J_COLOR_SPACE spaces[] = {JCS_CMYK, JCS_YCCK};
    for (int s = 0; s < 2; s++) {
        size_t len;
        uint8_t *jpg = encode(stored, w, h,
                              &(struct enc){.comps = 4,
                                            .in_cs = JCS_CMYK,
                                            .jpeg_cs = spaces[s],
                                            .quality = 100,
                                            .full_chroma = 1},
                              &len);
        struct eng_image_info info;
        CHECK(eng_image_probe(jpg, len, NULL, &info, NULL, 0) == ENG_OK && info.components == 4);
        struct eng_rgb img;
        char err[256];
        enum eng_status st = eng_image_decode(jpg, len, NULL, 0, &img, err, sizeof err);
        free(jpg);
        CHECK(st == ENG_OK, "%s: %s", s ? "YCCK" : "CMYK", err);
        int d = 0;
        for (int i = 0; i < w * h; i++) {
            uint8_t want[3];
            cmyk_expect(cmyk + 4 * i, want);
            int di = max_abs_diff(img.px + 3 * i, want, 3);
            if (di > d) d = di;
        }
        eng_rgb_free(&img);
        CHECK(d <= 3, "%s: max diff %d from Pillow's cmyk2rgb", s ? "YCCK" : "CMYK", d);
    }
    free(cmyk);
    free(stored);
}

/* Progressive and arithmetic coding end at the same quantized coefficients
 * as baseline Huffman coding, so the pixels are identical. */
static void test_progressive_and_arithmetic(void) {
    int w = 83, h = 67;
    uint8_t *px = make_pixels(w, h, 3);
    struct enc base = {.comps = 3, .in_cs = JCS_RGB, .quality = 85};
    struct enc prog = base, arith = base;
    prog.progressive = 1;
    arith.arith = 1;
    size_t lb, lp, la;
    uint8_t *jb = encode(px, w, h, &base, &lb), *jp = encode(px, w, h, &prog, &lp),
            *ja = encode(px, w, h, &arith, &la);
    free(px);
    struct eng_image_info info;
    struct eng_rgb ib = {0}, ip = {0}, ia = {0};
    char err[256] = "";
    int ok = eng_image_probe(jp, lp, NULL, &info, NULL, 0) == ENG_OK && info.progressive &&
             eng_image_decode(jb, lb, NULL, 0, &ib, NULL, 0) == ENG_OK &&
             eng_image_decode(jp, lp, NULL, 0, &ip, NULL, 0) == ENG_OK;
    enum eng_status sa = eng_image_decode(ja, la, NULL, 0, &ia, err, sizeof err);
    size_t n = (size_t)w * h * 3;
    int same_p = ok && ip.w == w && ip.h == h && !memcmp(ib.px, ip.px, n);
    int same_a = sa == ENG_OK && ia.w == w && !memcmp(ib.px, ia.px, n);
    eng_rgb_free(&ib);
    eng_rgb_free(&ip);
    eng_rgb_free(&ia);
    free(jb);
    free(jp);
    free(ja);
    CHECK(ok, "probe/decode failed");
    CHECK(same_p, "progressive decode differs from baseline");
    /* This libjpeg-turbo decodes arithmetic coding; one built without it
     * must say so rather than fail obscurely. */
    CHECK(same_a || (sa == ENG_ERR_UNSUPPORTED && strstr(err, "arithmetic")), "arithmetic: %d (%s)",
          sa, err);
}

/* ------------------------------------------------------------------------ */
/* EXIF orientation                                                         */
/* ------------------------------------------------------------------------ */

/* APP1 payload: "Exif\0\0", a TIFF header and IFD0 with the given
 * orientation entry. Returns the payload length. */
static size_t make_exif(uint8_t *p, int big_endian, unsigned type, uint32_t count, uint32_t value) {
    size_t n = 0;
    memcpy(p, "Exif\0\0", 6);
    n = 6;
    uint8_t *t = p + n;
#define PUT16(o, v)                                                                                \
    (big_endian ? (t[o] = (uint8_t)((v) >> 8), t[(o) + 1] = (uint8_t)(v))                          \
                : (t[o] = (uint8_t)(v), t[(o) + 1] = (uint8_t)((v) >> 8)))
#define PUT32(o, v)                                                                                \
    (big_endian ? (PUT16(o, (v) >> 16), PUT16((o) + 2, (v)&0xFFFF))                                \
                : (PUT16(o, (v)&0xFFFF), PUT16((o) + 2, (v) >> 16)))
    memcpy(t, big_endian ? "MM\0*" : "II*\0", 4);
    PUT32(4, 8u);       /* IFD0 right after the header */
    PUT16(8, 2u);       /* two entries: an unrelated tag, then orientation */
    PUT16(10, 0x010Fu); /* Make, ASCII, 4 bytes inline */
    PUT16(12, 2u);
    PUT32(14, 4u);
    memcpy(t + 18, "abc", 4);
    PUT16(22, 0x0112u);
    PUT16(24, type);
    PUT32(26, count);
    if ((type == 3 || type == 8) && count <= 2) /* 1-2 SHORTs inline: first | second << 16 */
        PUT16(30, value & 0xFFFF), PUT16(32, value >> 16);
    else /* one LONG inline, or the offset of the values */
        PUT32(30, value);
    PUT32(34, 0u); /* no next IFD */
#undef PUT16
#undef PUT32
    return n + 38;
}

/* Where PIL's transpose for an orientation takes output pixel (x, y) from,
 * in a w x h source: ImageOps.exif_transpose's table. */
static void pil_source(int o, int w, int h, int x, int y, int *sx, int *sy) {
    switch (o) {
    case 2:
        *sx = w - 1 - x, *sy = y;
        break; /* FLIP_LEFT_RIGHT */
    case 3:
        *sx = w - 1 - x, *sy = h - 1 - y;
        break; /* ROTATE_180 */
    case 4:
        *sx = x, *sy = h - 1 - y;
        break; /* FLIP_TOP_BOTTOM */
    case 5:
        *sx = y, *sy = x;
        break; /* TRANSPOSE */
    case 6:
        *sx = y, *sy = h - 1 - x;
        break; /* ROTATE_270 (90 clockwise) */
    case 7:
        *sx = w - 1 - y, *sy = h - 1 - x;
        break; /* TRANSVERSE */
    case 8:
        *sx = w - 1 - y, *sy = x;
        break; /* ROTATE_90 (counter-clockwise) */
    default:
        *sx = x, *sy = y;
        break;
    }
}

static void test_exif_orientation(void) {
    /* 24x16: 3x2 flat blocks of distinct colours, so every orientation
     * looks different. */
    static const uint8_t pal[6][3] = {{250, 10, 10},  {10, 250, 10},  {10, 10, 250},
                                      {250, 250, 10}, {10, 250, 250}, {250, 10, 250}};
    int w = 24, h = 16;
    uint8_t px[24 * 16 * 3];
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            memcpy(px + 3 * (y * w + x), pal[(y / 8) * 3 + x / 8], 3);
    struct enc o = {.comps = 3, .in_cs = JCS_RGB, .quality = 100, .full_chroma = 1};
    size_t len;
    uint8_t *plain = encode(px, w, h, &o, &len);
    struct eng_rgb ref;
    CHECK(eng_image_decode(plain, len, NULL, 0, &ref, NULL, 0) == ENG_OK);
    free(plain);

    uint8_t app1[64];
    for (int be = 0; be < 2; be++) {
        for (int orient = 1; orient <= 8; orient++) {
            o.app1 = app1;
            o.app1_len = make_exif(app1, be, 3, 1, (uint32_t)orient);
            uint8_t *jpg = encode(px, w, h, &o, &len);
            struct eng_image_info info;
            struct eng_rgb img;
            int probed = eng_image_probe(jpg, len, NULL, &info, NULL, 0) == ENG_OK;
            int decoded = eng_image_decode(jpg, len, NULL, 0, &img, NULL, 0) == ENG_OK;
            free(jpg);
            if (!probed || !decoded || info.orientation != orient || info.width != w) {
                if (decoded) eng_rgb_free(&img);
                eng_rgb_free(&ref);
                CHECK(0, "orientation %d (%s-endian): probe %d decode %d info.orientation %d",
                      orient, be ? "big" : "little", probed, decoded, info.orientation);
            }
            int swapped = orient >= 5, bad = 0;
            if (img.w != (swapped ? h : w) || img.h != (swapped ? w : h)) bad = -1;
            for (int y = 0; !bad && y < img.h; y++)
                for (int x = 0; x < img.w; x++) {
                    int sx, sy;
                    pil_source(orient, w, h, x, y, &sx, &sy);
                    if (memcmp(img.px + 3 * (y * img.w + x), ref.px + 3 * (sy * w + sx), 3)) bad++;
                }
            /* Orientation 6 is the common portrait photo: the stored left
             * column is the top row once turned 90 degrees clockwise, so
             * the top-left block is the stored bottom-left one (yellow). */
            int yellow_top_left = img.px[0] > 200 && img.px[1] > 200 && img.px[2] < 50;
            eng_rgb_free(&img);
            if (bad || (orient == 6 && !yellow_top_left)) {
                eng_rgb_free(&ref);
                CHECK(0, "orientation %d: %d pixels misplaced (size %s)", orient, bad,
                      bad < 0 ? "wrong" : "ok");
            }
        }
    }
    eng_rgb_free(&ref);
}

/* Malformed or unusual EXIF never breaks decoding and reads as Pillow
 * reads it. */
/* Issue 11.9: ENG_DECODE_EXACT is torchvision's pipeline: a large photo
 * (1280x1024, which FAST decodes at half scale) gives exactly the tensor
 * of a full-size decode + transform, and differs from FAST; a photo with
 * EXIF orientation 6 is not rotated (its tensor is that of the same photo
 * without the EXIF block), where FAST rotates it. */
static void test_decode_exact(void) {
    struct eng_preproc fast, exact;
    eng_preproc_default(&fast);
    exact = fast;
    exact.decode = ENG_DECODE_EXACT;
    size_t n = (size_t)3 * 224 * 224, len;
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b), *c = malloc(n * sizeof *c);
    uint8_t *px = make_pixels(1280, 1024, 3);
    uint8_t *jpg = encode(px, 1280, 1024, &(struct enc){.comps = 3, .in_cs = JCS_RGB}, &len);
    free(px);
    struct eng_rgb full;
    CHECK(eng_image_decode(jpg, len, NULL, 0, &full, NULL, 0) == ENG_OK && full.w == 1280);
    CHECK(eng_image_transform(&full, &exact, a, NULL, 0) == ENG_OK);
    eng_rgb_free(&full);
    CHECK(eng_image_preprocess(jpg, len, &exact, NULL, b, NULL, 0) == ENG_OK);
    CHECK(eng_image_preprocess(jpg, len, &fast, NULL, c, NULL, 0) == ENG_OK);
    free(jpg);
    int same_full = !memcmp(a, b, n * sizeof *a), fast_differs = memcmp(b, c, n * sizeof *b) != 0;
    CHECK(same_full, "EXACT on a 1280x1024 photo is not the full-size decode");
    CHECK(fast_differs, "FAST on a 1280x1024 photo did not use DCT scaling");

    /* 320x240 with EXIF orientation 6 (rotate 90 degrees clockwise). */
    px = make_pixels(320, 240, 3);
    struct enc o = {.comps = 3, .in_cs = JCS_RGB};
    uint8_t *plain = encode(px, 320, 240, &o, &len);
    CHECK(eng_image_preprocess(plain, len, &exact, NULL, a, NULL, 0) == ENG_OK);
    free(plain);
    uint8_t app1[64];
    o.app1 = app1;
    o.app1_len = make_exif(app1, 0, 3, 1, 6);
    uint8_t *turned = encode(px, 320, 240, &o, &len);
    free(px);
    CHECK(eng_image_preprocess(turned, len, &exact, NULL, b, NULL, 0) == ENG_OK);
    CHECK(eng_image_preprocess(turned, len, &fast, NULL, c, NULL, 0) == ENG_OK);
    free(turned);
    int unrotated = !memcmp(a, b, n * sizeof *a), rotated = memcmp(b, c, n * sizeof *b) != 0;
    free(a);
    free(b);
    free(c);
    CHECK(unrotated, "EXACT applied the EXIF orientation");
    CHECK(rotated, "FAST did not apply the EXIF orientation");
}

static void test_exif_malformed(void) {
    uint8_t app1[128];
    uint8_t *px = make_pixels(16, 8, 3);
    struct {
        const char *what;
        int want;
        size_t len; /* 0: as built */
        void (*patch)(uint8_t *p);
        int big_endian;
        unsigned type;
        uint32_t count, value;
    } cases[] = {
        {"LONG", 8, 0, NULL, 0, 4, 1, 8},
        {"SSHORT", 4, 0, NULL, 1, 8, 1, 4},
        {"BYTE (Pillow reads bytes)", 1, 0, NULL, 0, 1, 1, 7},
        {"value 9", 1, 0, NULL, 0, 3, 1, 9},
        {"value 0", 1, 0, NULL, 0, 3, 1, 0},
        {"count 0", 1, 0, NULL, 0, 3, 0, 6},
        {"SHORT x2 inline (first counts)", 3, 0, NULL, 0, 3, 2, 3 | 6u << 16},
        {"SHORT x3 at an offset past the end", 1, 0, NULL, 0, 3, 3, 5000},
        {"SHORT x3 at offset 0xFFFFFFFF", 1, 0, NULL, 0, 3, 3, 0xFFFFFFFFu},
        {"cut inside the orientation entry", 1, 6 + 30, NULL, 0, 3, 1, 6},
        {"cut after the orientation entry", 6, 6 + 34, NULL, 0, 3, 1, 6},
        {"only the Exif header", 1, 6, NULL, 0, 3, 1, 6},
        {"TIFF header cut", 1, 9, NULL, 0, 3, 1, 6},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n =
            make_exif(app1, cases[i].big_endian, cases[i].type, cases[i].count, cases[i].value);
        if (cases[i].len) n = cases[i].len;
        struct enc o = {.comps = 3, .in_cs = JCS_RGB, .app1 = app1, .app1_len = n};
        size_t len;
        uint8_t *jpg = encode(px, 16, 8, &o, &len);
        struct eng_image_info info = {0};
        struct eng_rgb img = {0};
        enum eng_status sp = eng_image_probe(jpg, len, NULL, &info, NULL, 0);
        enum eng_status sd = eng_image_decode(jpg, len, NULL, 0, &img, NULL, 0);
        int want_w = cases[i].want >= 5 ? 8 : 16;
        int ok =
            sp == ENG_OK && sd == ENG_OK && info.orientation == cases[i].want && img.w == want_w;
        eng_rgb_free(&img);
        free(jpg);
        if (!ok) free(px);
        CHECK(ok, "%s: probe %d decode %d orientation %d, want %d", cases[i].what, sp, sd,
              info.orientation, cases[i].want);
    }
    /* Bad byte order, bad magic, IFD offset out of range, huge entry count. */
    static const struct {
        size_t off;
        uint8_t byte;
    } patches[] = {{6, 'X'}, {8, 41}, {10, 0xF0}, {10, 37}, {14, 0xFF}};
    for (size_t i = 0; i < sizeof patches / sizeof patches[0]; i++) {
        size_t n = make_exif(app1, 0, 3, 1, 6);
        app1[patches[i].off] = patches[i].byte;
        if (patches[i].off == 14) app1[15] = 0xFF; /* entry count 65535 */
        size_t len;
        uint8_t *jpg =
            encode(px, 16, 8,
                   &(struct enc){.comps = 3, .in_cs = JCS_RGB, .app1 = app1, .app1_len = n}, &len);
        struct eng_image_info info = {0};
        enum eng_status st = eng_image_probe(jpg, len, NULL, &info, NULL, 0);
        free(jpg);
        int want = patches[i].off == 14 ? 6 : 1; /* a lying count still finds the entry */
        if (st != ENG_OK || info.orientation != want) free(px);
        CHECK(st == ENG_OK && info.orientation == want, "patch %zu: %d orientation %d", i, st,
              info.orientation);
    }
    free(px);
}

/* ------------------------------------------------------------------------ */
/* DCT scaling                                                              */
/* ------------------------------------------------------------------------ */

static void test_dct_scale(void) {
    size_t len;
    uint8_t *jpg = encode_rgb(200, 100, &len);
    /* The smallest n/8 of 1/8, 2/8, 4/8, 8/8 with ceil(100 * n / 8) >=
     * min_short (the other eighths decode slower than full size). */
    static const int cases[][3] = {
        {0, 200, 100}, {1, 25, 13},   {13, 25, 13},   {14, 50, 25},    {25, 50, 25},
        {26, 100, 50}, {50, 100, 50}, {51, 200, 100}, {100, 200, 100}, {1000, 200, 100},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct eng_rgb img;
        enum eng_status st = eng_image_decode(jpg, len, NULL, cases[i][0], &img, NULL, 0);
        int w = img.w, h = img.h;
        eng_rgb_free(&img);
        if (st != ENG_OK || w != cases[i][1] || h != cases[i][2]) free(jpg);
        CHECK(st == ENG_OK && w == cases[i][1] && h == cases[i][2],
              "min_short %d: got %dx%d, want %dx%d", cases[i][0], w, h, cases[i][1], cases[i][2]);
    }
    free(jpg);

    /* The shorter side is the same after an EXIF rotation. */
    uint8_t app1[64];
    uint8_t *px = make_pixels(200, 100, 3);
    size_t n = make_exif(app1, 0, 3, 1, 6);
    jpg = encode(px, 200, 100,
                 &(struct enc){.comps = 3, .in_cs = JCS_RGB, .app1 = app1, .app1_len = n}, &len);
    free(px);
    struct eng_rgb img;
    enum eng_status st = eng_image_decode(jpg, len, NULL, 30, &img, NULL, 0);
    free(jpg);
    int w = img.w, h = img.h;
    eng_rgb_free(&img);
    CHECK(st == ENG_OK && w == 50 && h == 100, "rotated: %dx%d", w, h);
}

/* ------------------------------------------------------------------------ */
/* Transform                                                                */
/* ------------------------------------------------------------------------ */

static float norm(int v, float mean, float std) {
    return ((float)v / 255.0f - mean) / std;
}

static struct eng_preproc pp_make(int resize, int crop, enum eng_interp interp) {
    struct eng_preproc pp;
    eng_preproc_default(&pp);
    pp.resize = resize;
    pp.crop = crop;
    pp.interp = interp;
    return pp;
}

/* Without a resize the transform is a crop plus exact float32 arithmetic;
 * the crop offsets use Python's round, ties to even. */
static void test_transform_crop(void) {
    static const int cases[][6] = {
        /* w, h, resize, crop, want left, want top */
        {7, 7, 7, 5, 1, 1},    {10, 13, 10, 6, 2, 4}, /* (13-6)/2 = 3.5 -> 4 */
        {10, 11, 10, 6, 2, 2},                        /* (11-6)/2 = 2.5 -> 2 */
        {15, 9, 9, 4, 6, 2},                          /* (15-4)/2 = 5.5 -> 6, (9-4)/2 = 2.5 -> 2 */
        {8, 8, 8, 8, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int w = cases[i][0], h = cases[i][1], crop = cases[i][3];
        struct eng_rgb img = {make_pixels(w, h, 3), w, h};
        struct eng_preproc pp = pp_make(cases[i][2], crop, ENG_INTERP_BICUBIC);
        pp.mean[1] = 0.5f, pp.std[2] = 0.125f;
        float *out = malloc(sizeof(float) * 3 * crop * crop);
        enum eng_status st = eng_image_transform(&img, &pp, out, NULL, 0);
        int bad = st != ENG_OK;
        for (int c = 0; !bad && c < 3; c++)
            for (int y = 0; y < crop; y++)
                for (int x = 0; x < crop; x++) {
                    int v = img.px[((y + cases[i][5]) * w + x + cases[i][4]) * 3 + c];
                    if (out[(c * crop + y) * crop + x] != norm(v, pp.mean[c], pp.std[c])) bad++;
                }
        free(out);
        free(img.px);
        CHECK(!bad, "case %zu (%dx%d crop %d): %d values differ", i, w, h, crop, bad);
    }
}

static void test_transform_resize(void) {
    /* Worked by hand through Pillow's precompute_coeffs: 4 -> 2 bilinear
     * has scale 2, support 2, weights 3/7 3/7 1/7 for output 0, so row
     * [0 70 140 210] gives 50. Resize(1) of a 4x2 image is 2x1 and the
     * 1-pixel center crop keeps column round(0.5) = 0. */
    uint8_t px[4 * 2 * 3];
    for (int y = 0; y < 2; y++)
        for (int x = 0; x < 4; x++)
            for (int c = 0; c < 3; c++)
                px[(y * 4 + x) * 3 + c] = (uint8_t)(70 * x);
    struct eng_rgb img = {px, 4, 2};
    struct eng_preproc pp = pp_make(1, 1, ENG_INTERP_BILINEAR);
    float out[3];
    CHECK(eng_image_transform(&img, &pp, out, NULL, 0) == ENG_OK);
    for (int c = 0; c < 3; c++)
        CHECK(out[c] == norm(50, pp.mean[c], pp.std[c]), "channel %d: %.9g", c, out[c]);

    /* A flat image stays flat through any resize, down or up, and both
     * filters. */
    for (int interp = 0; interp < 2; interp++) {
        int sizes[][2] = {{1000, 700}, {31, 17}, {3, 400}};
        for (int s = 0; s < 3; s++) {
            int w = sizes[s][0], h = sizes[s][1];
            uint8_t *flat = malloc((size_t)w * h * 3);
            for (int i = 0; i < w * h; i++)
                flat[3 * i] = 200, flat[3 * i + 1] = 7, flat[3 * i + 2] = 255;
            struct eng_rgb f = {flat, w, h};
            pp = pp_make(64, 56, (enum eng_interp)interp);
            float *o = malloc(sizeof(float) * 3 * 56 * 56);
            enum eng_status st = eng_image_transform(&f, &pp, o, NULL, 0);
            int bad = st != ENG_OK;
            static const int v[3] = {200, 7, 255};
            for (int c = 0; !bad && c < 3; c++)
                for (int i = 0; i < 56 * 56; i++)
                    if (o[c * 56 * 56 + i] != norm(v[c], pp.mean[c], pp.std[c])) bad++;
            free(o);
            free(flat);
            CHECK(!bad, "flat %dx%d interp %d: %d values differ", w, h, interp, bad);
        }
    }
}

/* A crop larger than the resized image pads with zeros (torchvision's
 * CenterCrop: (crop - n) // 2 before, the rest after). */
static void test_transform_pad(void) {
    uint8_t px[4 * 4 * 3];
    memset(px, 200, sizeof px);
    struct eng_rgb img = {px, 4, 4};
    struct eng_preproc pp = pp_make(4, 7, ENG_INTERP_BILINEAR);
    float out[3 * 7 * 7];
    CHECK(eng_image_transform(&img, &pp, out, NULL, 0) == ENG_OK);
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < 7; y++)
            for (int x = 0; x < 7; x++) {
                int inside = x >= 1 && x < 5 && y >= 1 && y < 5;
                float want = norm(inside ? 200 : 0, pp.mean[c], pp.std[c]);
                CHECK(out[(c * 7 + y) * 7 + x] == want, "c %d y %d x %d", c, y, x);
            }
}

static void test_transform_args(void) {
    uint8_t px[3 * 4] = {0};
    struct eng_rgb img = {px, 2, 2};
    float out[3 * 4];
    char err[256];
    struct eng_preproc pp = pp_make(2, 2, ENG_INTERP_BILINEAR);
    CHECK(eng_image_transform(&img, &pp, out, err, sizeof err) == ENG_OK);
    CHECK(eng_image_transform(NULL, &pp, out, NULL, 0) == ENG_ERR_ARG);
    CHECK(eng_image_transform(&img, NULL, out, NULL, 0) == ENG_ERR_ARG);
    CHECK(eng_image_transform(&img, &pp, NULL, NULL, 0) == ENG_ERR_ARG);
    struct eng_rgb empty = {NULL, 0, 0};
    CHECK(eng_image_transform(&empty, &pp, out, NULL, 0) == ENG_ERR_ARG);
    pp.resize = 0;
    CHECK(eng_image_transform(&img, &pp, out, NULL, 0) == ENG_ERR_ARG);
    pp = pp_make(2, 0, ENG_INTERP_BILINEAR);
    CHECK(eng_image_transform(&img, &pp, out, NULL, 0) == ENG_ERR_ARG);
    pp = pp_make(2, 2, (enum eng_interp)7);
    CHECK(eng_image_transform(&img, &pp, out, NULL, 0) == ENG_ERR_ARG);
    pp = pp_make(2, 2, ENG_INTERP_BICUBIC);
    pp.std[1] = 0;
    CHECK(eng_image_transform(&img, &pp, out, err, sizeof err) == ENG_ERR_ARG);
    CHECK(strstr(err, "std[1]"), "message: %s", err);
    eng_preproc_default(&pp);
    CHECK(pp.resize == 256 && pp.crop == 224 && pp.interp == ENG_INTERP_BILINEAR &&
          pp.mean[0] == 0.485f && pp.std[2] == 0.225f);
    struct eng_image_limits lim;
    eng_image_limits_default(&lim);
    CHECK(lim.max_width == 16384 && lim.max_height == 16384 && lim.max_pixels == 40000000);
}

/* preprocess = decode at a DCT scale keeping the shorter side >= 2 * resize,
 * then transform. */
static void test_preprocess(void) {
    size_t len;
    uint8_t *jpg = encode_rgb(1200, 1100, &len);
    struct eng_preproc pp;
    eng_preproc_default(&pp);
    size_t n = 3 * 224 * 224;
    float *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n);
    char err[256];
    enum eng_status st = eng_image_preprocess(jpg, len, &pp, NULL, a, err, sizeof err);
    struct eng_rgb img = {0};
    enum eng_status sd = eng_image_decode(jpg, len, NULL, 512, &img, NULL, 0);
    int w = img.w, h = img.h;
    enum eng_status stt = sd == ENG_OK ? eng_image_transform(&img, &pp, b, NULL, 0) : sd;
    int same = st == ENG_OK && stt == ENG_OK && !memcmp(a, b, sizeof(float) * n);
    eng_rgb_free(&img);
    free(a);
    free(b);
    free(jpg);
    CHECK(st == ENG_OK, "%s", err);
    CHECK(w == 600 && h == 550, "decoded at %dx%d, want 4/8 scale 600x550", w, h);
    CHECK(same, "preprocess differs from decode + transform");
}

/* Decoding and preprocessing share no state: threads running them at once
 * get exactly the single-threaded result. */
struct thread_arg {
    const uint8_t *jpg;
    size_t len;
    const float *want;
    int mismatches;
};

static void *preprocess_loop(void *p) {
    struct thread_arg *a = p;
    struct eng_preproc pp;
    eng_preproc_default(&pp);
    float *out = malloc(sizeof(float) * 3 * 224 * 224);
    for (int i = 0; i < 25; i++)
        if (eng_image_preprocess(a->jpg, a->len, &pp, NULL, out, NULL, 0) != ENG_OK ||
            memcmp(out, a->want, sizeof(float) * 3 * 224 * 224))
            a->mismatches++;
    free(out);
    return NULL;
}

static void test_threads(void) {
    size_t len;
    uint8_t *px = make_pixels(601, 457, 3);
    uint8_t *jpg =
        encode(px, 601, 457, &(struct enc){.comps = 3, .in_cs = JCS_RGB, .progressive = 1}, &len);
    free(px);
    struct eng_preproc pp;
    eng_preproc_default(&pp);
    float *want = malloc(sizeof(float) * 3 * 224 * 224);
    enum eng_status st = eng_image_preprocess(jpg, len, &pp, NULL, want, NULL, 0);
    struct thread_arg args[4];
    pthread_t th[4];
    int started = 0, mismatches = 0;
    for (int i = 0; st == ENG_OK && i < 4; i++, started++) {
        args[i] = (struct thread_arg){jpg, len, want, 0};
        if (pthread_create(&th[i], NULL, preprocess_loop, &args[i])) break;
    }
    for (int i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        mismatches += args[i].mismatches;
    }
    free(want);
    free(jpg);
    CHECK(st == ENG_OK && started == 4, "status %d, %d threads", st, started);
    CHECK(!mismatches, "%d of 100 concurrent runs differ", mismatches);
}

/* ------------------------------------------------------------------------ */
/* Parity with PIL + torchvision                                            */
/* ------------------------------------------------------------------------ */

static void test_pil_parity(void) {
    const char *dir = getenv("IMGCLASS_REF");
    if (!dir || !*dir) dir = "build/ref";
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    FILE *probe = fopen(path, "rb");
    if (!probe)
        SKIP("no %s; generate the PIL/torchvision references with `make build/ref/stamp` "
             "(or point IMGCLASS_REF at a reference directory)",
             path);
    fclose(probe);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    CHECK(root, "%s:%d: %s", path, jerr.line, jerr.text);
    json_t *images = json_object_get(root, "images"), *pre = json_object_get(root, "preproc");
    size_t n_img = json_array_size(images);
    if (!json_is_array(images) || !json_is_array(pre) || !n_img) json_decref(root);
    CHECK(json_is_array(images) && json_is_array(pre) && n_img, "%s: no images or preproc", path);

    /* Decode every image once, as PIL does: full scale, EXIF transposed. */
    struct eng_rgb *decoded = calloc(n_img, sizeof *decoded);
    char fail[5120] = "";
    for (size_t i = 0; i < n_img && !fail[0]; i++) {
        const char *p = json_string_value(json_object_get(json_array_get(images, i), "path"));
        char full[4096], err[256];
        snprintf(full, sizeof full, "%s%s%s", p && p[0] == '/' ? "" : dir,
                 p && p[0] == '/' ? "" : "/", p ? p : "");
        size_t len = 0;
        unsigned char *data = p ? t_read_file(full, &len) : NULL;
        if (!data) {
            snprintf(fail, sizeof fail, "image %zu: cannot read %s", i, full);
            break;
        }
        enum eng_status st = eng_image_decode(data, len, NULL, 0, &decoded[i], err, sizeof err);
        free(data);
        if (st != ENG_OK) snprintf(fail, sizeof fail, "%s: %s", full, err);
    }

    for (size_t v = 0; v < json_array_size(pre) && !fail[0]; v++) {
        json_t *pv = json_array_get(pre, v);
        struct eng_preproc pp;
        eng_preproc_default(&pp);
        pp.resize = (int)json_integer_value(json_object_get(pv, "resize"));
        pp.crop = (int)json_integer_value(json_object_get(pv, "crop"));
        const char *interp = json_string_value(json_object_get(pv, "interp"));
        const char *file = json_string_value(json_object_get(pv, "file"));
        if (!interp || !file || (strcmp(interp, "bilinear") && strcmp(interp, "bicubic"))) {
            snprintf(fail, sizeof fail, "preproc %zu: bad interp or file", v);
            break;
        }
        pp.interp = strcmp(interp, "bicubic") ? ENG_INTERP_BILINEAR : ENG_INTERP_BICUBIC;
        /* "exact": torchvision on PIL's plain decode, which the engine's
         * ENG_DECODE_EXACT pipeline must give from the file bytes. */
        const char *dmode = json_string_value(json_object_get(pv, "decode"));
        if (dmode && !strcmp(dmode, "exact")) pp.decode = ENG_DECODE_EXACT;
        for (int c = 0; c < 3; c++) {
            pp.mean[c] = (float)json_number_value(json_array_get(json_object_get(pv, "mean"), c));
            pp.std[c] = (float)json_number_value(json_array_get(json_object_get(pv, "std"), c));
        }
        size_t plane = (size_t)pp.crop * pp.crop, per = 3 * plane, len = 0;
        snprintf(path, sizeof path, "%s/%s", dir, file);
        unsigned char *raw = t_read_file(path, &len);
        if (!raw || len != n_img * per * sizeof(float)) {
            snprintf(fail, sizeof fail, "%s: %zu bytes, want %zu x 3 x %d x %d float32", path,
                     raw ? len : 0, n_img, pp.crop, pp.crop);
            free(raw);
            break;
        }
        float *out = malloc(sizeof(float) * per);
        size_t total = 0, exact = 0, within = 0, worst_img = 0;
        double max_diff = 0;
        for (size_t i = 0; i < n_img && !fail[0]; i++) {
            char err[256];
            enum eng_status st;
            if (pp.decode == ENG_DECODE_EXACT) {
                const char *p =
                    json_string_value(json_object_get(json_array_get(images, i), "path"));
                char full[4096];
                snprintf(full, sizeof full, "%s%s%s", p && p[0] == '/' ? "" : dir,
                         p && p[0] == '/' ? "" : "/", p ? p : "");
                size_t flen = 0;
                unsigned char *data = p ? t_read_file(full, &flen) : NULL;
                st = data ? eng_image_preprocess(data, flen, &pp, NULL, out, err, sizeof err)
                          : ENG_ERR_IO;
                if (!data) snprintf(err, sizeof err, "cannot read %.200s", full);
                free(data);
            } else {
                st = eng_image_transform(&decoded[i], &pp, out, err, sizeof err);
            }
            if (st != ENG_OK) {
                snprintf(fail, sizeof fail, "transform %s: %s", file, err);
                break;
            }
            for (size_t k = 0; k < per; k++) {
                float want; /* the file is little-endian, as is every target we run on */
                memcpy(&want, raw + (i * per + k) * sizeof(float), sizeof want);
                double d = fabs((double)out[k] - want);
                total++;
                exact += d == 0;
                within += d <= (1.0 / 255.0) / pp.std[k / plane] * (1 + 1e-6);
                if (d > max_diff) max_diff = d, worst_img = i;
            }
        }
        free(out);
        free(raw);
        if (fail[0]) break;
        const char *worst =
            json_string_value(json_object_get(json_array_get(images, worst_img), "name"));
        printf("  image.pil_parity: %-28s %zu images: %.4f%% exact, %.4f%% within 1/255/std, "
               "max |diff| %.3g%s%s%s\n",
               file, n_img, 100.0 * exact / total, 100.0 * within / total, max_diff,
               max_diff > 0 ? " (in " : "", max_diff > 0 && worst ? worst : "",
               max_diff > 0 ? ")" : "");
        if (within < total * 0.999)
            snprintf(fail, sizeof fail, "%s: only %.3f%% of values within 1/255/std", file,
                     100.0 * within / total);
    }
    for (size_t i = 0; i < n_img; i++)
        eng_rgb_free(&decoded[i]);
    free(decoded);
    json_decref(root);
    CHECK(!fail[0], "%s", fail);
}

/* The real photographs beside the project decode and preprocess; prints
 * the time per request-sized preprocess. */
static void test_shared_photos(void) {
    const char *dir = "../shared/images";
    DIR *d = opendir(dir);
    if (!d) SKIP("%s is absent", dir);
    struct dirent *e;
    int n = 0;
    double secs = 0;
    char fail[5120] = "";
    float *out = malloc(sizeof(float) * 3 * 224 * 224);
    struct eng_preproc pp;
    eng_preproc_default(&pp);
    while ((e = readdir(d)) && !fail[0]) {
        size_t nl = strlen(e->d_name);
        if (nl < 5 || strcasecmp(e->d_name + nl - 5, ".jpeg")) continue;
        char path[4096], err[256];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t len;
        unsigned char *data = t_read_file(path, &len);
        if (!data) {
            snprintf(fail, sizeof fail, "cannot read %s", path);
            break;
        }
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        enum eng_status st = eng_image_preprocess(data, len, &pp, NULL, out, err, sizeof err);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        free(data);
        secs += (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        if (st != ENG_OK) snprintf(fail, sizeof fail, "%s: %s", path, err);
        n++;
    }
    closedir(d);
    free(out);
    CHECK(!fail[0], "%s", fail);
    CHECK(n > 0, "no .JPEG files in %s", dir);
    printf("  image.shared_photos: %d photos, %.2f ms per decode + preprocess\n", n,
           1e3 * secs / n);
}

int main(void) {
    t_suite = "image";
    RUN(test_sniff);
    RUN(test_empty);
    RUN(test_not_jpeg);
    RUN(test_garbage_after_soi);
    RUN(test_truncated);
    RUN(test_extra_bytes);
    RUN(test_scan_limit);
    RUN(test_corrupt_fuzz);
    RUN(test_too_large);
    RUN(test_unsupported);
    RUN(test_baseline_roundtrip);
    RUN(test_gray_roundtrip);
    RUN(test_cmyk_roundtrip);
    RUN(test_progressive_and_arithmetic);
    RUN(test_exif_orientation);
    RUN(test_exif_malformed);
    RUN(test_dct_scale);
    RUN(test_transform_crop);
    RUN(test_transform_resize);
    RUN(test_transform_pad);
    RUN(test_decode_work_limits);
    RUN(test_decode_exact);
    RUN(test_transform_args);
    RUN(test_preprocess);
    RUN(test_threads);
    RUN(test_pil_parity);
    RUN(test_shared_photos);
    return t_done();
}
