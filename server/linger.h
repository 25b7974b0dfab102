/* linger.h: lingering close. A connection answered before its request
 * body was read (413, 401, 503 decided from the headers) is not closed at
 * once: closing a socket with unread data makes the kernel send a reset,
 * which can destroy the answer before the client reads it (curl error 55).
 * Its descriptor goes here instead, where one thread reads and discards
 * what the client still sends, within bounds, and then closes it, as
 * Apache httpd's lingering_close and nginx's lingering_close do. */
#ifndef SRV_LINGER_H
#define SRV_LINGER_H

#include <stddef.h>
#include <stdint.h>

/* A client that sends nothing for this long is closed even if
 * --linger-seconds has not run out (nginx's lingering_timeout). */
#define SRV_LINGER_IDLE_MS 5000

struct srv_linger;

/* Starts the thread. max_fds: descriptors lingering at once (more are
 * closed at once: a flood of refused uploads must not exhaust
 * descriptors); max_bytes and max_seconds: per descriptor, what is read
 * and for how long before it is closed regardless. Returns 0 and *out
 * (free with srv_linger_free), or -1 with a message. */
int srv_linger_new(int max_fds, int64_t max_bytes, int max_seconds, struct srv_linger **out,
                   char *err, size_t errlen);

/* Takes ownership of fd, a connected socket whose answer has been
 * written: shuts its sending side (the client sees the end of the
 * answer), then reads and discards until the client closes, max_bytes,
 * max_seconds or SRV_LINGER_IDLE_MS, and closes it. When the bounds are 0
 * or max_fds are already lingering, fd is closed at once. Returns 1 when
 * fd lingers, 0 when it was closed. Thread-safe; never blocks. */
int srv_linger_add(struct srv_linger *l, int fd);

/* Descriptors lingering now. Thread-safe. */
int srv_linger_count(struct srv_linger *l);

/* Stops the thread and closes every descriptor still lingering. NULL ok. */
void srv_linger_free(struct srv_linger *l);

#endif
