/* imgclass.c: command-line tool: classify JPEG files with a ResNet, print the
 * top-k classes as text or one JSON object per line. */
#include "engine.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Images per forward pass: batching amortises the weight reads. */
#define CLI_BATCH 8

static void usage(FILE *f) {
    fprintf(f,
            "usage: imgclass --model PATH|random:resnetD[:SEED] [--labels FILE] [--topk K]\n"
            "                [--json] IMAGE...\n"
            "\n"
            "Prints the top-k ImageNet classes of each JPEG image.\n"
            "  --model M    safetensors weights (torchvision/timm ResNet-18/34/50/101/152),\n"
            "               or random:resnetD[:SEED] for seeded random weights\n"
            "  --labels F   class names, one per line (default: built-in ImageNet-1k)\n"
            "  --topk K     classes per image (default 5)\n"
            "  --json       one JSON object per image and line\n"
            "Exit status: 0 when every image was classified, 1 when any failed, 2 on usage.\n");
}

static unsigned char *read_file(const char *path, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s", strerror(errno));
        return NULL;
    }
    unsigned char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 1 << 16;
            unsigned char *nb = realloc(buf, cap);
            if (!nb) {
                snprintf(err, errlen, "out of memory");
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    if (ferror(f)) {
        snprintf(err, errlen, "read error");
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = n;
    return buf;
}

struct cli {
    const char *model_spec, *labels_path;
    int topk, json;
    struct eng_model *model;
    struct eng_labels *labels;
    struct eng_ctx *ctx;
    const struct eng_model_info *info;
};

static void print_error(const struct cli *c, const char *file, enum eng_status st,
                        const char *msg) {
    if (c->json) {
        json_t *o = json_object();
        json_object_set_new(o, "file", json_string(file));
        json_t *e = json_object();
        json_object_set_new(e, "code", json_string(eng_status_name(st)));
        json_object_set_new(e, "message", json_string(msg));
        json_object_set_new(o, "error", e);
        char *s = json_dumps(o, JSON_COMPACT);
        if (s) puts(s);
        free(s);
        json_decref(o);
    } else {
        printf("%s: error: %s\n", file, msg);
    }
}

static void print_result(const struct cli *c, const char *file, const float *logits) {
    int n = c->info->num_classes;
    int k = c->topk < n ? c->topk : n;
    struct eng_pred pred[k];
    eng_topk(logits, n, k, pred);
    if (c->json) {
        json_t *o = json_object(), *arr = json_array();
        json_object_set_new(o, "file", json_string(file));
        for (int i = 0; i < k; i++) {
            json_t *p = json_object();
            const char *label = eng_labels_get(c->labels, pred[i].index);
            json_object_set_new(p, "index", json_integer(pred[i].index));
            json_object_set_new(p, "label", label ? json_string(label) : json_null());
            json_object_set_new(p, "score", json_real(pred[i].score));
            json_object_set_new(p, "logit", json_real(pred[i].logit));
            json_array_append_new(arr, p);
        }
        json_object_set_new(o, "predictions", arr);
        char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
        if (s) puts(s);
        free(s);
        json_decref(o);
    } else {
        printf("%s:\n", file);
        for (int i = 0; i < k; i++)
            printf("  %4d  %-32s %7.3f%%  (logit %.4f)\n", pred[i].index,
                   eng_labels_get(c->labels, pred[i].index), 100.0 * pred[i].score,
                   pred[i].logit);
    }
}

/* Classifies files[0..n) (n <= CLI_BATCH) in one forward pass; returns the
 * number that failed. in: [CLI_BATCH][3][crop][crop] scratch. */
static int run_batch(struct cli *c, char **files, int n, float *in, float *logits) {
    const struct eng_preproc *pp = &c->info->preproc;
    const size_t img_floats = (size_t)3 * pp->crop * pp->crop;
    enum eng_status st[CLI_BATCH];
    char msg[CLI_BATCH][256];
    int slot[CLI_BATCH], nok = 0, failed = 0;
    for (int i = 0; i < n; i++) {
        size_t len = 0;
        unsigned char *data = read_file(files[i], &len, msg[i], sizeof msg[i]);
        if (!data) {
            st[i] = ENG_ERR_IO;
            continue;
        }
        st[i] = eng_image_preprocess(data, len, pp, NULL, in + (size_t)nok * img_floats, msg[i],
                                     sizeof msg[i]);
        free(data);
        if (st[i] == ENG_OK) slot[i] = nok++;
    }
    enum eng_status fst = nok ? eng_ctx_forward(c->ctx, in, nok, logits) : ENG_OK;
    for (int i = 0; i < n; i++) {
        if (st[i] == ENG_OK && fst != ENG_OK) {
            st[i] = fst;
            snprintf(msg[i], sizeof msg[i], "inference failed");
        }
        if (st[i] != ENG_OK) {
            print_error(c, files[i], st[i], msg[i]);
            failed++;
        } else {
            print_result(c, files[i], logits + (size_t)slot[i] * c->info->num_classes);
        }
    }
    fflush(stdout);
    return failed;
}

int main(int argc, char **argv) {
    struct cli c = {.topk = 5};
    char **files = calloc((size_t)argc, sizeof *files);
    int nfiles = 0;
    if (!files) return 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            free(files);
            return 0;
        } else if (!strcmp(a, "--json")) {
            c.json = 1;
        } else if ((!strcmp(a, "--model") || !strcmp(a, "--labels") || !strcmp(a, "--topk")) &&
                   i + 1 < argc) {
            const char *v = argv[++i];
            if (!strcmp(a, "--model")) c.model_spec = v;
            else if (!strcmp(a, "--labels")) c.labels_path = v;
            else {
                char *end;
                long k = strtol(v, &end, 10);
                if (*end || end == v || k < 1 || k > 1000000) {
                    fprintf(stderr, "imgclass: --topk must be a positive integer, got \"%s\"\n", v);
                    free(files);
                    return 2;
                }
                c.topk = (int)k;
            }
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "imgclass: unknown or incomplete option %s\n", a);
            usage(stderr);
            free(files);
            return 2;
        } else {
            files[nfiles++] = argv[i];
        }
    }
    if (!c.model_spec || nfiles == 0) {
        usage(stderr);
        free(files);
        return 2;
    }

    char err[512];
    int rc = 2;
    float *in = NULL, *logits = NULL;
    if (eng_model_load(c.model_spec, &c.model, err, sizeof err) != ENG_OK) {
        fprintf(stderr, "imgclass: %s\n", err);
        goto out;
    }
    c.info = eng_model_get_info(c.model);
    if (c.info->random)
        fprintf(stderr, "imgclass: %s has RANDOM weights: its answers mean nothing\n",
                c.info->source);
    if (eng_labels_load(c.labels_path, c.info->num_classes, &c.labels, err, sizeof err) != ENG_OK) {
        fprintf(stderr, "imgclass: %s\n", err);
        goto out;
    }
    int crop = c.info->preproc.crop;
    if (eng_ctx_new(c.model, CLI_BATCH, crop, &c.ctx, err, sizeof err) != ENG_OK) {
        fprintf(stderr, "imgclass: %s\n", err);
        goto out;
    }
    in = malloc(sizeof(float) * CLI_BATCH * 3 * (size_t)crop * crop);
    logits = malloc(sizeof(float) * CLI_BATCH * (size_t)c.info->num_classes);
    if (!in || !logits) {
        fprintf(stderr, "imgclass: out of memory\n");
        goto out;
    }
    int failed = 0;
    for (int i = 0; i < nfiles; i += CLI_BATCH)
        failed += run_batch(&c, files + i, nfiles - i < CLI_BATCH ? nfiles - i : CLI_BATCH, in,
                            logits);
    rc = failed ? 1 : 0;
out:
    free(in);
    free(logits);
    eng_ctx_free(c.ctx);
    eng_labels_free(c.labels);
    eng_model_free(c.model);
    free(files);
    return rc;
}
