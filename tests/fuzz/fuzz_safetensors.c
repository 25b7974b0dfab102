/* fuzz_safetensors.c: libFuzzer target for the weights loader. The engine
 * reads safetensors files by path (mmap), so the input is written to a
 * memfd and loaded through /proc/self/fd/N: first the internal reader
 * (st_open: header JSON, dtypes, shapes, offsets), reading every tensor it
 * accepts, then the public eng_model_load (architecture detection). */
#include "engine.h"
#include "engine_impl.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fd = memfd_create("fuzz-safetensors", MFD_CLOEXEC);
    if (fd < 0) return 0;
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(fd, data + off, size - off);
        if (w <= 0) {
            close(fd);
            return 0;
        }
        off += (size_t)w;
    }
    char path[64], err[512];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    struct st_file f;
    memset(&f, 0, sizeof f);
    if (st_open(path, &f, err, sizeof err) == ENG_OK) {
        /* Read small tensors back through the converter (F16/BF16/F32). */
        for (int i = 0; i < f.ntensors; i++) {
            const struct st_tensor *t = &f.tensors[i];
            if (t->numel > 4096 || t->ndim < 1) continue;
            float *dst = malloc((size_t)t->numel * sizeof(float) + 1);
            if (dst) {
                (void)st_read_f32(&f, t->name, t->ndim, t->shape, dst, err, sizeof err);
                free(dst);
            }
        }
        st_close(&f);
    }
    struct eng_model *m = NULL;
    if (eng_model_load(path, &m, err, sizeof err) == ENG_OK) eng_model_free(m);
    close(fd);
    return 0;
}
