/* auth.h: bearer tokens (--auth-token-file): the set of accepted tokens,
 * re-read on SIGHUP without disturbing requests in flight, and the
 * constant-time check of an Authorization header. No function here ever
 * logs or returns a token. */
#ifndef SRV_AUTH_H
#define SRV_AUTH_H

#include <stddef.h>

/* Longest token accepted. Every comparison covers this many bytes, so its
 * time depends on neither the tokens nor the presented value. */
#define SRV_AUTH_MAX_TOKEN 256

/* Shortest token accepted: a short one can be guessed, and a guard that
 * can be guessed only looks like one. 16 characters of base64 are 96 bits. */
#define SRV_AUTH_MIN_TOKEN 16

/* Largest token file read (bytes). */
#define SRV_AUTH_MAX_FILE (1 << 20)

/* Most tokens in one file. */
#define SRV_AUTH_MAX_TOKENS 1024

struct srv_auth;

/* Loads path: one token per line; blank lines and lines starting with '#'
 * (after spaces) are ignored, surrounding spaces, tabs and a CR are
 * trimmed. A token is RFC 6750's b64token (letters, digits, -._~+/ then
 * optional '='), SRV_AUTH_MIN_TOKEN..SRV_AUTH_MAX_TOKEN characters. The
 * file must be a regular file (a symbolic link to one is fine: Kubernetes
 * mounts Secrets that way) and hold at least one token. Returns 0 and *out
 * (free with srv_auth_free), or -1 with a message naming the file (and the
 * line, never its content) in err (may be NULL). */
int srv_auth_new(const char *path, struct srv_auth **out, char *err, size_t errlen);

/* Re-reads the file srv_auth_new loaded. On success the new set replaces
 * the old one atomically: a check in progress finishes against the set it
 * started with, every check after the swap sees the new one. On failure
 * (the same rules as srv_auth_new) the old set stays in force. Returns the
 * number of tokens now loaded, or -1 with a message. Thread-safe. */
int srv_auth_reload(struct srv_auth *a, char *err, size_t errlen);

/* Tokens loaded now. Thread-safe. */
int srv_auth_count(struct srv_auth *a);

/* The file's path as given (borrowed, valid until srv_auth_free). */
const char *srv_auth_path(const struct srv_auth *a);

/* 1 when header (the Authorization header's value, NULL when absent) is
 * "Bearer <token>" (scheme case-insensitive) with a token in the set, else
 * 0. Compares against every token in constant time. Thread-safe. */
int srv_auth_check(struct srv_auth *a, const char *header);

/* NULL ok. No check may be running. */
void srv_auth_free(struct srv_auth *a);

#endif
