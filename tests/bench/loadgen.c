/* loadgen.c: closed-loop HTTP load generator for `make bench`: C clients each
 * POST a JPEG to /classify and send the next as soon as the answer arrives
 * (libcurl multi, one thread); prints one JSON line of what it measured. */
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct image {
    char *data;
    size_t len;
};

struct client {
    CURL *h;
    struct curl_slist *hdr;
    char *resp;
    size_t resp_len, resp_cap;
    double start;
    int img;
};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static size_t on_body(char *p, size_t sz, size_t n, void *arg) {
    struct client *c = arg;
    size_t len = sz * n;
    if (c->resp_len + len + 1 > c->resp_cap) {
        size_t cap = (c->resp_len + len + 1) * 2;
        char *r = realloc(c->resp, cap);
        if (!r) return 0;
        c->resp = r;
        c->resp_cap = cap;
    }
    memcpy(c->resp + c->resp_len, p, len);
    c->resp_len += len;
    c->resp[c->resp_len] = 0;
    return len;
}

static int load_image(const char *path, struct image *im) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    im->data = malloc((size_t)n);
    im->len = (size_t)n;
    int ok = im->data && fread(im->data, 1, (size_t)n, f) == (size_t)n;
    fclose(f);
    return ok ? 0 : -1;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void start_request(CURLM *multi, struct client *c, const char *url,
                          const struct image *imgs, int nimg, int *next_img) {
    c->img = (*next_img)++ % nimg;
    c->resp_len = 0;
    curl_easy_setopt(c->h, CURLOPT_URL, url);
    curl_easy_setopt(c->h, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c->h, CURLOPT_POSTFIELDS, imgs[c->img].data);
    curl_easy_setopt(c->h, CURLOPT_POSTFIELDSIZE, (long)imgs[c->img].len);
    curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, c->hdr);
    curl_easy_setopt(c->h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c->h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(c->h, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c->h, CURLOPT_PRIVATE, c);
    c->start = now_s();
    curl_multi_add_handle(multi, c->h);
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: loadgen URL CLIENTS SECONDS IMAGE.jpg...\n"
                        "  (the first second is warm-up and not counted)\n");
        return 2;
    }
    const char *url = argv[1];
    int nclients = atoi(argv[2]);
    double seconds = atof(argv[3]);
    int nimg = argc - 4;
    if (nclients < 1 || nclients > 4096 || !(seconds > 0)) {
        fprintf(stderr, "loadgen: bad CLIENTS or SECONDS\n");
        return 2;
    }
    struct image *imgs = calloc((size_t)nimg, sizeof *imgs);
    for (int i = 0; i < nimg; i++)
        if (load_image(argv[4 + i], &imgs[i]) != 0) {
            fprintf(stderr, "loadgen: cannot read %s\n", argv[4 + i]);
            return 2;
        }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *multi = curl_multi_init();
    curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)nclients);
    struct client *cl = calloc((size_t)nclients, sizeof *cl);
    size_t cap = (size_t)(seconds * 2000 + 1000);
    double *lat = malloc(cap * sizeof *lat);
    long ok = 0, errors = 0, counted = 0, batch_sum = 0, batch_n = 0, status_503 = 0;
    double decode_sum = 0, infer_sum = 0, queue_sum = 0;
    int next_img = 0;
    for (int i = 0; i < nclients; i++) {
        cl[i].h = curl_easy_init();
        cl[i].hdr = curl_slist_append(NULL, "Content-Type: image/jpeg");
        cl[i].hdr = curl_slist_append(cl[i].hdr, "Expect:");
        start_request(multi, &cl[i], url, imgs, nimg, &next_img);
    }
    const double t0 = now_s(), warm_end = t0 + 1.0, end = warm_end + seconds;
    double measured_start = warm_end;
    /* in flight: counted here, not by curl, which reports 0 running between
     * one client's answer and its next request */
    int inflight = nclients, running = 0;
    while (inflight > 0) {
        curl_multi_perform(multi, &running);
        CURLMsg *msg;
        int left;
        double t = now_s();
        while ((msg = curl_multi_info_read(multi, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            struct client *c;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&c);
            long code = 0;
            curl_easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, &code);
            curl_multi_remove_handle(multi, c->h);
            inflight--;
            /* closed-loop throughput is answers per second of the window,
             * whenever their request started: counting only requests that
             * start and finish inside it would drop one latency's worth of
             * answers at each edge (a third of them at 64 clients) */
            int in_window = t >= warm_end && t <= end;
            if (in_window) {
                counted++;
                if (msg->data.result == CURLE_OK && code == 200) {
                    ok++;
                    if ((size_t)ok <= cap) lat[ok - 1] = t - c->start;
                    json_t *j = json_loads(c->resp, 0, NULL);
                    json_t *tm = json_object_get(j, "timing");
                    json_t *bs = json_object_get(tm, "batch_size");
                    if (json_is_integer(bs)) {
                        batch_sum += (long)json_integer_value(bs);
                        batch_n++;
                        decode_sum += json_number_value(json_object_get(tm, "decode_ms"));
                        infer_sum += json_number_value(json_object_get(tm, "infer_ms"));
                        queue_sum += json_number_value(json_object_get(tm, "queue_ms"));
                    }
                    json_decref(j);
                } else {
                    errors++;
                    if (code == 503) status_503++;
                }
            }
            if (t < end) {
                start_request(multi, c, url, imgs, nimg, &next_img);
                inflight++;
            }
        }
        if (inflight > 0) curl_multi_poll(multi, NULL, 0, 100, NULL);
        if (now_s() > end + 120) break; /* a stuck server must not hang the bench */
    }
    double wall = end - measured_start;
    size_t n = (size_t)ok < cap ? (size_t)ok : cap;
    qsort(lat, n, sizeof *lat, cmp_double);
#define PCT(p) (n ? lat[(size_t)((double)(n - 1) * (p))] * 1e3 : 0)
    printf("{\"clients\": %d, \"seconds\": %.2f, \"requests\": %ld, \"ok\": %ld, \"errors\": %ld, "
           "\"status_503\": %ld, \"images_per_s\": %.3f, \"p50_ms\": %.2f, \"p90_ms\": %.2f, "
           "\"p99_ms\": %.2f, \"mean_batch\": %.3f, \"mean_decode_ms\": %.3f, "
           "\"mean_queue_ms\": %.3f, \"mean_infer_ms\": %.3f}\n",
           nclients, wall, counted, ok, errors, status_503, ok / wall, PCT(0.5), PCT(0.9),
           PCT(0.99), batch_n ? (double)batch_sum / batch_n : 0.0,
           batch_n ? decode_sum / batch_n : 0.0, batch_n ? queue_sum / batch_n : 0.0,
           batch_n ? infer_sum / batch_n : 0.0);
    for (int i = 0; i < nclients; i++) {
        curl_easy_cleanup(cl[i].h);
        curl_slist_free_all(cl[i].hdr);
        free(cl[i].resp);
    }
    curl_multi_cleanup(multi);
    curl_global_cleanup();
    for (int i = 0; i < nimg; i++) free(imgs[i].data);
    free(imgs);
    free(cl);
    free(lat);
    return 0;
}
