/* fuzz_jpeg.c: libFuzzer target for the image pipeline as the server runs
 * it on every upload: format sniffing, the JPEG header check, then decode
 * and torchvision preprocessing (engine/image.c via engine.h). The limits
 * are smaller than the server's so that each input stays fast; the code
 * paths are the same. */
#include "engine.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static float fz_jpeg_out[3 * 224 * 224]; /* [3][crop][crop] */
    char err[256];
    (void)eng_image_sniff(data, size);
    struct eng_image_limits lim;
    eng_image_limits_default(&lim);
    lim.max_width = 4096;
    lim.max_height = 4096;
    lim.max_pixels = 1 << 22;
    struct eng_image_info info;
    if (eng_image_probe(data, size, &lim, &info, err, sizeof err) != ENG_OK) return 0;
    if (info.width < 1 || info.height < 1 || info.width > lim.max_width ||
        info.height > lim.max_height || (int64_t)info.width * info.height > lim.max_pixels)
        __builtin_trap(); /* the probe let through what it must refuse */
    struct eng_preproc pp;
    eng_preproc_default(&pp);
    if (size & 1) pp.interp = ENG_INTERP_BICUBIC; /* both resamplers */
    if (eng_image_preprocess(data, size, &pp, &lim, fz_jpeg_out, err, sizeof err) == ENG_OK) {
        for (size_t i = 0; i < sizeof fz_jpeg_out / sizeof fz_jpeg_out[0]; i++)
            if (!(fz_jpeg_out[i] > -10.f && fz_jpeg_out[i] < 10.f))
                __builtin_trap(); /* normalised pixels are within a few units */
    }
    return 0;
}
