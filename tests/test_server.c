/* test_server.c: integration tests of imgclassd: the real binary (next to
 * this test binary's directory: build/imgclassd) started on an ephemeral
 * port, driven over HTTP with libcurl. Answers are checked against the
 * engine run in this process on the same seeded random model, and against
 * build/imgclass --json when that binary exists. */
/* the child-process, libcurl and JPEG helpers: server_harness.h */
#include "test.h"
#include "server_harness.h"

/* ------------------------------------------------------------------------ */
/* Test images and reference answers                                        */
/* ------------------------------------------------------------------------ */

struct timg {
    char name[128];
    unsigned char *data;
    size_t len;
    float *probs; /* reference softmax from the in-process engine */
};

#define MAX_IMGS 40
static struct timg g_imgs[MAX_IMGS];
static int g_nimgs, g_nshared;
static struct eng_model *g_ref_model;
static struct eng_ctx *g_ref_ctx;
static struct eng_labels *g_labels;
static int g_classes;

/* Reference probabilities for one JPEG from this process's engine. */
static float *ref_probs(const unsigned char *data, size_t len) {
    const struct eng_model_info *info = eng_model_get_info(g_ref_model);
    int size = info->preproc.crop;
    float *in = malloc((size_t)3 * size * size * sizeof(float));
    float *logits = malloc((size_t)g_classes * sizeof(float));
    float *probs = malloc((size_t)g_classes * sizeof(float));
    struct eng_image_limits lim;
    eng_image_limits_default(&lim);
    if (eng_image_preprocess(data, len, &info->preproc, &lim, in, NULL, 0) != ENG_OK ||
        eng_ctx_forward(g_ref_ctx, in, 1, logits) != ENG_OK) {
        free(probs);
        probs = NULL;
    } else {
        eng_softmax(logits, g_classes, probs);
    }
    free(in);
    free(logits);
    return probs;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Loads ../shared/images (when present) and synthetic JPEGs, and the
 * reference model random:resnet18 (seed 0, as the servers use). */
static int setup_images(char *why, size_t n) {
    /* IMGCLASSD_TEST_IMAGES overrides the directory (a missing one shows
     * how the suite runs in a fresh clone without ../shared). */
    char dir[PATH_MAX + 32];
    const char *env = getenv("IMGCLASSD_TEST_IMAGES");
    if (env)
        snprintf(dir, sizeof dir, "%s", env);
    else
        snprintf(dir, sizeof dir, "%s/../shared/images", g_root);
    DIR *d = opendir(dir);
    if (d) {
        char *names[256];
        int nn = 0;
        struct dirent *e;
        while ((e = readdir(d)) && nn < 256) {
            size_t l = strlen(e->d_name);
            if (l > 5 &&
                (!strcasecmp(e->d_name + l - 5, ".jpeg") || !strcasecmp(e->d_name + l - 4, ".jpg")))
                names[nn++] = strdup(e->d_name);
        }
        closedir(d);
        qsort(names, (size_t)nn, sizeof names[0], cmp_str);
        for (int i = 0; i < nn; i++) {
            if (g_nimgs < 24) {
                char path[PATH_MAX * 2];
                snprintf(path, sizeof path, "%s/%s", dir, names[i]);
                struct timg *t = &g_imgs[g_nimgs];
                t->data = t_read_file(path, &t->len);
                if (t->data) {
                    snprintf(t->name, sizeof t->name, "%s", names[i]);
                    g_nimgs++;
                }
            }
            free(names[i]);
        }
    }
    g_nshared = g_nimgs;
    static const int dims[][3] = {{320, 240, 0}, {500, 375, 0}, {224, 224, 0},
                                  {640, 480, 0}, {300, 400, 1}, {97, 131, 0}};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0] && g_nimgs < MAX_IMGS; i++) {
        struct timg *t = &g_imgs[g_nimgs];
        t->data = gen_jpeg(dims[i][0], dims[i][1], (unsigned)i + 1, dims[i][2], &t->len);
        snprintf(t->name, sizeof t->name, "synthetic-%dx%d%s.jpg", dims[i][0], dims[i][1],
                 dims[i][2] ? "-gray" : "");
        g_nimgs++;
    }
    char err[256] = "";
    /* One compute thread (single-threaded BLAS) for the reference: the
     * servers need the cores more, and it keeps TSan runs free of reports
     * from OpenBLAS's own, uninstrumented threads. */
    eng_set_threads(1);
    if (eng_model_load("random:resnet18", &g_ref_model, err, sizeof err) != ENG_OK ||
        eng_ctx_new(g_ref_model, 1, eng_model_get_info(g_ref_model)->preproc.crop, &g_ref_ctx, err,
                    sizeof err) != ENG_OK) {
        snprintf(why, n, "reference model: %s", err);
        return -1;
    }
    g_classes = eng_model_get_info(g_ref_model)->num_classes;
    if (eng_labels_load(NULL, g_classes, &g_labels, err, sizeof err) != ENG_OK) {
        snprintf(why, n, "labels: %s", err);
        return -1;
    }
    for (int i = 0; i < g_nimgs; i++) {
        g_imgs[i].probs = ref_probs(g_imgs[i].data, g_imgs[i].len);
        if (!g_imgs[i].probs) {
            snprintf(why, n, "reference engine failed on %s", g_imgs[i].name);
            return -1;
        }
    }
    return 0;
}

static int cmp_desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* The k-th largest probability. */
static float kth_prob(const float *p, int n, int k) {
    float *c = malloc((size_t)n * sizeof *c);
    memcpy(c, p, (size_t)n * sizeof *c);
    qsort(c, (size_t)n, sizeof *c, cmp_desc);
    float v = c[k - 1];
    free(c);
    return v;
}

/* Checks a "predictions" array against reference probabilities: k entries,
 * each index's score within 1e-5 of the reference, labels right, in
 * descending order, and truly the top k (ties within 1e-5 may swap). */
static const char *check_preds(json_t *preds, const float *probs, int k) {
    static _Thread_local char why[256];
    if (!json_is_array(preds) || (int)json_array_size(preds) != k) {
        snprintf(why, sizeof why, "predictions is not an array of %d", k);
        return why;
    }
    float kth = kth_prob(probs, g_classes, k);
    double prev = 2;
    for (int i = 0; i < k; i++) {
        json_t *p = json_array_get(preds, (size_t)i);
        json_t *ji = json_object_get(p, "index"), *js = json_object_get(p, "score");
        const char *label = json_string_value(json_object_get(p, "label"));
        if (!json_is_integer(ji) || !json_is_number(js) || !label || json_object_size(p) != 3) {
            snprintf(why, sizeof why, "prediction %d is not {index, label, score}", i);
            return why;
        }
        int idx = (int)json_integer_value(ji);
        double score = json_number_value(js);
        if (idx < 0 || idx >= g_classes) return "index out of range";
        if (fabs(score - probs[idx]) > 1e-5) {
            snprintf(why, sizeof why, "index %d: score %.8f, reference %.8f", idx, score,
                     probs[idx]);
            return why;
        }
        if (strcmp(label, eng_labels_get(g_labels, idx)) != 0) {
            snprintf(why, sizeof why, "index %d: label '%s', expected '%s'", idx, label,
                     eng_labels_get(g_labels, idx));
            return why;
        }
        if (score > prev + 1e-6) return "predictions not in descending order";
        if (score < kth - 1e-5) {
            snprintf(why, sizeof why, "index %d (%.8f) is not in the top %d (k-th %.8f)", idx,
                     score, k, kth);
            return why;
        }
        prev = score;
    }
    return NULL;
}

/* Checks a whole single-image /classify answer. */
static const char *check_classify(const struct resp *r, const struct timg *img, int k,
                                  const char *model) {
    static _Thread_local char why[512];
    char hb[256];
    if (r->rc != CURLE_OK) {
        snprintf(why, sizeof why, "curl: %s", curl_easy_strerror(r->rc));
        return why;
    }
    if (r->status != 200) {
        snprintf(why, sizeof why, "%s: status %ld: %.200s", img->name, r->status,
                 r->body ? r->body : "");
        return why;
    }
    json_t *j = resp_json(r);
    const char *res = NULL;
    json_t *t = json_object_get(j, "timing");
    if (!j || json_object_size(j) != 3 ||
        strcmp(json_string_value(json_object_get(j, "model")) ?: "", model) != 0) {
        res = "body is not {model, predictions, timing} with the right model";
    } else if (!json_is_number(json_object_get(t, "queue_ms")) ||
               !json_is_number(json_object_get(t, "decode_ms")) ||
               !json_is_number(json_object_get(t, "infer_ms")) ||
               json_integer_value(json_object_get(t, "batch_size")) < 1) {
        res = "timing lacks queue_ms, decode_ms, infer_ms or batch_size";
    } else if (!resp_header(r, "Server-Timing", hb, sizeof hb) || !strstr(hb, "decode;dur=") ||
               !strstr(hb, "queue;dur=") || !strstr(hb, "infer;dur=")) {
        res = "no Server-Timing header with decode, queue and infer";
    } else if ((res = check_preds(json_object_get(j, "predictions"), img->probs, k))) {
        snprintf(why, sizeof why, "%s: %s", img->name, res);
        res = why;
    }
    json_decref(j);
    return res;
}

/* Small non-JPEG bodies, named by their magic. */
static const unsigned char png_body[] = "\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10\0\0\0\x10\x08\x02";
static const unsigned char gif_body[] = "GIF89a\x10\0\x10\0\x80\0\0\xff\xff\xff\0\0\0!";
static const unsigned char webp_body[] = "RIFF\x24\0\0\0WEBPVP8 \x18\0\0\0\x30\x01\0\x9d\x01\x2a";
static const unsigned char zip_body[] = "PK\x03\x04\x14\0\0\0\x08\0abcdefghijklmnop";

/* ------------------------------------------------------------------------ */
/* The shared server for most cases                                         */
/* ------------------------------------------------------------------------ */

static struct server g_srv;
static int g_srv_up;

#define NEED_SERVER()                                                                              \
    do {                                                                                           \
        if (!g_srv_up) {                                                                           \
            CHECK(0, "the shared server did not start");                                           \
        }                                                                                          \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Cases                                                                    */
/* ------------------------------------------------------------------------ */

static void test_health_and_headers(void) {
    NEED_SERVER();
    struct resp r;
    char hb[256];
    get(&r, &g_srv, "/healthz");
    CHECK(r.status == 200, "healthz %ld", r.status);
    json_t *j = resp_json(&r);
    CHECK(j && !strcmp(json_string_value(json_object_get(j, "status")) ?: "", "ok"), "%s", r.body);
    json_decref(j);
    CHECK(resp_header(&r, "X-Content-Type-Options", hb, sizeof hb) && !strcmp(hb, "nosniff"));
    CHECK(resp_header(&r, "X-Request-Id", hb, sizeof hb) && strlen(hb) >= 8);
    char first_id[256];
    snprintf(first_id, sizeof first_id, "%s", hb);
    resp_free(&r);

    get(&r, &g_srv, "/readyz");
    CHECK(r.status == 200, "readyz %ld", r.status);
    j = resp_json(&r);
    CHECK(j && !strcmp(json_string_value(json_object_get(j, "status")) ?: "", "ready"));
    json_decref(j);
    CHECK(resp_header(&r, "X-Request-Id", hb, sizeof hb) && strcmp(hb, first_id) != 0,
          "request ids repeat");
    resp_free(&r);

    /* A sane client id is echoed; an insane one is replaced. */
    char url[256];
    snprintf(url, sizeof url, "%s/healthz", g_srv.base);
    const char *h1[] = {"X-Request-Id: abc-123.DEF_x", NULL};
    struct req_opts o = {.hdrs = h1};
    do_request(&r, url, &o);
    CHECK(resp_header(&r, "X-Request-Id", hb, sizeof hb) && !strcmp(hb, "abc-123.DEF_x"),
          "sane id not echoed: %s", hb);
    resp_free(&r);
    const char *h2[] = {"X-Request-Id: bad id <script>", NULL};
    o.hdrs = h2;
    do_request(&r, url, &o);
    CHECK(resp_header(&r, "X-Request-Id", hb, sizeof hb) && !strstr(hb, "script") && hb[0],
          "insane id echoed: %s", hb);
    resp_free(&r);

    /* HEAD works where GET does. */
    struct req_opts head = {.method = "HEAD"};
    do_request(&r, url, &head);
    CHECK(r.rc == CURLE_OK && r.status == 200 && r.len == 0, "HEAD /healthz: %ld", r.status);
    resp_free(&r);
}

static void test_classify_raw(void) {
    NEED_SERVER();
    const struct timg *img = &g_imgs[0];
    struct resp r;
    post(&r, &g_srv, "/classify", img->data, img->len, "image/jpeg");
    const char *why = check_classify(&r, img, 5, "resnet18");
    char hb[128];
    CHECK(!why, "%s", why);
    CHECK(resp_header(&r, "Content-Type", hb, sizeof hb) && !strncmp(hb, "application/json", 16));
    CHECK(resp_header(&r, "X-Content-Type-Options", hb, sizeof hb));
    resp_free(&r);

    post(&r, &g_srv, "/classify?topk=1", img->data, img->len, "application/octet-stream");
    why = check_classify(&r, img, 1, "resnet18");
    CHECK(!why, "octet-stream topk=1: %s", why);
    resp_free(&r);

    char path[64];
    snprintf(path, sizeof path, "/classify?topk=%d", g_classes);
    post(&r, &g_srv, path, img->data, img->len, "image/jpeg");
    why = check_classify(&r, img, g_classes, "resnet18");
    CHECK(!why, "topk=%d: %s", g_classes, why);
    resp_free(&r);

    /* Chunked upload, no Content-Length. */
    char url[256];
    snprintf(url, sizeof url, "%s/classify?topk=3", g_srv.base);
    const char *hdrs[] = {"Content-Type: image/jpeg", NULL};
    struct req_opts o = {.body = img->data, .len = img->len, .chunked = 1, .hdrs = hdrs};
    do_request(&r, url, &o);
    why = check_classify(&r, img, 3, "resnet18");
    CHECK(!why, "chunked: %s", why);
    resp_free(&r);
}

/* Every test image, one by one, against the in-process engine. */
static void test_classify_matches_engine(void) {
    NEED_SERVER();
    for (int i = 0; i < g_nimgs; i++) {
        struct resp r;
        post(&r, &g_srv, "/classify", g_imgs[i].data, g_imgs[i].len, "image/jpeg");
        const char *why = check_classify(&r, &g_imgs[i], 5, "resnet18");
        resp_free(&r);
        CHECK(!why, "%s", why);
    }
}

/* The same answers as `build/imgclass --json` for the same images. */
static void test_classify_matches_cli(void) {
    NEED_SERVER();
    if (access(g_cli, X_OK) != 0) SKIP("%s is not built", g_cli);
    /* The CLI reads files: write the synthetic images out too. */
    char cmd[16384];
    int n = snprintf(cmd, sizeof cmd, "%s --json --model random:resnet18 --topk 5", g_cli);
    /* stderr (a warning about random weights) is not ours to print. */
    char paths[MAX_IMGS][PATH_MAX + 160];
    for (int i = 0; i < g_nimgs; i++) {
        snprintf(paths[i], sizeof paths[i], "%s/cli-%d.jpg", g_tmp, i);
        FILE *f = fopen(paths[i], "wb");
        CHECK(f && fwrite(g_imgs[i].data, 1, g_imgs[i].len, f) == g_imgs[i].len);
        fclose(f);
        n += snprintf(cmd + n, sizeof cmd - (size_t)n, " %s", paths[i]);
    }
    snprintf(cmd + n, sizeof cmd - (size_t)n, " 2>/dev/null");
    FILE *p = popen(cmd, "r");
    CHECK(p, "popen %s", g_cli);
    char line[65536];
    int seen = 0;
    while (fgets(line, sizeof line, p)) {
        json_error_t e;
        json_t *cj = json_loads(line, 0, &e);
        if (!cj) continue;
        const char *file = json_string_value(json_object_get(cj, "file"));
        int idx = -1;
        for (int i = 0; file && i < g_nimgs; i++)
            if (!strcmp(file, paths[i]) || strstr(file, paths[i] + strlen(g_tmp))) idx = i;
        json_t *cpreds = json_object_get(cj, "predictions");
        if (idx < 0 || !json_is_array(cpreds)) {
            json_decref(cj);
            continue;
        }
        struct resp r;
        post(&r, &g_srv, "/classify?topk=5", g_imgs[idx].data, g_imgs[idx].len, "image/jpeg");
        json_t *sj = resp_json(&r);
        json_t *spreds = json_object_get(sj, "predictions");
        int ok = r.status == 200 && json_array_size(spreds) == json_array_size(cpreds);
        char why[256] = "";
        for (size_t k = 0; ok && k < json_array_size(cpreds); k++) {
            json_t *c = json_array_get(cpreds, k), *s = json_array_get(spreds, k);
            int ci = (int)json_integer_value(json_object_get(c, "index"));
            int si = (int)json_integer_value(json_object_get(s, "index"));
            double cs = json_number_value(json_object_get(c, "score"));
            double ss = json_number_value(json_object_get(s, "score"));
            /* Equal indices, or a near-tie that may order either way. */
            if (fabs(cs - ss) > 1e-5 || (ci != si && fabs(cs - ss) > 1e-6)) {
                snprintf(why, sizeof why, "%s #%zu: cli %d %.7f, server %d %.7f", g_imgs[idx].name,
                         k, ci, cs, si, ss);
                ok = 0;
            }
        }
        json_decref(sj);
        json_decref(cj);
        resp_free(&r);
        if (!ok) {
            pclose(p);
            CHECK(0, "%s", why[0] ? why : "server answer differs from the CLI");
        }
        seen++;
    }
    int st = pclose(p);
    CHECK(seen == g_nimgs, "the CLI answered %d of %d images (status %d)", seen, g_nimgs, st);
}

static void test_topk_invalid(void) {
    NEED_SERVER();
    static const char *bad[] = {
        "0", "-1", "1001", "1e9", "text", "", "5x", "%205", "+5", "99999999999999999999", "1.5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char path[128];
        snprintf(path, sizeof path, "/classify?topk=%s", bad[i]);
        struct resp r;
        post(&r, &g_srv, path, g_imgs[0].data, g_imgs[0].len, "image/jpeg");
        const char *why = check_error(&r, 400, "invalid_topk");
        resp_free(&r);
        CHECK(!why, "topk=%s: %s", bad[i], why);
    }
}

static void test_bad_images(void) {
    NEED_SERVER();
    struct resp r;
    const char *why;
    post(&r, &g_srv, "/classify", "", 0, "image/jpeg");
    why = check_error(&r, 400, "empty_body");
    resp_free(&r);
    CHECK(!why, "empty body: %s", why);

    /* Truncated JPEG: the first half of a real one. */
    const struct timg *img = &g_imgs[g_nimgs - 3];
    post(&r, &g_srv, "/classify", img->data, img->len / 2, "image/jpeg");
    why = check_error(&r, 400, "invalid_image");
    resp_free(&r);
    CHECK(!why, "truncated JPEG: %s", why);

    /* Garbage after a JPEG magic. */
    post(&r, &g_srv, "/classify", "\xff\xd8\xff\xe0garbage-garbage-garbage", 26, "image/jpeg");
    why = check_error(&r, 400, "invalid_image");
    resp_free(&r);
    CHECK(!why, "broken JPEG header: %s", why);

    struct {
        const void *data;
        size_t len;
        const char *name;
    } others[] = {
        {png_body, sizeof png_body - 1, "PNG"},
        {gif_body, sizeof gif_body - 1, "GIF"},
        {webp_body, sizeof webp_body - 1, "WebP"},
        {zip_body, sizeof zip_body - 1, "ZIP"},
        {"hello, this is plain text and not an image", 42, NULL},
    };
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        post(&r, &g_srv, "/classify", others[i].data, others[i].len, "image/jpeg");
        why = check_error(&r, 415, "unsupported_media_type");
        if (!why && others[i].name && !strstr(r.body, others[i].name))
            why = "the message does not name the format";
        char body[256];
        snprintf(body, sizeof body, "%.200s", r.body ? r.body : "");
        resp_free(&r);
        CHECK(!why, "%s: %s (%s)", others[i].name ? others[i].name : "text", why, body);
    }
    /* Still healthy and still right. */
    post(&r, &g_srv, "/classify", g_imgs[0].data, g_imgs[0].len, "image/jpeg");
    why = check_classify(&r, &g_imgs[0], 5, "resnet18");
    resp_free(&r);
    CHECK(!why, "after bad input: %s", why);
}

static void test_not_found_and_methods(void) {
    NEED_SERVER();
    struct resp r;
    char hb[128], url[256];
    get(&r, &g_srv, "/nope");
    const char *why = check_error(&r, 404, "not_found");
    resp_free(&r);
    CHECK(!why, "GET /nope: %s", why);

    get(&r, &g_srv, "/classify");
    why = check_error(&r, 405, "method_not_allowed");
    CHECK(!why, "GET /classify: %s", why);
    CHECK(resp_header(&r, "Allow", hb, sizeof hb) && !strcmp(hb, "POST"), "Allow: %s", hb);
    resp_free(&r);

    static const struct {
        const char *method, *path, *allow;
    } cases[] = {
        {"POST", "/healthz", "GET, HEAD"},   {"DELETE", "/metrics", "GET, HEAD"},
        {"PUT", "/classify", "POST"},        {"BREW", "/classify", "POST"},
        {"POST", "/readyz", "GET, HEAD"}, /* /v1/models is KServe's: test_protocols */
        {"PATCH", "/", "GET, HEAD"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(url, sizeof url, "%s%s", g_srv.base, cases[i].path);
        struct req_opts o = {.method = cases[i].method};
        do_request(&r, url, &o);
        why = check_error(&r, 405, "method_not_allowed");
        int allow_ok = resp_header(&r, "Allow", hb, sizeof hb) && !strcmp(hb, cases[i].allow);
        resp_free(&r);
        CHECK(!why, "%s %s: %s", cases[i].method, cases[i].path, why);
        CHECK(allow_ok, "%s %s: Allow is '%s', expected '%s'", cases[i].method, cases[i].path, hb,
              cases[i].allow);
    }
}

static curl_mime *mime_files(CURL *c, const struct timg *const *imgs, int n) {
    curl_mime *m = curl_mime_init(c);
    for (int i = 0; i < n; i++) {
        curl_mimepart *p = curl_mime_addpart(m);
        curl_mime_name(p, "file");
        curl_mime_data(p, (const char *)imgs[i]->data, imgs[i]->len);
        curl_mime_filename(p, imgs[i]->name);
        curl_mime_type(p, "image/jpeg");
    }
    return m;
}

static void test_multipart(void) {
    NEED_SERVER();
    CURL *c = curl_easy_init();
    char url[256];
    snprintf(url, sizeof url, "%s/classify?topk=3", g_srv.base);

    /* Several files, one of them not a JPEG, plus a plain field. */
    const struct timg *a = &g_imgs[0], *b = &g_imgs[g_nimgs - 1], *d = &g_imgs[g_nimgs / 2];
    curl_mime *m = curl_mime_init(c);
    const struct timg *files[] = {a, b, d};
    for (int i = 0; i < 3; i++) {
        curl_mimepart *p = curl_mime_addpart(m);
        curl_mime_name(p, "file");
        curl_mime_data(p, (const char *)files[i]->data, files[i]->len);
        curl_mime_filename(p, files[i]->name);
        curl_mime_type(p, "image/jpeg");
        if (i == 1) {
            p = curl_mime_addpart(m);
            curl_mime_name(p, "file");
            curl_mime_data(p, (const char *)png_body, sizeof png_body - 1);
            curl_mime_filename(p, "picture.png");
            curl_mime_type(p, "image/png");
            p = curl_mime_addpart(m);
            curl_mime_name(p, "note");
            curl_mime_data(p, "just a form field", CURL_ZERO_TERMINATED);
        }
    }
    struct resp r;
    struct req_opts o = {.mime = m, .easy = c};
    do_request(&r, url, &o);
    curl_mime_free(m);
    CHECK(r.status == 200, "status %ld: %.300s", r.status, r.body ? r.body : "");
    json_t *j = resp_json(&r);
    json_t *res = json_object_get(j, "results");
    CHECK(j && !strcmp(json_string_value(json_object_get(j, "model")) ?: "", "resnet18"));
    CHECK(json_is_array(res) && json_array_size(res) == 4, "%.300s", r.body);
    const struct timg *expect[] = {a, b, NULL, d};
    const char *names[] = {a->name, b->name, "picture.png", d->name};
    for (size_t i = 0; i < 4; i++) {
        json_t *it = json_array_get(res, i);
        const char *fn = json_string_value(json_object_get(it, "filename"));
        CHECK(fn && !strcmp(fn, names[i]), "result %zu filename %s", i, fn ? fn : "(none)");
        if (!expect[i]) {
            json_t *e = json_object_get(it, "error");
            CHECK(e && !strcmp(json_string_value(json_object_get(e, "code")) ?: "",
                               "unsupported_media_type"),
                  "PNG part: %.200s", r.body);
            CHECK(strstr(json_string_value(json_object_get(e, "message")) ?: "", "PNG"));
            continue;
        }
        const char *why = check_preds(json_object_get(it, "predictions"), expect[i]->probs, 3);
        CHECK(!why, "part %zu (%s): %s", i, names[i], why);
        CHECK(json_is_object(json_object_get(it, "timing")));
    }
    json_decref(j);
    resp_free(&r);

    /* A single file part answers like a raw body. */
    const struct timg *one[] = {b};
    m = mime_files(c, one, 1);
    o.mime = m;
    do_request(&r, url, &o);
    curl_mime_free(m);
    const char *why = check_classify(&r, b, 3, "resnet18");
    resp_free(&r);
    CHECK(!why, "single part: %s", why);
    curl_easy_cleanup(c);
}

/* Sends body as multipart/form-data with the given Content-Type. */
static void post_raw_multipart(struct resp *r, const char *ctype, const void *body, size_t len) {
    post(r, &g_srv, "/classify", body, len, ctype);
}

static void test_multipart_malformed(void) {
    NEED_SERVER();
    struct resp r;
    const char *why;
    const char *part = "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; "
                       "filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n";

    post_raw_multipart(&r, "multipart/form-data", part, strlen(part));
    why = check_error(&r, 400, "invalid_multipart");
    resp_free(&r);
    CHECK(!why, "no boundary: %s", why);

    post_raw_multipart(&r, "multipart/form-data; boundary=QQQ", part, strlen(part));
    why = check_error(&r, 400, "invalid_multipart");
    resp_free(&r);
    CHECK(!why, "no delimiter in the body: %s", why);

    /* Unterminated part: data but no closing delimiter. */
    size_t n = strlen(part);
    char *buf = malloc(n + g_imgs[0].len + 64);
    memcpy(buf, part, n);
    memcpy(buf + n, g_imgs[0].data, g_imgs[0].len);
    post_raw_multipart(&r, "multipart/form-data; boundary=XyZ", buf, n + g_imgs[0].len);
    why = check_error(&r, 400, "invalid_multipart");
    resp_free(&r);
    CHECK(!why, "unterminated part: %s", why);

    /* The same, terminated, is fine (and the boundary may be quoted). */
    memcpy(buf + n + g_imgs[0].len, "\r\n--XyZ--\r\n", 11);
    post_raw_multipart(&r, "multipart/form-data; boundary=\"XyZ\"", buf, n + g_imgs[0].len + 11);
    why = check_classify(&r, &g_imgs[0], 5, "resnet18");
    resp_free(&r);
    free(buf);
    CHECK(!why, "hand-made multipart: %s", why);

    /* 1000 tiny parts. */
    size_t cap = 1000 * 120 + 64, len = 0;
    buf = malloc(cap);
    for (int i = 0; i < 1000; i++)
        len += (size_t)snprintf(buf + len, cap - len,
                                "--B\r\nContent-Disposition: form-data; name=\"f%d\"; "
                                "filename=\"f%d\"\r\n\r\nx\r\n",
                                i, i);
    len += (size_t)snprintf(buf + len, cap - len, "--B--\r\n");
    post_raw_multipart(&r, "multipart/form-data; boundary=B", buf, len);
    why = check_error(&r, 413, "too_many_files");
    resp_free(&r);
    free(buf);
    CHECK(!why, "1000 parts: %s", why);

    /* A 1 MB part header line. */
    len = 0;
    cap = (1 << 20) + 256;
    buf = malloc(cap);
    len += (size_t)snprintf(buf, cap, "--B\r\nContent-Disposition: form-data; name=\"");
    memset(buf + len, 'a', 1 << 20);
    len += 1 << 20;
    len += (size_t)snprintf(buf + len, cap - len, "\"\r\n\r\nx\r\n--B--\r\n");
    post_raw_multipart(&r, "multipart/form-data; boundary=B", buf, len);
    why = check_error(&r, 400, "invalid_multipart");
    resp_free(&r);
    free(buf);
    CHECK(!why, "1 MB header line: %s", why);

    post_raw_multipart(&r, "multipart/mixed; boundary=B", "--B\r\n\r\nx\r\n--B--\r\n", 17);
    why = check_error(&r, 415, "unsupported_media_type");
    resp_free(&r);
    CHECK(!why, "multipart/mixed: %s", why);

    const char *nofile = "--B\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nhi\r\n--B--\r\n";
    post_raw_multipart(&r, "multipart/form-data; boundary=B", nofile, strlen(nofile));
    why = check_error(&r, 400, "invalid_multipart");
    resp_free(&r);
    CHECK(!why, "no file part: %s", why);

    get(&r, &g_srv, "/healthz");
    CHECK(r.status == 200, "unhealthy after hostile multipart");
    resp_free(&r);
}

static void test_static_files(void) {
    NEED_SERVER();
    static const struct {
        const char *path, *ctype, *needle;
    } ok[] = {
        {"/", "text/html", "imgclassd test index"},
        {"/index.html", "text/html", "imgclassd test index"},
        {"/app.css", "text/css", "body {"},
        {"/app.js", "text/javascript", "console.log"},
        {"/sub/data.json", "application/json", "\"ok\""},
        {"/sub/", "text/html", "sub index"},
        {"/inside", "text/plain", "plain"}, /* a symlink that stays inside */
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        struct resp r;
        char hb[128];
        get(&r, &g_srv, ok[i].path);
        int good = r.status == 200 && r.body && strstr(r.body, ok[i].needle) &&
                   resp_header(&r, "Content-Type", hb, sizeof hb) &&
                   !strncmp(hb, ok[i].ctype, strlen(ok[i].ctype)) &&
                   resp_header(&r, "X-Content-Type-Options", hb, sizeof hb);
        char body[128];
        snprintf(body, sizeof body, "%.100s", r.body ? r.body : "");
        long st = r.status;
        resp_free(&r);
        CHECK(good, "GET %s: %ld %s", ok[i].path, st, body);
    }
    /* Refused: escapes, dotfiles, symlinks out, missing files. */
    static const char *bad[] = {
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/sub/../../etc/passwd",
        "/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/out-passwd",
        "/out-dir/passwd",
        "//etc/passwd",
        "/.secret",
        "/missing.css",
        "/sub/..%2f..%2f..%2fetc/passwd",
        "/etc/passwd",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char url[512];
        snprintf(url, sizeof url, "%s%s", g_srv.base, bad[i]);
        struct resp r;
        struct req_opts o = {.path_as_is = 1};
        do_request(&r, url, &o);
        int refused = (r.status == 403 || r.status == 404) &&
                      !(r.body && (strstr(r.body, "root:") || strstr(r.body, "TOPSECRET")));
        const char *why = refused ? check_error(&r, r.status, NULL) : "served";
        long st = r.status;
        resp_free(&r);
        CHECK(refused && !why, "GET %s: %ld %s", bad[i], st, why ? why : "");
    }
}

static void test_models_endpoint(void) {
    NEED_SERVER();
    struct resp r;
    /* KServe v1: the names; /v1/models/{m}: the details (issue 12). */
    get(&r, &g_srv, "/v1/models");
    CHECK(r.status == 200, "%ld", r.status);
    json_t *j = resp_json(&r);
    CHECK(!strcmp(json_string_value(json_array_get(json_object_get(j, "models"), 0)) ?: "",
                  "resnet18"),
          "%.200s", r.body);
    json_decref(j);
    resp_free(&r);
    get(&r, &g_srv, "/v1/models/resnet18");
    CHECK(r.status == 200, "%ld", r.status);
    j = resp_json(&r);
    json_t *m = j;
    CHECK(m, "%.200s", r.body);
    CHECK(json_is_true(json_object_get(m, "ready")));
    CHECK(!strcmp(json_string_value(json_object_get(m, "name")) ?: "", "resnet18"));
    CHECK(!strcmp(json_string_value(json_object_get(m, "precision")) ?: "", "fp32"));
    CHECK(!strcmp(json_string_value(json_object_get(m, "architecture")) ?: "", "resnet18"));
    CHECK(json_integer_value(json_object_get(m, "parameters")) > 11000000);
    CHECK(json_integer_value(json_object_get(m, "classes")) == g_classes);
    json_t *size = json_object_get(m, "input_size");
    CHECK(json_array_size(size) == 3 && json_integer_value(json_array_get(size, 1)) == 224);
    json_t *pp = json_object_get(m, "preprocessing");
    CHECK(json_integer_value(json_object_get(pp, "resize")) == 256 &&
          json_integer_value(json_object_get(pp, "crop")) == 224 &&
          json_array_size(json_object_get(pp, "mean")) == 3);
    json_t *b = json_object_get(m, "batching");
    CHECK(json_integer_value(json_object_get(b, "max_batch")) >= 1 &&
          json_object_get(b, "batch_timeout_us") && json_object_get(b, "queue_limit"));
    json_t *t = json_object_get(m, "threads");
    CHECK(json_integer_value(json_object_get(t, "workers")) >= 1 &&
          json_integer_value(json_object_get(t, "http")) >= 1);
    CHECK(!strncmp(json_string_value(json_object_get(m, "weights")) ?: "", "random:resnet18", 15));
    CHECK(json_is_true(json_object_get(m, "random")));
    json_decref(j);
    resp_free(&r);
}

static void test_metrics_endpoint(void) {
    NEED_SERVER();
    struct resp r;
    /* At least one classified image and one 404 before scraping. */
    post(&r, &g_srv, "/classify", g_imgs[0].data, g_imgs[0].len, "image/jpeg");
    resp_free(&r);
    get(&r, &g_srv, "/no-such-thing");
    resp_free(&r);
    get(&r, &g_srv, "/metrics");
    char hb[128];
    CHECK(r.status == 200 && r.body);
    CHECK(resp_header(&r, "Content-Type", hb, sizeof hb) && strstr(hb, "text/plain") &&
              strstr(hb, "version=0.0.4"),
          "Content-Type %s", hb);
    static const char *names[] = {
        "# TYPE imgclassd_requests_total counter",
        "# TYPE imgclassd_request_duration_seconds histogram",
        "# TYPE imgclassd_queue_wait_seconds histogram",
        "# TYPE imgclassd_decode_duration_seconds histogram",
        "# TYPE imgclassd_inference_duration_seconds histogram",
        "# TYPE imgclassd_batch_size histogram",
        "# TYPE imgclassd_queue_depth gauge",
        "# TYPE imgclassd_inflight_requests gauge",
        "# TYPE imgclassd_images_total counter",
        "imgclassd_model_info{arch=\"resnet18\",classes=\"1000\",weights=\"random:resnet18",
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE process_cpu_seconds_total counter",
        "# TYPE process_start_time_seconds gauge",
        "imgclassd_batch_size_bucket{le=\"+Inf\"}",
        "imgclassd_request_duration_seconds_sum",
        "imgclassd_request_duration_seconds_count",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        CHECK(strstr(r.body, names[i]), "missing %s", names[i]);
    CHECK(metric_value(r.body, "imgclassd_requests_total{route=\"/classify\",code=\"200\"}") >= 1);
    CHECK(metric_value(r.body, "imgclassd_requests_total{route=\"other\",code=\"404\"}") >= 1);
    CHECK(metric_value(r.body, "imgclassd_images_total") >= 1);
    /* the thread sizing follows the CPUs the process may use */
    double cpus = metric_value(r.body, "imgclassd_cpus");
    CHECK(cpus >= 1 && metric_value(r.body, "imgclassd_engine_threads") >= 1 &&
              metric_value(r.body, "imgclassd_http_threads") >= 1,
          "cpus %g", cpus);
    CHECK(metric_value(r.body, "process_resident_memory_bytes") > 1e6);
    double start = metric_value(r.body, "process_start_time_seconds");
    CHECK(fabs(start - (double)time(NULL)) < 3600, "start time %f", start);
    CHECK(metric_value(r.body, "imgclassd_batch_size_bucket{le=\"+Inf\"}") ==
          metric_value(r.body, "imgclassd_batch_size_count"));
    /* Every line is a comment or "name[{labels}] value". */
    for (char *p = r.body; *p;) {
        char *eol = strchr(p, '\n');
        CHECK(eol, "last line not terminated");
        if (*p != '#') {
            char *sp = memchr(p, ' ', (size_t)(eol - p));
            CHECK(sp && sp > p, "bad line %.80s", p);
            char *end;
            strtod(sp + 1, &end);
            CHECK(end == eol, "bad value in %.80s", p);
        }
        p = eol + 1;
    }
    resp_free(&r);
}

/* ---- 64 concurrent clients --------------------------------------------- */

struct client_ctx {
    const struct server *s;
    int id, rounds;
    atomic_int *failures;
    char why[256];
};

static void *client_main(void *arg) {
    struct client_ctx *c = arg;
    CURL *easy = curl_easy_init(); /* reused: keep-alive across requests */
    char url[256];
    snprintf(url, sizeof url, "%s/classify", c->s->base);
    for (int k = 0; k < c->rounds; k++) {
        /* Half the clients share image 0; the rest spread over all. */
        int idx = c->id % 2 ? 0 : (c->id / 2 + k) % g_nimgs;
        const struct timg *img = &g_imgs[idx];
        const char *hdrs[] = {"Content-Type: image/jpeg", NULL};
        struct req_opts o = {.body = img->data, .len = img->len, .hdrs = hdrs, .easy = easy};
        struct resp r;
        do_request(&r, url, &o);
        const char *why = check_classify(&r, img, 5, "resnet18");
        if (why && !c->why[0]) snprintf(c->why, sizeof c->why, "client %d: %s", c->id, why);
        if (why) atomic_fetch_add(c->failures, 1);
        resp_free(&r);
    }
    curl_easy_cleanup(easy);
    return NULL;
}

static void test_concurrent_64_clients(void) {
    struct server s;
    char why[512];
    const char *args[] = {
        "--max-batch", "8", "--batch-timeout-us", "20000", "--queue-limit", "256", "--access-log",
        "off",         NULL};
    CHECK(server_spawn(&s, args, NULL, 1, why, sizeof why) == 0, "%s", why);
    enum { N = 64 };
    pthread_t th[N];
    struct client_ctx cs[N];
    atomic_int failures = 0;
    for (int i = 0; i < N; i++) {
        cs[i] = (struct client_ctx){.s = &s, .id = i, .rounds = 3, .failures = &failures};
        pthread_create(&th[i], NULL, client_main, &cs[i]);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    const char *first = "";
    for (int i = 0; i < N; i++)
        if (cs[i].why[0]) {
            first = cs[i].why;
            break;
        }
    double count = scrape(&s, "imgclassd_batch_size_count");
    double single = scrape(&s, "imgclassd_batch_size_bucket{le=\"1\"}");
    double images = scrape(&s, "imgclassd_images_total");
    int rc = server_stop(&s);
    CHECK(atomic_load(&failures) == 0, "%d failed; first: %s", atomic_load(&failures), first);
    CHECK(images >= N * 3, "images_total %.0f", images);
    CHECK(count > single, "no batch larger than 1 formed (%.0f batches, %.0f of size 1)", count,
          single);
    CHECK(rc == 0, "exit status %d; log: %s", rc, log_tail(&s));
}

/* ---- overload and deadlines -------------------------------------------- */

struct burst_ctx {
    const struct server *s;
    const struct timg *img;
    long status;
    CURLcode rc;
    char retry_after[32];
    char code[64];
};

static void *burst_main(void *arg) {
    struct burst_ctx *b = arg;
    struct resp r;
    post(&r, b->s, "/classify", b->img->data, b->img->len, "image/jpeg");
    b->status = r.status;
    b->rc = r.rc;
    char hb[64];
    if (resp_header(&r, "Retry-After", hb, sizeof hb))
        snprintf(b->retry_after, sizeof b->retry_after, "%.31s", hb);
    json_t *j = resp_json(&r);
    const char *c = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
    if (c) snprintf(b->code, sizeof b->code, "%s", c);
    json_decref(j);
    resp_free(&r);
    return NULL;
}

static void test_queue_full_503(void) {
    struct server s;
    char why[512];
    const char *args[] = {"--queue-limit",      "1", "--max-batch",  "1",   "--workers", "1",
                          "--batch-timeout-us", "0", "--access-log", "off", NULL};
    CHECK(server_spawn(&s, args, NULL, 1, why, sizeof why) == 0, "%s", why);
    enum { N = 48 };
    pthread_t th[N];
    struct burst_ctx b[N];
    for (int i = 0; i < N; i++) {
        b[i] = (struct burst_ctx){.s = &s, .img = &g_imgs[i % g_nimgs]};
        pthread_create(&th[i], NULL, burst_main, &b[i]);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    int ok = 0, full = 0, other = 0;
    char odd[256] = "";
    for (int i = 0; i < N; i++) {
        if (b[i].rc == CURLE_OK && b[i].status == 200) {
            ok++;
        } else if (b[i].rc == CURLE_OK && b[i].status == 503 && !strcmp(b[i].code, "queue_full") &&
                   atoi(b[i].retry_after) >= 1) {
            full++;
        } else {
            other++;
            snprintf(odd, sizeof odd, "status %ld rc %d code %s retry '%s'", b[i].status,
                     (int)b[i].rc, b[i].code, b[i].retry_after);
        }
    }
    /* Full service right after the burst. */
    struct resp r;
    post(&r, &s, "/classify", g_imgs[0].data, g_imgs[0].len, "image/jpeg");
    const char *after = check_classify(&r, &g_imgs[0], 5, "resnet18");
    resp_free(&r);
    double rejected = scrape(&s, "imgclassd_queue_rejections_total");
    int rc = server_stop(&s);
    CHECK(other == 0, "%d unexpected answers, e.g. %s", other, odd);
    CHECK(full > 0, "no 503 under a burst of %d with --queue-limit 1 (%d ok)", N, ok);
    CHECK(ok > 0, "nothing succeeded");
    CHECK(rejected >= full, "queue_rejections_total %.0f < %d", rejected, full);
    CHECK(!after, "after the burst: %s", after);
    CHECK(rc == 0, "exit status %d; log: %s", rc, log_tail(&s));
}

/* A raw client: connects and sends the first `sent` bytes of a POST of
 * img (all of it when sent >= img->len), does not read. */
static int raw_post_part(int port, const struct timg *img, size_t sent) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    char h[256];
    int n = snprintf(h, sizeof h,
                     "POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     img->len);
    if (sent > img->len) sent = img->len;
    if (send(fd, h, (size_t)n, MSG_NOSIGNAL) != n ||
        send(fd, img->data, sent, MSG_NOSIGNAL) != (ssize_t)sent) {
        close(fd);
        return -1;
    }
    return fd;
}

static int raw_post(int port, const struct timg *img) {
    return raw_post_part(port, img, img->len);
}

/* A request whose body is still on its way: while it is, the batcher holds
 * a lone queued image for up to the batch timeout, waiting for it. Returns
 * the socket (close it to end the upload) once the server has accepted the
 * request's headers (its Content-Length is reserved from the body budget
 * in the same step that announces it to the batcher), or -1. */
static int upload_in_progress(const struct server *s) {
    const char *series = "imgclassd_inflight_body_bytes";
    double want = scrape(s, series) + 1; /* byte counts: more = at least one more */
    int fd = raw_post_part(s->port, &g_imgs[0], 100);
    if (fd >= 0 && !(scrape_until(s, series, want, 10) >= want)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The batching policy at low load (server/batcher.c): an image waits for
 * company only while another request is on its way. */
static void test_lone_image_not_held(void) {
    struct server s;
    char why[512];
    const char *args[] = {"--max-batch", "8", "--batch-timeout-us", "1500000", NULL};
    CHECK(server_spawn(&s, args, NULL, 1, why, sizeof why) == 0, "%s", why);
    struct resp r;
    post(&r, &s, "/classify", g_imgs[0].data, g_imgs[0].len, "image/jpeg");
    const char *e1 = check_classify(&r, &g_imgs[0], 5, "resnet18");
    resp_free(&r);
    double lone = scrape(&s, "imgclassd_queue_wait_seconds_sum");

    int fd = upload_in_progress(&s);
    post(&r, &s, "/classify", g_imgs[1 % g_nimgs].data, g_imgs[1 % g_nimgs].len, "image/jpeg");
    const char *e2 = check_classify(&r, &g_imgs[1 % g_nimgs], 5, "resnet18");
    resp_free(&r);
    double held = scrape(&s, "imgclassd_queue_wait_seconds_sum") - lone;
    if (fd >= 0) close(fd);
    int rc = server_stop(&s);
    CHECK(!e1, "alone: %s", e1);
    CHECK(!e2, "with an upload in progress: %s", e2);
    CHECK(fd >= 0, "could not start the second upload");
    CHECK(lone < 0.75, "a lone image waited %.3f s in the queue (batch timeout 1.5 s)", lone);
    CHECK(held >= 1.4, "with another upload on its way the image waited only %.3f s", held);
    CHECK(rc == 0, "exit status %d; log: %s", rc, log_tail(&s));
}

static void test_deadline_504(void) {
    struct server s;
    char why[512];
    /* A batch would wait 5 s to fill (another upload is on its way), but the
     * deadline is 300 ms. */
    const char *args[] = {
        "--max-batch", "64", "--batch-timeout-us", "5000000", "--request-timeout-ms", "300", NULL};
    CHECK(server_spawn(&s, args, NULL, 1, why, sizeof why) == 0, "%s", why);
    int fd = upload_in_progress(&s);
    struct resp r;
    post(&r, &s, "/classify", g_imgs[0].data, g_imgs[0].len, "image/jpeg");
    const char *e = check_error(&r, 504, "deadline_exceeded");
    double secs = r.seconds;
    resp_free(&r);
    double expired = scrape(&s, "imgclassd_deadline_exceeded_total");
    if (fd >= 0) close(fd);
    int rc = server_stop(&s);
    CHECK(fd >= 0, "could not start the holding upload");
    CHECK(!e, "%s", e);
    CHECK(secs < 3, "the 504 took %.2f s", secs);
    CHECK(expired >= 1, "deadline_exceeded_total %.0f", expired);
    CHECK(rc == 0, "exit status %d; log: %s", rc, log_tail(&s));
}

static void test_disconnect_frees_slot(void) {
    struct server s;
    char why[512];
    const char *args[] = {
        "--queue-limit",      "2",       "--max-batch",          "8",     "--workers", "1",
        "--batch-timeout-us", "3000000", "--request-timeout-ms", "60000", NULL};
    CHECK(server_spawn(&s, args, NULL, 1, why, sizeof why) == 0, "%s", why);
    int hold = upload_in_progress(&s); /* keeps the two below waiting in the queue */
    int a = raw_post(s.port, &g_imgs[0]), b = raw_post(s.port, &g_imgs[1 % g_nimgs]);
    double depth = scrape_until(&s, "imgclassd_queue_depth", 2, 30);
    close(a);
    close(b);
    /* The queue is full of hung-up clients; a new request must get in. */
    struct resp r;
    post(&r, &s, "/classify", g_imgs[0].data, g_imgs[0].len, "image/jpeg");
    const char *e = check_classify(&r, &g_imgs[0], 5, "resnet18");
    resp_free(&r);
    double cancelled = scrape(&s, "imgclassd_cancelled_total");
    if (hold >= 0) close(hold);
    int rc = server_stop(&s);
    CHECK(hold >= 0, "could not start the holding upload");
    CHECK(a >= 0 && b >= 0, "raw clients could not post");
    CHECK(depth >= 2, "the queue never held the two requests (depth %.0f)", depth);
    CHECK(!e, "%s", e);
    CHECK(cancelled >= 2, "cancelled_total %.0f", cancelled);
    CHECK(rc == 0, "exit status %d; log: %s", rc, log_tail(&s));
}

/* ---- graceful shutdown ------------------------------------------------- */

struct load_ctx {
    const struct server *s;
    atomic_int *stop;
    atomic_int *ok;
    int bad;
    char why[256];
};

static void *load_main(void *arg) {
    struct load_ctx *l = arg;
    int i = 0;
    while (!atomic_load(l->stop)) {
        const struct timg *img = &g_imgs[i++ % g_nimgs];
        struct resp r;
        post(&r, l->s, "/classify", img->data, img->len, "image/jpeg");
        if (turned_away(&r)) { /* after the drain period */
            resp_free(&r);
            break;
        }
        const char *why = check_classify(&r, img, 5, "resnet18");
        if (why) {
            l->bad++;
            if (!l->why[0]) snprintf(l->why, sizeof l->why, "%s", why);
        } else {
            atomic_fetch_add(l->ok, 1);
        }
        resp_free(&r);
    }
    return NULL;
}

static void test_sigterm_drain(void) {
    struct server s;
    char why[512];
    const char *args[] = {"--drain-seconds", "2", "--max-batch", "4", "--access-log", "off", NULL};
    CHECK(server_spawn(&s, args, NULL, 1, why, sizeof why) == 0, "%s", why);
    enum { N = 12 };
    pthread_t th[N];
    struct load_ctx lc[N];
    atomic_int stop = 0, ok = 0;
    for (int i = 0; i < N; i++) {
        lc[i] = (struct load_ctx){.s = &s, .stop = &stop, .ok = &ok};
        pthread_create(&th[i], NULL, load_main, &lc[i]);
    }
    double end = now_s() + 120;
    while (atomic_load(&ok) < N && now_s() < end)
        sleep_ms(10);
    int before = atomic_load(&ok);

    double t_sig = now_s();
    kill(s.pid, SIGTERM);
    /* /readyz turns 503 "draining" at once... */
    char url[128], body[256] = "";
    snprintf(url, sizeof url, "%s/readyz", s.base);
    int st = 0;
    double t_asked = t_sig; /* when the first non-200 answer was asked for */
    while (now_s() - t_sig < 5) {
        t_asked = now_s();
        if ((st = http_status(url, body, sizeof body)) != 200) break;
        sleep_ms(10);
    }
    double t_unready = t_asked - t_sig;
    /* ...while classification goes on during the drain period: a request
     * sent now is accepted, so it must be answered, however slow the build,
     * and the answer tells the client to close the connection. */
    struct resp r;
    post(&r, &s, "/classify", g_imgs[0].data, g_imgs[0].len, "image/jpeg");
    const char *during = check_classify(&r, &g_imgs[0], 5, "resnet18");
    char during_buf[512], conn[64] = "";
    snprintf(during_buf, sizeof during_buf, "%s", during ? during : "");
    resp_header(&r, "Connection", conn, sizeof conn);
    resp_free(&r);
    /* The load clients stop here, still inside the drain period (unless
     * the build is very slow); every request they sent must be answered. */
    atomic_store(&stop, 1);
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    int rc = server_wait(&s, 120);
    int bad = 0;
    const char *first = "";
    for (int i = 0; i < N; i++) {
        bad += lc[i].bad;
        if (lc[i].why[0] && !first[0]) first = lc[i].why;
    }
    CHECK(before >= N, "load did not start");
    CHECK(st == 503 && strstr(body, "draining"), "readyz during drain: %d %s", st, body);
    /* asked within the 2 s drain period (after it the server stops
     * admitting work); the time of the answer is not bounded, as ASan builds
     * answer slowly under this load */
    CHECK(t_unready < 2.0, "/readyz was still 200 %.2f s after SIGTERM", t_unready);
    CHECK(!during_buf[0], "a request during the drain period: %s", during_buf);
    CHECK(!strcmp(conn, "close"), "no Connection: close while draining ('%s')", conn);
    CHECK(bad == 0, "%d requests failed, e.g. %s", bad, first);
    CHECK(rc == 0, "exit status %d; log: %s", rc, log_tail(&s));
    CHECK(http_status(url, NULL, 0) == -1, "still answering after exit");
}

/* 1 when the server's log holds needle within timeout_s. */
static int log_has(const struct server *s, const char *needle, double timeout_s) {
    double end = now_s() + timeout_s;
    for (;;) {
        size_t len = 0;
        unsigned char *t = t_read_file(s->log, &len);
        int found = t && strstr((const char *)t, needle) != NULL;
        free(t);
        if (found) return 1;
        if (now_s() >= end) return 0;
        sleep_ms(10);
    }
}

/* Requests queued when the server stops admitting work are all answered. */
static void test_sigterm_inflight(void) {
    struct server s;
    char why[512];
    /* All N wait in the queue (an upload in progress holds them there, for
     * up to the 10 s batch timeout) when SIGTERM arrives. */
    const char *args[] = {"--drain-seconds",    "0",        "--workers", "1", "--max-batch", "16",
                          "--batch-timeout-us", "10000000", NULL};
    CHECK(server_spawn(&s, args, NULL, 1, why, sizeof why) == 0, "%s", why);
    enum { N = 8 };
    int hold = upload_in_progress(&s);
    pthread_t th[N];
    struct burst_ctx b[N];
    for (int i = 0; i < N; i++) {
        b[i] = (struct burst_ctx){.s = &s, .img = &g_imgs[i % g_nimgs]};
        pthread_create(&th[i], NULL, burst_main, &b[i]);
    }
    double queued = scrape_until(&s, "imgclassd_queue_depth", N, 9);
    kill(s.pid, SIGTERM);
    /* Let the held images go only once the server has stopped admitting
     * work, so they are answered on the shutdown path. */
    int stopped = log_has(&s, "no longer admitting requests", 30);
    /* A classification arriving now is turned away with a clear answer;
     * the health check is still answered. */
    struct resp late;
    post(&late, &s, "/classify", g_imgs[0].data, g_imgs[0].len, "image/jpeg");
    const char *late_why = check_error(&late, 503, "shutting_down");
    char late_buf[512], retry[32] = "";
    snprintf(late_buf, sizeof late_buf, "%s", late_why ? late_why : "");
    resp_header(&late, "Retry-After", retry, sizeof retry);
    resp_free(&late);
    char hurl[128];
    snprintf(hurl, sizeof hurl, "%s/healthz", s.base);
    int health = http_status(hurl, NULL, 0);
    if (hold >= 0) close(hold);
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    int rc = server_wait(&s, 90);
    int ok = 0;
    char odd[128] = "";
    for (int i = 0; i < N; i++) {
        if (b[i].rc == CURLE_OK && b[i].status == 200)
            ok++;
        else
            snprintf(odd, sizeof odd, "rc %d status %ld", (int)b[i].rc, b[i].status);
    }
    CHECK(hold >= 0, "could not start the holding upload");
    CHECK(queued >= N, "only %.0f requests queued before SIGTERM", queued);
    CHECK(stopped, "no 'no longer admitting requests' in the log");
    CHECK(!late_buf[0] && retry[0], "a classification after that: %s (Retry-After '%s')", late_buf,
          retry);
    CHECK(health == 200, "/healthz after that: %d", health);
    CHECK(ok == N, "%d of %d answered 200 (%s)", ok, N, odd);
    CHECK(rc == 0, "exit status %d; log: %s", rc, log_tail(&s));
}

/* Traffic for test_sigterm_repeated: cheap requests and classifications
 * in a loop until told to stop; what they get back does not matter here. */
struct churn_ctx {
    const struct server *s;
    atomic_int *stop;
    atomic_int answered;
    long odd_status; /* a classification answered neither 200 nor 503 */
};

static void *churn_main(void *arg) {
    struct churn_ctx *c = arg;
    char url[128];
    for (int i = 0; !atomic_load(c->stop); i++) {
        struct resp r;
        if (i % 3 == 2) {
            post(&r, c->s, "/classify", g_imgs[0].data, g_imgs[0].len, "image/jpeg");
            long st = r.status;
            resp_free(&r);
            if (st > 0) c->answered++;
            else sleep_ms(1);
            if (st > 0 && st != 200 && st != 503) c->odd_status = st;
        } else {
            snprintf(url, sizeof url, "%s/%s", c->s->base, i % 3 ? "metrics" : "healthz");
            if (http_status(url, NULL, 0) > 0) c->answered++;
            else sleep_ms(1);
        }
    }
    return NULL;
}

/* SIGTERM at a random moment under traffic, many times: the server exits 0
 * every time, and a classification it answers is answered 200 or 503.
 * Aimed at races in the shutdown path that strike one stop in a hundred,
 * like libmicrohttpd's epoll quiesce race (which aborted the process once
 * in CI and is why the server no longer quiesces the daemon); such a race
 * it catches only sometimes, so a pass here is evidence, not proof. */
static void test_sigterm_repeated(void) {
    enum { ROUNDS = 30, T = 4 };
    unsigned seed = 12345;
    long answered = 0;
    for (int round = 0; round < ROUNDS; round++) {
        struct server s;
        char why[512];
        const char *args[] = {"--access-log", "off", "--max-batch", "2", NULL};
        CHECK(server_spawn(&s, args, NULL, 1, why, sizeof why) == 0, "round %d: %s", round, why);
        atomic_int stop = 0;
        pthread_t th[T];
        struct churn_ctx c[T];
        for (int i = 0; i < T; i++) {
            c[i] = (struct churn_ctx){.s = &s, .stop = &stop};
            pthread_create(&th[i], NULL, churn_main, &c[i]);
        }
        /* Traffic is flowing before the signal. */
        double until = now_s() + 30;
        while (atomic_load(&c[T - 1].answered) == 0 && now_s() < until)
            sleep_ms(1);
        int flowing = atomic_load(&c[T - 1].answered) > 0;
        sleep_ms((int)(rand_r(&seed) % 40));
        int rc = server_stop(&s);
        atomic_store(&stop, 1);
        for (int i = 0; i < T; i++) {
            pthread_join(th[i], NULL);
            answered += c[i].answered;
            CHECK(!c[i].odd_status, "round %d: a classification answered %ld", round,
                  c[i].odd_status);
        }
        CHECK(flowing, "round %d: no request answered before SIGTERM", round);
        CHECK(rc == 0, "round %d: exit status %d; log: %s", round, rc, log_tail(&s));
    }
    printf("# sigterm_repeated: %d stops under traffic, %ld requests answered\n", ROUNDS,
           answered);
}

/* ---- limits ------------------------------------------------------------ */

static void test_body_and_pixel_limits(void) {
    struct server s;
    char why[512];
    const char *args[] = {"--max-body-bytes", "100000", "--max-pixels", "100000", NULL};
    CHECK(server_spawn(&s, args, NULL, 1, why, sizeof why) == 0, "%s", why);
    unsigned char *big = malloc(150000);
    memset(big, 0xab, 150000);
    big[0] = 0xff;
    big[1] = 0xd8;
    struct resp r;
    post(&r, &s, "/classify", big, 150000, "image/jpeg");
    const char *e1 = check_error(&r, 413, "body_too_large");
    resp_free(&r);

    char url[128];
    snprintf(url, sizeof url, "%s/classify", s.base);
    const char *hdrs[] = {"Content-Type: image/jpeg", NULL};
    struct req_opts o = {.body = big, .len = 150000, .chunked = 1, .hdrs = hdrs};
    do_request(&r, url, &o);
    const char *e2 = check_error(&r, 413, "body_too_large");
    char e2buf[256];
    snprintf(e2buf, sizeof e2buf, "%s", e2 ? e2 : "");
    resp_free(&r);
    free(big);

    size_t l1, l2;
    unsigned char *too_many = gen_jpeg(400, 400, 3, 0, &l1); /* 160000 pixels */
    unsigned char *fine = gen_jpeg(300, 300, 4, 0, &l2);     /* 90000 pixels */
    post(&r, &s, "/classify", too_many, l1, "image/jpeg");
    const char *e3 = check_error(&r, 413, "image_too_large");
    char e3buf[256];
    snprintf(e3buf, sizeof e3buf, "%s", e3 ? e3 : "");
    resp_free(&r);
    post(&r, &s, "/classify", fine, l2, "image/jpeg");
    long fine_status = r.status;
    resp_free(&r);
    free(too_many);
    free(fine);
    int rc = server_stop(&s);
    CHECK(!e1, "with Content-Length: %s", e1);
    CHECK(!e2buf[0], "chunked: %s", e2buf);
    CHECK(!e3buf[0], "over --max-pixels: %s", e3buf);
    CHECK(l1 < 100000 && fine_status == 200, "under the limits: %ld", fine_status);
    CHECK(rc == 0, "exit status %d; log: %s", rc, log_tail(&s));
}

static int connect_idle(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* 1 when the server closed fd within timeout_s. */
static int closed_by_server(int fd, double timeout_s) {
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (poll(&pf, 1, (int)(timeout_s * 1000)) <= 0) return 0;
    char c;
    return recv(fd, &c, 1, 0) <= 0;
}

static void test_connection_limits(void) {
    struct server s;
    char why[512];
    const char *args[] = {"--max-connections-per-ip", "3", "--conn-timeout-s", "2", NULL};
    CHECK(server_spawn(&s, args, NULL, 1, why, sizeof why) == 0, "%s", why);
    char url[128];
    snprintf(url, sizeof url, "%s/healthz", s.base);
    /* Three idle connections fill the address's quota. The server may not
     * yet have let go of the harness's last readiness probe, and then
     * refuses (closes) the third: start again until all three stay open. */
    int fds[3], open_ok = 0;
    for (int attempt = 0; attempt < 10 && !open_ok; attempt++) {
        for (int i = 0; i < 3; i++)
            fds[i] = connect_idle(s.port);
        sleep_ms(200);
        open_ok = 1;
        for (int i = 0; i < 3; i++)
            open_ok &= fds[i] >= 0 && !closed_by_server(fds[i], 0);
        if (!open_ok) {
            for (int i = 0; i < 3; i++) {
                if (fds[i] >= 0) close(fds[i]);
                fds[i] = -1;
            }
            sleep_ms(300);
        }
    }
    int over = http_status(url, NULL, 0);
    /* Idle connections are closed after --conn-timeout-s... */
    int closed = 1;
    double t0 = now_s();
    for (int i = 0; i < 3; i++)
        closed &= fds[i] >= 0 && closed_by_server(fds[i], 10);
    double took = now_s() - t0;
    for (int i = 0; i < 3; i++)
        if (fds[i] >= 0) close(fds[i]);
    /* ...and then there is room again. */
    int after = http_status(url, NULL, 0);
    int rc = server_stop(&s);
    CHECK(open_ok, "three idle connections from one address were not all accepted");
    CHECK(over == -1, "a 4th connection from one address was served (%d)", over);
    CHECK(closed && took > 1.0 && took < 8, "idle connections closed: %d after %.1f s", closed,
          took);
    CHECK(after == 200, "after the idle ones went: %d", after);
    CHECK(rc == 0, "exit status %d; log: %s", rc, log_tail(&s));
}

/* ---- configuration, CLI modes, logs ------------------------------------ */

static void test_config_errors(void) {
    static const struct {
        const char *args[4];
        const char *env;
        const char *needle;
    } cases[] = {
        {{"--max-batch", "0"}, NULL, "--max-batch"},
        {{"--max-batch", "abc"}, NULL, "--max-batch"},
        {{"--port", "70000"}, NULL, "--port"},
        {{"--log-format", "xml"}, NULL, "--log-format"},
        {{"--bind", "not-an-ip"}, NULL, "--bind"},
        {{"--queue-limit"}, NULL, "--queue-limit"},
        {{"--frobnicate", "1"}, NULL, "--frobnicate"},
        {{"--request-timeout-ms", "1e3"}, NULL, "--request-timeout-ms"},
        {{NULL}, "IMGCLASSD_QUEUE_LIMIT=-3", "IMGCLASSD_QUEUE_LIMIT"},
        {{NULL}, "IMGCLASSD_MAX_BATCH=eight", "--max-batch"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *envs[] = {cases[i].env, NULL};
        char out[2048];
        int rc = run_binary(cases[i].args, envs, out, sizeof out);
        CHECK(rc == 2 && strstr(out, cases[i].needle), "case %zu: exit %d, output: %s", i, rc, out);
    }
    const char *help[] = {"--help", NULL};
    char out[16384];
    int rc = run_binary(help, NULL, out, sizeof out);
    CHECK(rc == 0, "--help exit %d", rc);
    static const char *flags[] = {
        "--port",
        "--bind",
        "--model",
        "--labels",
        "--http-threads",
        "--workers",
        "--max-batch",
        "--batch-timeout-us",
        "--queue-limit",
        "--max-body-bytes",
        "--max-pixels",
        "--request-timeout-ms",
        "--drain-seconds",
        "--static-dir",
        "--log-format",
        "--conn-timeout-s",
        "--max-connections",
        "--max-connections-per-ip",
        "--healthcheck",
        "IMGCLASSD_MAX_BATCH",
    };
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        CHECK(strstr(out, flags[i]), "--help does not mention %s", flags[i]);

    /* A model that cannot load: a clear message and exit 1. */
    const char *bad_model[] = {
        "--port", "0", "--bind", "127.0.0.1", "--model", "/nonexistent/weights.safetensors", NULL};
    rc = run_binary(bad_model, NULL, out, sizeof out);
    CHECK(rc == 1 && strstr(out, "cannot load the model"), "bad model: exit %d: %s", rc, out);
}

static void test_env_config(void) {
    struct server s;
    char why[512];
    const char *envs[] = {"IMGCLASSD_MAX_BATCH=3", "IMGCLASSD_QUEUE_LIMIT=77",
                          "IMGCLASSD_DECODE=exact", NULL};
    CHECK(server_spawn(&s, NULL, envs, 1, why, sizeof why) == 0, "%s", why);
    struct resp r;
    get(&r, &s, "/v1/models/resnet18");
    json_t *j = resp_json(&r);
    json_t *b = json_object_get(j, "batching");
    long long mb = json_integer_value(json_object_get(b, "max_batch"));
    long long ql = json_integer_value(json_object_get(b, "queue_limit"));
    const char *dec =
        json_string_value(json_object_get(json_object_get(j, "preprocessing"), "decode"));
    int exact = dec && !strcmp(dec, "exact");
    json_decref(j);
    resp_free(&r);
    int rc = server_stop(&s);
    CHECK(mb == 3 && ql == 77, "env not applied: max_batch %lld queue_limit %lld", mb, ql);
    CHECK(exact, "IMGCLASSD_DECODE=exact not reported by /v1/models/resnet18");
    CHECK(rc == 0, "exit status %d", rc);
}

static void test_healthcheck_flag(void) {
    NEED_SERVER();
    char port[16], out[1024];
    snprintf(port, sizeof port, "%d", g_srv.port);
    const char *args[] = {"--healthcheck", "--port", port, NULL};
    int rc = run_binary(args, NULL, out, sizeof out);
    CHECK(rc == 0, "healthy server: exit %d: %s", rc, out);
    /* A port nobody listens on (bind one, then close it). */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    bind(fd, (struct sockaddr *)&a, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &al);
    close(fd);
    snprintf(port, sizeof port, "%d", ntohs(a.sin_port));
    rc = run_binary(args, NULL, out, sizeof out);
    CHECK(rc == 1, "no server: exit %d: %s", rc, out);
}

static void test_access_log_json(void) {
    struct server s;
    char why[512];
    const char *args[] = {"--log-format", "json", NULL};
    CHECK(server_spawn(&s, args, NULL, 1, why, sizeof why) == 0, "%s", why);
    char url[128];
    snprintf(url, sizeof url, "%s/classify", s.base);
    const char *hdrs[] = {"Content-Type: image/jpeg", "X-Request-Id: log-test-42", NULL};
    struct req_opts o = {.body = g_imgs[0].data, .len = g_imgs[0].len, .hdrs = hdrs};
    struct resp r;
    do_request(&r, url, &o);
    long st = r.status;
    resp_free(&r);
    int rc = server_stop(&s);
    CHECK(st == 200);
    size_t len;
    char *log = (char *)t_read_file(s.log, &len);
    CHECK(log, "no log");
    int found = 0, all_json = 1;
    for (char *line = strtok(log, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t e;
        json_t *j = json_loads(line, 0, &e);
        if (!j) {
            all_json = 0;
            continue;
        }
        const char *id = json_string_value(json_object_get(j, "request_id"));
        if (id && !strcmp(id, "log-test-42") &&
            !strcmp(json_string_value(json_object_get(j, "method")) ?: "", "POST") &&
            !strcmp(json_string_value(json_object_get(j, "path")) ?: "", "/classify") &&
            json_integer_value(json_object_get(j, "status")) == 200 &&
            json_integer_value(json_object_get(j, "bytes")) > 0 &&
            json_integer_value(json_object_get(j, "batch_size")) >= 1 &&
            json_is_number(json_object_get(j, "duration_ms")))
            found = 1;
        json_decref(j);
    }
    free(log);
    CHECK(all_json, "a log line is not JSON");
    CHECK(found, "no access-log line for the request");
    CHECK(rc == 0, "exit status %d", rc);
}

/* The one ResNet-50 case: readiness while loading, then a correct answer. */
static void test_resnet50(void) {
    struct server s;
    char why[512];
    const char *args[] = {"--model", "random:resnet50", NULL};
    CHECK(server_spawn(&s, args, NULL, 0, why, sizeof why) == 0, "%s", why);
    char url[128], body[256];
    snprintf(url, sizeof url, "%s/readyz", s.base);
    int first = http_status(url, body, sizeof body);
    char first_body[256];
    snprintf(first_body, sizeof first_body, "%s", body);
    /* While loading: /healthz 200, /classify 503. */
    double end = now_s() + 300;
    int st;
    while ((st = http_status(url, NULL, 0)) != 200 && now_s() < end)
        sleep_ms(20);
    CHECK(st == 200, "resnet50 never became ready; log: %s", log_tail(&s));
    CHECK(first == 200 || (first == 503 && strstr(first_body, "starting")),
          "readyz while loading: %d %s", first, first_body);

    struct eng_model *m = NULL;
    struct eng_ctx *ctx = NULL;
    CHECK(eng_model_load("random:resnet50", &m, NULL, 0) == ENG_OK);
    const struct eng_model_info *info = eng_model_get_info(m);
    CHECK(eng_ctx_new(m, 1, info->preproc.crop, &ctx, NULL, 0) == ENG_OK);
    struct timg *img = &g_imgs[0];
    float *in = malloc((size_t)3 * 224 * 224 * sizeof(float));
    float *logits = malloc((size_t)g_classes * sizeof(float));
    float *probs = malloc((size_t)g_classes * sizeof(float));
    int ok =
        eng_image_preprocess(img->data, img->len, &info->preproc, NULL, in, NULL, 0) == ENG_OK &&
        eng_ctx_forward(ctx, in, 1, logits) == ENG_OK;
    eng_softmax(logits, g_classes, probs);
    struct timg ref = *img;
    ref.probs = probs;
    struct resp r;
    post(&r, &s, "/classify", img->data, img->len, "image/jpeg");
    const char *e = ok ? check_classify(&r, &ref, 5, "resnet50") : "reference failed";
    char ebuf[512];
    snprintf(ebuf, sizeof ebuf, "%s", e ? e : "");
    resp_free(&r);
    free(in);
    free(logits);
    free(probs);
    eng_ctx_free(ctx);
    eng_model_free(m);
    int rc = server_stop(&s);
    CHECK(!ebuf[0], "%s", ebuf);
    CHECK(rc == 0, "exit status %d; log: %s", rc, log_tail(&s));
}

/* ------------------------------------------------------------------------ */
/* Setup                                                                    */
/* ------------------------------------------------------------------------ */

/* Stops the shared server cleanly before the harness's cleanup (atexit
 * runs this first) kills stragglers and removes the scratch directory. */
static void suite_cleanup(void) {
    if (g_srv.pid > 0) server_stop(&g_srv);
}

int main(int argc, char **argv) {
    (void)argc;
    t_suite = "server";
    if (harness_init(argv[0]) != 0) return 1;
    atexit(suite_cleanup);
    char why[512];
    g_case = "setup";
    alarm(600);
    if (setup_images(why, sizeof why) != 0) {
        printf("FAIL server.setup: %s\n", why);
        return 1;
    }
    if (g_nshared == 0)
        printf("# ../shared/images not found: using %d synthetic JPEGs only\n", g_nimgs);
    const char *shared_args[] = {"--max-batch", "4", NULL};
    if (server_spawn(&g_srv, shared_args, NULL, 1, why, sizeof why) == 0)
        g_srv_up = 1;
    else
        printf("# shared server: %s\n", why);
    alarm(0);

    RUN_T(test_health_and_headers, 120);
    RUN_T(test_classify_raw, 300);
    RUN_T(test_classify_matches_engine, 300);
    RUN_T(test_classify_matches_cli, 300);
    RUN_T(test_topk_invalid, 120);
    RUN_T(test_bad_images, 120);
    RUN_T(test_not_found_and_methods, 120);
    RUN_T(test_multipart, 300);
    RUN_T(test_multipart_malformed, 120);
    RUN_T(test_static_files, 120);
    RUN_T(test_models_endpoint, 60);
    RUN_T(test_metrics_endpoint, 120);
    RUN_T(test_healthcheck_flag, 120);

    int rc = server_stop(&g_srv);
    g_case = "shared_server_exit";
    if (g_srv_up) {
        if (rc == 0) {
            printf("PASS server.shared_server_exit\n");
            t_npass++;
        } else {
            printf("FAIL server.shared_server_exit: exit status %d; log: %s\n", rc,
                   log_tail(&g_srv));
            t_nfail++;
        }
    }

    RUN_T(test_concurrent_64_clients, 900);
    RUN_T(test_queue_full_503, 600);
    RUN_T(test_lone_image_not_held, 300);
    RUN_T(test_deadline_504, 300);
    RUN_T(test_disconnect_frees_slot, 300);
    RUN_T(test_sigterm_drain, 600);
    RUN_T(test_sigterm_inflight, 600);
    RUN_T(test_sigterm_repeated, 900);
    RUN_T(test_body_and_pixel_limits, 300);
    RUN_T(test_connection_limits, 300);
    RUN_T(test_config_errors, 300);
    RUN_T(test_env_config, 300);
    RUN_T(test_access_log_json, 300);
    RUN_T(test_resnet50, 900);

    for (int i = 0; i < g_nimgs; i++) {
        free(g_imgs[i].data);
        free(g_imgs[i].probs);
    }
    eng_labels_free(g_labels);
    eng_ctx_free(g_ref_ctx);
    eng_model_free(g_ref_model);
    eng_shutdown();
    curl_global_cleanup();
    return t_done();
}
