/* test_auth.c: the token file of server/auth.c: its format, what it refuses
 * (and that messages name the file, never a token), the Authorization
 * check, and reloads while other threads keep checking. */
#include "test.h"

#include "auth.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/test_auth.XXXXXX";
static char err[512];

#define TOK_A "tok-A-0123456789abcdef"
#define TOK_B "tok_B.0123456789/ABCDEF=="
#define TOK_C "C~c+0123456789abcdefghij"

/* Writes text to dir/name (replacing it by rename, as an editor or a
 * Kubernetes Secret update would) and returns the path (static buffer). */
static const char *put(const char *name, const char *text) {
    static char path[256];
    char tmp[300];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return path;
    fputs(text, f);
    fclose(f);
    rename(tmp, path);
    return path;
}

static void test_format(void) {
    const char *p = put("tokens", "# imgclassd tokens\n"
                                  "\n"
                                  "   " TOK_A "   \r\n"
                                  "\t# indented comment\n" TOK_B "\n" TOK_C);
    struct srv_auth *a = NULL;
    CHECK(srv_auth_new(p, &a, err, sizeof err) == 0, "%s", err);
    CHECK(srv_auth_count(a) == 3);
    CHECK(!strcmp(srv_auth_path(a), p));
    CHECK(srv_auth_check(a, "Bearer " TOK_A));
    CHECK(srv_auth_check(a, "Bearer " TOK_B));
    CHECK(srv_auth_check(a, "Bearer " TOK_C), "the last line needs no newline");
    CHECK(srv_auth_check(a, "bearer " TOK_A), "the scheme is case-insensitive");
    CHECK(srv_auth_check(a, "BEARER   " TOK_A "  "), "spaces around the token");
    srv_auth_free(a);
}

static void test_check_refuses(void) {
    const char *p = put("tokens", TOK_A "\n" TOK_B "\n");
    struct srv_auth *a = NULL;
    CHECK(srv_auth_new(p, &a, err, sizeof err) == 0, "%s", err);
    static const char *const no[] = {
        NULL,
        "",
        "Bearer",
        "Bearer ",
        "Bearer  ",
        TOK_A,
        "Basic " TOK_A,
        "Token " TOK_A,
        "Bearer " TOK_A "x",
        "Bearer " TOK_A "\t\t x",
        "Bearer tok-A-0123456789abcde",  /* a prefix */
        "Bearer tok-A-0123456789abcdeF", /* case matters in the token */
        "Bearer " TOK_A " " TOK_B,
        "Bearer # imgclassd tokens",
        "Bearer " TOK_A TOK_A TOK_A TOK_A TOK_A TOK_A TOK_A TOK_A TOK_A TOK_A TOK_A TOK_A,
    };
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        CHECK(!srv_auth_check(a, no[i]), "accepted '%s'", no[i] ? no[i] : "(none)");
    /* A token as long as the limit, and one byte longer. */
    char big[SRV_AUTH_MAX_TOKEN + 16], file[SRV_AUTH_MAX_TOKEN + 8];
    memset(file, 'k', SRV_AUTH_MAX_TOKEN);
    file[SRV_AUTH_MAX_TOKEN] = '\n';
    file[SRV_AUTH_MAX_TOKEN + 1] = 0;
    srv_auth_free(a);
    CHECK(srv_auth_new(put("long", file), &a, err, sizeof err) == 0, "%s", err);
    snprintf(big, sizeof big, "Bearer %.*s", SRV_AUTH_MAX_TOKEN, file);
    CHECK(srv_auth_check(a, big));
    snprintf(big, sizeof big, "Bearer %.*sk", SRV_AUTH_MAX_TOKEN, file);
    CHECK(!srv_auth_check(a, big));
    srv_auth_free(a);
}

static void test_file_errors(void) {
    static const struct {
        const char *text, *says;
    } bad[] = {
        {"", "no token"},
        {"\n\n# only comments\n   \n", "no token"},
        {TOK_A "\nshort\n", "line 2: a token shorter than 16"},
        {TOK_A "\nhas space inside it ok\n", "line 2: a character not allowed"},
        {"tok=A0123456789abcdef\n", "line 1: a character not allowed"},
        {"\"" TOK_A "\"\n", "line 1: a character not allowed"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *p = put("bad", bad[i].text);
        struct srv_auth *a = (struct srv_auth *)1;
        err[0] = 0;
        CHECK(srv_auth_new(p, &a, err, sizeof err) == -1 && !a, "case %zu accepted", i);
        CHECK(strstr(err, p), "the message names the file: %s", err);
        CHECK(strstr(err, bad[i].says), "case %zu: '%s' lacks '%s'", i, err, bad[i].says);
        CHECK(!strstr(err, "tok-A") && !strstr(err, "tok=A") && !strstr(err, "inside"),
              "a message never quotes the file: %s", err);
    }
    struct srv_auth *a = NULL;
    char path[256];
    snprintf(path, sizeof path, "%s/missing", dir);
    CHECK(srv_auth_new(path, &a, err, sizeof err) == -1 && strstr(err, path) &&
              strstr(err, "No such file"),
          "%s", err);
    CHECK(srv_auth_new(dir, &a, err, sizeof err) == -1 && strstr(err, "not a regular file"), "%s",
          err);
    CHECK(srv_auth_new("/dev/null", &a, err, sizeof err) == -1 &&
              strstr(err, "/dev/null: not a regular file"),
          "%s", err);
    snprintf(path, sizeof path, "%s/fifo", dir);
    CHECK(mkfifo(path, 0600) == 0);
    CHECK(srv_auth_new(path, &a, err, sizeof err) == -1 && strstr(err, "not a regular file"),
          "a FIFO is refused without blocking: %s", err);
    /* A symbolic link to a regular file is how Kubernetes mounts a Secret. */
    char link[256];
    snprintf(link, sizeof link, "%s/link", dir);
    put("target", TOK_C "\n");
    CHECK(symlink("target", link) == 0);
    CHECK(srv_auth_new(link, &a, err, sizeof err) == 0, "%s", err);
    CHECK(srv_auth_check(a, "Bearer " TOK_C));
    srv_auth_free(a);
}

static void test_reload(void) {
    const char *p = put("tokens", TOK_A "\n");
    struct srv_auth *a = NULL;
    CHECK(srv_auth_new(p, &a, err, sizeof err) == 0, "%s", err);
    CHECK(srv_auth_check(a, "Bearer " TOK_A) && !srv_auth_check(a, "Bearer " TOK_B));
    put("tokens", TOK_B "\n" TOK_C "\n");
    CHECK(srv_auth_reload(a, err, sizeof err) == 2, "%s", err);
    CHECK(!srv_auth_check(a, "Bearer " TOK_A), "a removed token stops working at once");
    CHECK(srv_auth_check(a, "Bearer " TOK_B) && srv_auth_check(a, "Bearer " TOK_C));
    /* A broken file does not replace a good set. */
    put("tokens", "# all gone\n");
    CHECK(srv_auth_reload(a, err, sizeof err) == -1 && strstr(err, "no token"), "%s", err);
    CHECK(srv_auth_count(a) == 2 && srv_auth_check(a, "Bearer " TOK_B));
    unlink(p);
    CHECK(srv_auth_reload(a, err, sizeof err) == -1 && strstr(err, p), "%s", err);
    CHECK(srv_auth_check(a, "Bearer " TOK_C));
    srv_auth_free(a);
}

/* Checkers run while the main thread swaps between two files: every check
 * of the token present in both must succeed, whatever the moment. */
static struct srv_auth *g_auth;
static atomic_int g_stop, g_bad;
static atomic_long g_checks;

static void *checker(void *arg) {
    (void)arg;
    while (!atomic_load(&g_stop)) {
        if (!srv_auth_check(g_auth, "Bearer " TOK_A)) atomic_fetch_add(&g_bad, 1);
        atomic_fetch_add(&g_checks, 1);
    }
    return NULL;
}

static void test_reload_under_load(void) {
    const char *p = put("tokens", TOK_A "\n" TOK_B "\n");
    CHECK(srv_auth_new(p, &g_auth, err, sizeof err) == 0, "%s", err);
    pthread_t th[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&th[i], NULL, checker, NULL);
    int reloads = 0;
    for (int i = 0; i < 300; i++) {
        put("tokens", i % 2 ? TOK_A "\n" TOK_B "\n" : TOK_C "\n" TOK_A "\n");
        reloads += srv_auth_reload(g_auth, err, sizeof err) == 2;
    }
    atomic_store(&g_stop, 1);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    srv_auth_free(g_auth);
    CHECK(reloads == 300, "%d of 300 reloads succeeded: %s", reloads, err);
    CHECK(atomic_load(&g_checks) > 0);
    CHECK(atomic_load(&g_bad) == 0, "%d of %ld checks failed during reloads", atomic_load(&g_bad),
          atomic_load(&g_checks));
}

int main(void) {
    t_suite = "auth";
    if (!mkdtemp(dir)) {
        printf("FAIL auth.setup: mkdtemp\n");
        return 1;
    }
    RUN(test_format);
    RUN(test_check_refuses);
    RUN(test_file_errors);
    RUN(test_reload);
    RUN(test_reload_under_load);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) printf("# could not remove %s\n", dir);
    return t_done();
}
